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
"""

import argparse
import asyncio
import sys
from dataclasses import asdict, dataclass, fields

from checkbox_dist.serve.batcher import MicroBatcher, Overloaded
from checkbox_dist.core.errors import UserError
from checkbox_dist.data.download import DEFAULT_MAX_REDIRECTS, DEFAULT_TIMEOUT_S, DownloadError, DownloadLimits, check_url, download
from checkbox_dist.data.images import BadImageError

MB = 2**20
JSON_TYPES = ("application/json",)


@dataclass
class Settings:
    """Serve limits (the CLI's defaults). Why these numbers: a real crop is 1-200 KB, so 10 MiB per image
    and 20 MiB per request leave ample room; 32 x 64 px images are one ~0.1 s model call on 2 cores."""

    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    max_body_mb: float = 20.0
    max_image_mb: float = 10.0
    max_batch_items: int = 64
    url_fetch: bool = True
    url_timeout: float = DEFAULT_TIMEOUT_S
    max_redirects: int = DEFAULT_MAX_REDIRECTS


def body_limit(app, max_bytes: int):
    """ASGI wrapper: 413 for a body over `max_bytes`, by Content-Length or while it streams in (chunked)."""
    import json

    drain_cap = 8 * max_bytes  # read (and drop) up to this much so the client can see our 413

    async def reply(send):
        body = json.dumps({"detail": f"request body is over the {max_bytes:,} byte limit"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def drain(receive, seen: int):
        while seen <= drain_cap:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                return
            seen += len(message.get("body", b""))

    async def wrapped(scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and int(length) > max_bytes:
            if int(length) <= drain_cap:
                await drain(receive, 0)
            return await reply(send)
        state = {"seen": 0, "over": False}

        async def limited_receive():
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > max_bytes:
                    state["over"] = True
                    if message.get("more_body"):
                        await drain(receive, state["seen"])
                    return {"type": "http.disconnect"}  # the app stops reading; we answer below
            return message

        async def guarded_send(message):
            if not state["over"]:
                await send(message)

        try:
            await app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"]:
            await reply(send)

    return wrapped


def create_app(predictor, settings: Settings | None = None):
    """The ASGI app (FastAPI wrapped in the body limit) serving `predictor` (an inference.Predictor)."""
    import contextlib

    import torch
    from fastapi import FastAPI, HTTPException, Request
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile

    from checkbox_dist import __version__

    settings = settings or Settings()
    members = range(len(predictor.members))

    def run_batch(decoded: list) -> torch.Tensor:
        return predictor.predict_tensors([torch.stack([d[m] for d in decoded]) for m in members])

    batcher = MicroBatcher(run_batch, settings.max_batch, settings.max_wait_ms / 1000, settings.max_queue)
    limits = DownloadLimits(settings.url_timeout, int(settings.max_image_mb * MB), settings.max_redirects)
    counters = {"requests": 0}

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await run_in_threadpool(run_batch, [predictor.decode(_blank_png(), "warm-up")])  # first call is slow
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="checkbox_dist", version=__version__, lifespan=lifespan)

    async def read_items(request: Request, many: bool) -> list[tuple[str, object]]:
        """(label, bytes | url) per image in the request; HTTPException for a malformed one."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            try:
                # one over the limit, so that "too many" reaches the 413 below rather than a parser error
                form = await request.form(max_files=settings.max_batch_items + 1,
                                          max_fields=settings.max_batch_items + 1)
            except HTTPException:
                raise
            except Exception as err:  # noqa: BLE001 - python-multipart parse errors
                raise HTTPException(400, f"malformed multipart body ({err})") from None
            uploads = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
            if many and len(uploads) > settings.max_batch_items:
                raise HTTPException(413, f"{len(uploads)} images is over the {settings.max_batch_items} per "
                                         f"request limit")
            if not uploads or (len(uploads) != 1 and not many):
                raise HTTPException(400, "send one image as multipart field 'file'" if not many else
                                    "send images as multipart fields 'files'")
            items = []
            for i, upload in enumerate(uploads):
                data = await upload.read()
                label = (upload.filename or f"upload_{i}")[:200]
                if len(data) > limits.max_bytes:
                    raise HTTPException(413, f"{label}: {len(data):,} bytes is over the {limits.max_bytes:,} byte "
                                             f"image limit")
                items.append((label, data))
            return items
        if ctype in JSON_TYPES:
            try:
                body = await request.json()
            except ValueError:
                raise HTTPException(400, "the body is not valid JSON") from None
            key = "urls" if many else "url"
            urls = body.get(key) if isinstance(body, dict) else None
            if many and isinstance(urls, list) and urls and all(isinstance(u, str) for u in urls):
                pass
            elif not many and isinstance(urls, str):
                urls = [urls]
            else:
                raise HTTPException(400, f'expected JSON {{"{key}": ' + ('["https://...", ...]}' if many else
                                                                      '"https://..."}'))
            if not settings.url_fetch:
                raise HTTPException(403, "URL fetching is disabled on this server: upload the image instead")
            for url in urls:
                try:
                    check_url(url)  # before anything else: file://, paths, ftp:// ... never go further
                except DownloadError as err:
                    raise HTTPException(400, str(err)) from None
            return [(url, url) for url in urls]
        raise HTTPException(415, "send multipart/form-data with an image in field 'file' ('files' for a batch), "
                                 "or JSON {\"url\": \"https://...\"}")

    async def predict_one(label: str, source) -> dict:
        """Fetch (if a URL), decode, queue for the model; raises UserError / Overloaded."""
        if isinstance(source, str):
            source = await run_in_threadpool(download, source, limits)
        decoded = await run_in_threadpool(predictor.decode, source, label)
        row, batch_size = await batcher.submit(decoded)
        return {"input": label, **predictor.describe(row), "batch_size": batch_size}

    @app.post("/predict")
    async def predict(request: Request):
        counters["requests"] += 1
        label, source = (await read_items(request, many=False))[0]
        try:
            return await predict_one(label, source)
        except (BadImageError, DownloadError) as err:
            raise HTTPException(422, str(err)) from None
        except Overloaded as err:
            raise HTTPException(503, f"server busy ({err}); retry later") from None

    @app.post("/predict/batch")
    async def predict_batch(request: Request):
        counters["requests"] += 1
        items = await read_items(request, many=True)
        if len(items) > settings.max_batch_items:
            raise HTTPException(413, f"{len(items)} images is over the {settings.max_batch_items} per request limit")
        outcomes = await asyncio.gather(*(predict_one(label, source) for label, source in items),
                                        return_exceptions=True)
        results = []
        for (label, _), got in zip(items, outcomes):
            if isinstance(got, (UserError, Overloaded)):
                results.append({"input": label, "error": str(got)})
            elif isinstance(got, BaseException):
                raise got
            else:
                results.append(got)
        failed = sum("error" in r for r in results)
        return {"results": results, "predicted": len(results) - failed, "failed": failed}

    @app.get("/health")
    async def health():
        return {"status": "ok", "requests": counters["requests"], "queued": batcher.queued, **batcher.stats.to_dict()}

    @app.get("/model")
    async def model():
        info = predictor.info()
        return {"version": __version__, "classes": info["classes"], "tta": info["tta"],
                "ensemble": info["ensemble"], "backend": info["members"][0]["backend"], "members": info["members"],
                "serve": asdict(settings)}

    return body_limit(app, int(settings.max_body_mb * MB))


def _blank_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, "PNG")
    return buffer.getvalue()


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("serve", help="HTTP API: POST /predict, /predict/batch, GET /health, /model",
                              description=__doc__.split("\n\n")[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", action="append", required=True,
                   help="checkpoint or run folder, or an exported .onnx file (repeat for an ensemble)")
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
    # Off by default: spinning pool threads take the cores HTTP parsing and PNG decoding need. Measured,
    # int8 resnet18 on 2 shared cores, 16 clients: 74-75 requests/s spinning, 94-130 sleeping.
    p.add_argument("--onnx-spinning", action=argparse.BooleanOptionalAction, default=False,
                   help="let ONNX Runtime's idle threads spin between batches (default: they sleep)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def run(args) -> int:
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401  (python-multipart: FastAPI needs it for uploads)
        import uvicorn
    except ImportError as err:
        raise UserError(f"serve needs the optional extra ({err.name} is missing): "
                        f"pip install 'checkbox_dist[serve]'") from None
    import torch

    from checkbox_dist.infer.predictor import Predictor

    if min(args.max_batch, args.max_queue, args.max_batch_items) < 1 or min(args.max_body_mb, args.max_image_mb) <= 0:
        raise UserError("serve: --max-batch, --max-queue, --max-batch-items, --max-*-mb must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = Predictor(args.checkpoint, device=args.device, tta=args.tta, backend=args.backend,
                          threads=args.threads, onnx_spinning=args.onnx_spinning)
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
