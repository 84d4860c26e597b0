"""`checkbox-dist serve`: the model behind HTTP, micro-batched (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse

from checkbox_dist.commands import add_command
from checkbox_dist.serve.settings import Settings

EXAMPLES = """examples:
  checkbox-dist serve --checkpoint runs/quickstart-<time> --host 127.0.0.1 --port 8000
  curl -F file=@crop.png http://127.0.0.1:8000/predict
  curl -H 'content-type: application/json' -d '{"url": "https://example.com/crop.png"}' http://127.0.0.1:8000/predict
  curl -F files=@a.png -F files=@b.png http://127.0.0.1:8000/predict/batch      # or JSON {"urls": [...]}
  curl http://127.0.0.1:8000/health           # liveness + batching stats (never needs the token)
  curl http://127.0.0.1:8000/metrics          # Prometheus: requests by status, latency, queue, batch sizes, decode bytes
  curl http://127.0.0.1:8000/model            # classes, input size, version (--model-details: much more)
  CHECKBOX_DIST_TOKEN=s3cret checkbox-dist serve --checkpoint RUN --host 0.0.0.0 --url-allow 10.0.0.0/8
  curl -H 'authorization: Bearer s3cret' -F file=@crop.png http://HOST:8000/predict"""
DETAILS = """POST /predict answers {"class", "score", "confidence": {class: p}, "input", "batch_size"}; batch_size is
how many images shared that model call. /predict/batch answers {"results": [...], "predicted", "failed"}
with one result or {"input", "error"} per image, in order (one image's failure is its own entry).
Errors are JSON {"detail": "one line"}: 400 malformed request (bad or deep JSON, a malformed or non-http(s)
URL, an untrusted Host header), 401 no/wrong bearer token, 403 URL fetching disabled, 408 body too slow,
413 body or image over the limit, 415 wrong content type, 422 not an image / over --max-decode-mb / URL
refused or download failed, 500 the model call failed (that request only), 503 + Retry-After when the
queue, decode memory or memory is exhausted.
Request data never names a file: uploads are bytes, URLs must be http(s) (file://, paths and redirects to
them are refused). URL fetches reach public addresses only (loopback, private, link-local, multicast and
169.254.169.254 refused after DNS and on every redirect) unless --url-allow lists more; --no-url-fetch
accepts uploads only. /docs and /openapi.json are off unless --api-docs. Peak memory is about the idle
server + --decode-memory-mb + the request bodies being read ("Serving securely" in the inference docs).
Needs `pip install 'checkbox_dist[serve]'`."""


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "serve", "HTTP API: POST /predict, /predict/batch, GET /health, /model, /metrics",
                    EXAMPLES, DETAILS)
    p.add_argument("--checkpoint", action="append", required=True,
                   help="checkpoint or run folder, an exported .onnx file or timm folder, or a Hub id "
                        "hf-hub:ORG/NAME (repeat for an ensemble)")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other machines (in a container)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                   help="onnx: ONNX Runtime on an exported model.onnx (auto: by file suffix)")
    p.add_argument("--device", default=None,
                   help="torch backend: cpu, cuda, mps ... (default: cuda if present, else mps, else cpu)")
    p.add_argument("--tta", action="store_true", help="also average over the horizontal mirror")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads for the model (0 = library default)")
    p.add_argument("--max-batch", type=int, default=Settings.max_batch, help="images per model call")
    p.add_argument("--max-wait-ms", type=float, default=Settings.max_wait_ms,
                   help="how long the first image of a batch waits for company")
    p.add_argument("--max-queue", type=int, default=Settings.max_queue, help="waiting images before 503")
    p.add_argument("--max-body-mb", type=float, default=Settings.max_body_mb, help="request body limit (MiB)")
    p.add_argument("--max-image-mb", type=float, default=Settings.max_image_mb, help="per image / URL download (MiB)")
    p.add_argument("--max-batch-items", type=int, default=Settings.max_batch_items, help="images per /predict/batch")
    p.add_argument("--max-decode-mb", type=float, default=Settings.max_decode_mb,
                   help="memory one image may need to decode (MiB; from its header, before decoding: pixels x "
                        "(stored bytes a pixel + 4)); an image over it is a 422")
    p.add_argument("--decode-memory-mb", type=float, default=Settings.decode_memory_mb,
                   help="memory all decodes in flight may hold together (MiB); the server's peak is about its idle "
                        "size + this + the request bodies it holds")
    p.add_argument("--decode-threads", type=int, default=Settings.decode_threads, help="threads decoding images")
    p.add_argument("--url-fetch", action=argparse.BooleanOptionalAction, default=True,
                   help="accept JSON {\"url\": ...} (--no-url-fetch: uploads only)")
    p.add_argument("--url-allow", action="append", default=[], metavar="NET|HOST",
                   help="also fetch from these addresses, networks (10.0.0.0/8) or host names (repeatable, or "
                        "comma-separated); otherwise loopback, private, link-local, multicast and the cloud "
                        "metadata address are refused, checked after DNS and on every redirect")
    p.add_argument("--url-timeout", type=float, default=Settings.url_timeout,
                   help="seconds per URL download, from connecting to the last byte (redirects included)")
    p.add_argument("--max-redirects", type=int, default=Settings.max_redirects, help="redirects a URL may take")
    p.add_argument("--token", default=None,
                   help="require `Authorization: Bearer TOKEN` on every endpoint but /health (default: the "
                        "CHECKBOX_DIST_TOKEN environment variable; unset: no token)")
    p.add_argument("--trusted-host", action="append", default=[], dest="trusted_hosts", metavar="HOST",
                   help="Host header values accepted (repeatable; '*' any); default: the loopback names when "
                        "--host is loopback (against DNS rebinding), any otherwise")
    p.add_argument("--model-details", action="store_true",
                   help="GET /model also shows checkpoint paths, training config, commits and versions "
                        "(default: classes, input size and version only)")
    p.add_argument("--api-docs", action="store_true", help="serve /docs, /redoc and /openapi.json (default: off)")
    p.add_argument("--body-timeout", type=float, default=Settings.body_timeout,
                   help="seconds a request body may take to arrive in full (408 after)")
    # Off by default: spinning pool threads take the cores HTTP parsing and PNG decoding need.
    p.add_argument("--onnx-spinning", action=argparse.BooleanOptionalAction, default=False,
                   help="let ONNX Runtime's idle threads spin between batches (default: they sleep)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="log level; info logs one JSON line per request (method, path, status, duration_ms, client)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from checkbox_dist.serve import app

    return app.run(args)
