"""`checkbox-dist serve`: the model behind HTTP, micro-batched (FastAPI + uvicorn: pip install 'checkbox_dist[serve]').

    checkbox-dist serve --checkpoint runs/quickstart --host 127.0.0.1 --port 8000
    curl -F file=@crop.png http://127.0.0.1:8000/predict
    curl -H 'content-type: application/json' -d '{"url": "https://example.com/crop.png"}' http://127.0.0.1:8000/predict
    curl -F files=@a.png -F files=@b.png http://127.0.0.1:8000/predict/batch      # or JSON {"urls": [...]}
    curl http://127.0.0.1:8000/health           # liveness + batching stats
    curl http://127.0.0.1:8000/model            # classes, preprocessing, temperature, training config, versions

POST /predict answers {"class", "score", "confidence": {class: p}, "input", "batch_size"}; batch_size is
how many images shared that model call. /predict/batch answers {"results": [...], "predicted", "failed"}
with one result or {"input", "error"} per image, in order. Errors are JSON {"detail": "one line"}:
400 malformed request or a URL that is not http(s), 403 URL fetching disabled, 413 body or image over
the limit, 415 wrong content type, 422 not an image / URL download failed, 503 queue full.
Request data never names a file: uploads are bytes, URLs must be http(s) (file://, paths and redirects to
them are refused). URL fetching reaches whatever this server can reach: turn it off with --no-url-fetch
where that matters (the server then only accepts uploads).

This module is the command (flags, checks, uvicorn start); the app itself is serve/api.py (create_app,
routes), what a request may carry is serve/requests.py (body limit, images in a body), and the shared
model calls are serve/batcher.py.
"""

import argparse
import sys
from dataclasses import fields

from checkbox_dist.core.errors import UserError
from checkbox_dist.infer.predictor import Predictor
from checkbox_dist.serve.api import Settings, create_app

__all__ = ["Settings", "add_parser", "create_app", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("serve", help="HTTP API: POST /predict, /predict/batch, GET /health, /model",
                              description=__doc__.split("\n\n")[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", action="append", required=True,
                   help="checkpoint or run folder, an exported .onnx file or timm folder (repeat for an ensemble)")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other machines (in a container)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto")
    p.add_argument("--device", default=None, help="torch backend: cpu, cuda ... (default: cuda if present)")
    p.add_argument("--tta", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads for the model (0 = library default)")
    p.add_argument("--max-batch", type=int, default=Settings.max_batch, help="images per model call")
    p.add_argument("--max-wait-ms", type=float, default=Settings.max_wait_ms,
                   help="how long the first image of a batch waits for company")
    p.add_argument("--max-queue", type=int, default=Settings.max_queue, help="waiting images before 503")
    p.add_argument("--max-body-mb", type=float, default=Settings.max_body_mb, help="request body limit (MiB)")
    p.add_argument("--max-image-mb", type=float, default=Settings.max_image_mb, help="per image / URL download (MiB)")
    p.add_argument("--max-batch-items", type=int, default=Settings.max_batch_items, help="images per /predict/batch")
    p.add_argument("--url-fetch", action=argparse.BooleanOptionalAction, default=True,
                   help="accept JSON {\"url\": ...} (--no-url-fetch: uploads only)")
    p.add_argument("--url-timeout", type=float, default=Settings.url_timeout, help="seconds per URL download")
    p.add_argument("--max-redirects", type=int, default=Settings.max_redirects)
    # Off by default: spinning pool threads take the cores HTTP parsing and PNG decoding need.
    p.add_argument("--onnx-spinning", action=argparse.BooleanOptionalAction, default=False,
                   help="let ONNX Runtime's idle threads spin between batches (default: they sleep)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def run(args) -> int:
    uvicorn = _import_serve_extra()
    _check_limits(args)
    predictor = _load_predictor(args)
    settings = Settings(**{f.name: getattr(args, f.name) for f in fields(Settings) if hasattr(args, f.name)})
    app = create_app(predictor, settings)
    sources = ", ".join(m.source for m in predictor.members)
    print(f"serving {'/'.join(predictor.classes)} from {sources} ({predictor.members[0].backend}) on "
          f"http://{args.host}:{args.port} | max batch {args.max_batch}, max wait {args.max_wait_ms:g} ms",
          file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_keep_alive=5)
    except SystemExit:  # uvicorn exits 1 when it cannot bind the port; its log says why
        raise UserError(f"serve: could not start on {args.host}:{args.port} (port in use?)") from None
    return 0


def _import_serve_extra():
    """uvicorn, once the optional extra (fastapi, python-multipart, uvicorn) is known to be installed."""
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401  (python-multipart: FastAPI needs it for uploads)
        import uvicorn
    except ImportError as err:
        raise UserError(f"serve needs the optional extra ({err.name} is missing): "
                        f"pip install 'checkbox_dist[serve]'") from None
    return uvicorn


def _check_limits(args) -> None:
    if min(args.max_batch, args.max_queue, args.max_batch_items) < 1 or min(args.max_body_mb, args.max_image_mb) <= 0:
        raise UserError("serve: --max-batch, --max-queue, --max-batch-items, --max-*-mb must be positive")


def _load_predictor(args) -> Predictor:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    return Predictor(args.checkpoint, device=args.device, tta=args.tta, backend=args.backend,
                     threads=args.threads, onnx_spinning=args.onnx_spinning)
