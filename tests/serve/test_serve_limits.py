"""The serve app in-process (Starlette's test client over the real app, a real Predictor, settings parsed from
the real `checkbox-dist serve` flags): a full queue is 503 with Retry-After, --no-url-fetch is 403, and a model
call that fails is a 5xx for the requests in that batch alone, one line, while the server goes on serving."""

from __future__ import annotations

import io
import threading
import time

import pytest
from PIL import Image

pytest.importorskip("fastapi")

LOCAL = "http://127.0.0.1"  # the Host `serve` accepts on its default loopback address


def _png(colour: str = "white") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), colour).save(buffer, "PNG")
    return buffer.getvalue()


def _app(predictor, *flags: str):
    """create_app with the Settings `checkbox-dist serve --checkpoint X FLAGS` would run with."""
    from checkbox_dist.cli import build_parser
    from checkbox_dist.serve.api import create_app
    from checkbox_dist.serve.app import settings_from_args

    args = build_parser().parse_args(["serve", "--checkpoint", "unused", *flags])
    return create_app(predictor, settings_from_args(args))


def _one_line_detail(response, status: int, text: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    detail = response.json()["detail"]
    assert isinstance(detail, str) and text in detail and "\n" not in detail, detail
    return detail


class GatedPredictor:
    """Wraps a Predictor: while `gate` is closed every model call blocks (a slow model); `fail` makes the next
    call raise, as a model call that breaks (a device error) does."""

    def __init__(self, predictor):
        self.inner, self.gate, self.fail, self.calls = predictor, threading.Event(), 0, 0
        self.gate.set()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict_tensors(self, batches):
        self.calls += 1
        if not self.gate.wait(60):
            raise TimeoutError("gate never opened")
        if self.fail:
            self.fail -= 1
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nsecond line of the error")
        return self.inner.predict_tensors(batches)


@pytest.fixture
def predictor(infer_checkpoint):
    from checkbox_dist.infer.predictor import Predictor

    return GatedPredictor(Predictor([infer_checkpoint], device="cpu"))


def _wait(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_full_queue_is_503_with_retry_after(predictor):
    """--max-queue 1 --max-batch 1: one image in the model (blocked), one waiting; the third is refused at once."""
    from fastapi.testclient import TestClient

    with TestClient(_app(predictor, "--max-queue", "1", "--max-batch", "1", "--max-wait-ms", "0"),
                    base_url=LOCAL) as client:
        warm_calls = predictor.calls
        predictor.gate.clear()
        answers = {}
        threads = [threading.Thread(target=lambda k=k: answers.__setitem__(
            k, client.post("/predict", files={"file": (f"{k}.png", _png())}))) for k in ("first", "second")]
        threads[0].start()
        _wait(lambda: predictor.calls == warm_calls + 1, "the first image to reach the model")
        threads[1].start()
        _wait(lambda: client.get("/health").json()["queued"] == 1, "the second image to queue")
        start = time.monotonic()
        refused = client.post("/predict", files={"file": ("third.png", _png())})
        assert time.monotonic() - start < 10  # answered while the model is still blocked, not after
        _one_line_detail(refused, 503, "server busy (1 images are already waiting)")
        assert refused.headers["retry-after"].isdigit()
        batch = client.post("/predict/batch", files=[("files", ("b.png", _png()))])  # a batch item: its own error
        assert batch.status_code == 200 and "already waiting" in batch.json()["results"][0]["error"], batch.text
        predictor.gate.set()
        for thread in threads:
            thread.join(60)
        assert [answers[k].status_code for k in ("first", "second")] == [200, 200]
        assert client.post("/predict", files={"file": ("again.png", _png())}).status_code == 200  # room again


def test_no_url_fetch_is_403_and_uploads_still_work(predictor):
    from fastapi.testclient import TestClient

    with TestClient(_app(predictor, "--no-url-fetch"), base_url=LOCAL) as client:
        calls = predictor.calls
        for path, body in (("/predict", {"url": "http://127.0.0.1:9/a.png"}),
                           ("/predict/batch", {"urls": ["http://127.0.0.1:9/a.png"]})):
            _one_line_detail(client.post(path, json=body), 403, "URL fetching is disabled on this server")
        assert predictor.calls == calls  # refused before anything was fetched or run
        assert client.post("/predict", files={"file": ("a.png", _png())}).status_code == 200
    with TestClient(_app(predictor), base_url=LOCAL) as client:  # control: the default accepts URLs (this one cannot connect)
        assert client.post("/predict", json={"url": "http://127.0.0.1:9/a.png"}).status_code != 403


def test_a_failing_model_batch_fails_its_requests_alone_and_the_server_goes_on(predictor, caplog):
    import logging

    from fastapi.testclient import TestClient

    with TestClient(_app(predictor), base_url=LOCAL, raise_server_exceptions=False) as client, \
            caplog.at_level(logging.ERROR, logger="checkbox_dist.serve"):
        predictor.fail = 1
        failed = client.post("/predict", files={"file": ("a.png", _png())})
        detail = _one_line_detail(failed, 500, "a.png: could not be predicted (RuntimeError)")
        assert "illegal memory" not in detail  # the model's own error text stays in the server log
        predictor.fail = 1
        batch = client.post("/predict/batch", files=[("files", ("b.png", _png()))])
        assert batch.status_code == 200 and batch.json()["failed"] == 1, batch.text
        assert batch.json()["results"][0]["error"] == "b.png: could not be predicted (RuntimeError)"
        ok = client.post("/predict", files={"file": ("c.png", _png("black"))})
        assert ok.status_code == 200 and ok.json()["class"], ok.text  # the server goes on
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["failed_batches"] == 2
    logged = [r.getMessage() for r in caplog.records if r.name == "checkbox_dist.serve"]
    assert any("a.png" in line and "illegal memory access" in line for line in logged), logged
