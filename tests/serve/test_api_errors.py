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
