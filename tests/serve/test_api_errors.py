"""The serve app in-process (Starlette's test client over the real app and a real Predictor): a decode that runs
out of memory is a 503 with Retry-After for /predict and that item's own error in a batch, never a 500."""

from __future__ import annotations

import io

import pytest
from PIL import Image

pytest.importorskip("fastapi")


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), "white").save(buffer, "PNG")
    return buffer.getvalue()


def test_out_of_memory_is_503_with_retry_after(infer_checkpoint):
    from fastapi.testclient import TestClient

    from checkbox_dist.infer.predictor import Predictor
    from checkbox_dist.serve.api import create_app

    predictor = Predictor([infer_checkpoint], device="cpu")
    real_decode = predictor.decode

    def decode(source, name=None, **limits):
        if name == "oom.png":
            raise MemoryError()
        return real_decode(source, name, **limits)

    predictor.decode = decode
    with TestClient(create_app(predictor)) as client:
        response = client.post("/predict", files={"file": ("oom.png", _png())})
        assert response.status_code == 503 and response.headers["retry-after"].isdigit(), response.text
        assert "retry later" in response.json()["detail"]
        response = client.post("/predict/batch", files=[("files", ("a.png", _png())), ("files", ("oom.png", _png()))])
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["predicted"] == 1 and "out of memory" in body["results"][1]["error"]


def test_bearer_token_model_details_and_api_docs_settings(infer_checkpoint):
    from fastapi.testclient import TestClient

    from checkbox_dist.infer.predictor import Predictor
    from checkbox_dist.serve.api import create_app
    from checkbox_dist.serve.settings import Settings

    predictor = Predictor([infer_checkpoint], device="cpu")
    settings = Settings(token="s3cret-token", model_details=True, api_docs=True)
    with TestClient(create_app(predictor, settings)) as client:
        assert client.get("/health").status_code == 200  # liveness probes carry no token
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-token"}):
            for method, path in (("get", "/model"), ("post", "/predict"), ("get", "/docs"), ("get", "/openapi.json")):
                response = getattr(client, method)(path, headers=headers)
                assert response.status_code == 401, (path, headers, response.status_code)
                assert response.headers["www-authenticate"] == "Bearer"
        auth = {"authorization": "Bearer s3cret-token"}
        response = client.post("/predict", files={"file": ("a.png", _png())}, headers=auth)
        assert response.status_code == 200, response.text
        model = client.get("/model", headers=auth).json()
        assert model["members"][0]["config"]["model"]["name"] == "test_resnet"  # --model-details: the full answer
        assert "s3cret-token" not in str(model)  # ... but never the token
        assert client.get("/docs", headers=auth).status_code == 200


def test_metrics_in_prometheus_format_and_one_access_log_line_per_request(infer_checkpoint, caplog):
    import json
    import logging

    from fastapi.testclient import TestClient

    from checkbox_dist.infer.predictor import Predictor
    from checkbox_dist.serve.api import create_app

    predictor = Predictor([infer_checkpoint], device="cpu")
    with TestClient(create_app(predictor)) as client, caplog.at_level(logging.INFO, logger="checkbox_dist.access"):
        assert client.post("/predict", files={"file": ("a.png", _png())}).status_code == 200
        assert client.post("/predict", files={"file": ("b.png", b"not an image")}).status_code == 422
        assert client.get("/no/such/path").status_code == 404
        response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['checkbox_dist_requests_total{method="POST",path="/predict",status="200"}'] == 1
    assert samples['checkbox_dist_requests_total{method="POST",path="/predict",status="422"}'] == 1
    assert samples['checkbox_dist_requests_total{method="GET",path="other",status="404"}'] == 1
    assert samples['checkbox_dist_request_duration_seconds_bucket{le="+Inf"}'] == 3
    assert samples["checkbox_dist_request_duration_seconds_count"] == 3
    assert samples['checkbox_dist_batch_size_bucket{le="+Inf"}'] >= 1  # the warm-up and the one good image
    assert samples["checkbox_dist_decode_bytes_in_flight"] == 0 and samples["checkbox_dist_queue_depth"] == 0
    assert samples["checkbox_dist_decode_memory_limit_bytes"] > 0
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "checkbox_dist.access"]
    assert [(r["method"], r["path"], r["status"]) for r in lines] == [
        ("POST", "/predict", 200), ("POST", "/predict", 422), ("GET", "/no/such/path", 404), ("GET", "/metrics", 200)]
    assert all(r["duration_ms"] >= 0 and "client" in r for r in lines)
