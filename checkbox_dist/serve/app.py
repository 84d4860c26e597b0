"""`checkbox-dist serve`: the model behind HTTP, micro-batched (FastAPI + uvicorn: pip install 'checkbox_dist[serve]').

    checkbox-dist serve --checkpoint RUN --host 127.0.0.1 --port 8000

The routes, their answers and error codes are in `checkbox-dist serve --help` (commands/serve.py) and
docs/INFERENCE.md.

This module runs the command (checks, uvicorn start; its flags are in commands/serve.py); the app itself
is serve/api.py (create_app, routes), what a request may carry is serve/requests.py (body limit, images
in a body), and the shared model calls are serve/batcher.py.
"""

import os
import sys
from dataclasses import fields

from checkbox_dist.core.errors import UserError
from checkbox_dist.data.download import AddressPolicy
from checkbox_dist.infer.predictor import Predictor
from checkbox_dist.serve.api import Settings, create_app

__all__ = ["Settings", "create_app", "run"]

TOKEN_ENV = "CHECKBOX_DIST_TOKEN"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def run(args) -> int:
    uvicorn = _import_serve_extra()
    _check_limits(args)
    return_freed_memory()
    predictor = _load_predictor(args)
    app = create_app(predictor, settings_from_args(args))
    sources = ", ".join(m.source for m in predictor.members)
    print(f"serving {'/'.join(predictor.classes)} from {sources} ({predictor.members[0].backend}) on "
          f"http://{args.host}:{args.port} | max batch {args.max_batch}, max wait {args.max_wait_ms:g} ms",
          file=sys.stderr, flush=True)
    try:
        _access_log_to_stderr(args.log_level)
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_keep_alive=5,
                    access_log=False)  # serve/metrics.py writes one JSON line per request instead
    except SystemExit:  # uvicorn exits 1 when it cannot bind the port; its log says why
        raise UserError(f"serve: could not start on {args.host}:{args.port} (port in use?)") from None
    return 0


def settings_from_args(args) -> Settings:
    """The serve limits the command line asked for (flags named as Settings fields), the token (--token, else
    $CHECKBOX_DIST_TOKEN) and, on a loopback address, the loopback Host names only (against DNS rebinding)."""
    settings = Settings(**{f.name: getattr(args, f.name) for f in fields(Settings) if hasattr(args, f.name)})
    settings.token = args.token if args.token is not None else os.environ.get(TOKEN_ENV, "")
    if not settings.trusted_hosts and args.host in LOOPBACK:
        settings.trusted_hosts = ["127.0.0.1", "localhost", "::1", "[::1]"]
    return settings


def _access_log_to_stderr(level: str) -> None:
    """The `checkbox_dist.access` (one JSON line per request, at info) and `checkbox_dist.serve` loggers on stderr."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    for name in ("checkbox_dist.access", "checkbox_dist.serve"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(level.upper())
        logger.propagate = False


def return_freed_memory(threshold: int = 1 << 20) -> None:
    """glibc: allocations over `threshold` always get their own mapping, unmapped when freed. Otherwise glibc
    raises the threshold after the first big free, and each decode thread's arena keeps a decoded image's
    worth of freed memory resident: the decode memory budget would bound the work, not the RSS."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, threshold)  # M_MMAP_THRESHOLD; setting it also turns off the dynamic adjustment
    except (OSError, AttributeError):  # not glibc (musl, macOS): their allocators behave differently
        pass


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
    if min(args.max_batch, args.max_queue, args.max_batch_items, args.decode_threads) < 1 or \
            min(args.max_body_mb, args.max_image_mb, args.max_decode_mb, args.decode_memory_mb) <= 0:
        raise UserError("serve: --max-batch, --max-queue, --max-batch-items, --decode-threads, --max-*-mb and "
                        "--decode-memory-mb must be positive")
    try:
        AddressPolicy.parse(args.url_allow)
    except ValueError as err:
        raise UserError(f"serve: --url-allow: {err}") from None
    if args.body_timeout <= 0:
        raise UserError("serve: --body-timeout must be positive")
    if args.max_decode_mb > args.decode_memory_mb:
        raise UserError("serve: --max-decode-mb is over --decode-memory-mb: such an image could never decode")


def _load_predictor(args) -> Predictor:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    return Predictor(args.checkpoint, device=args.device, tta=args.tta, backend=args.backend,
                     threads=args.threads, onnx_spinning=args.onnx_spinning)
