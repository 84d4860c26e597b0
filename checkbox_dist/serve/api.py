"""The HTTP API of `checkbox-dist serve` as an ASGI app (FastAPI + uvicorn: pip install 'checkbox_dist[serve]').

    app = create_app(Predictor(["RUN"]), Settings(max_batch=32))
    uvicorn.run(app, host="127.0.0.1", port=8000)          # what `checkbox-dist serve` does

Routes: POST /predict, POST /predict/batch, GET /health, GET /model, GET /metrics (answers and error codes: see
checkbox_dist/serve/app.py). Every image, uploaded or downloaded, is decoded in a worker thread and queued
on one MicroBatcher, so concurrent requests share model calls; a refused request is RequestError, answered
as JSON {"detail": "one line"}; the whole app sits behind BodyLimit (413 for a body over max_body_mb).
"""

import asyncio
import contextlib
import functools
import io
import logging
import traceback
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from checkbox_dist import __version__
from checkbox_dist.core.errors import UserError
from checkbox_dist.data.download import AddressPolicy, DownloadError, DownloadLimits, download
from checkbox_dist.data.images import BadImageError, DecodeBudget, DecodeBusy
from checkbox_dist.serve.batcher import MicroBatcher, Overloaded
from checkbox_dist.serve.metrics import Metrics, Observed
from checkbox_dist.serve.requests import MB, BearerToken, BodyLimit, RequestError, read_items
from checkbox_dist.serve.settings import Settings

log = logging.getLogger("checkbox_dist.serve")
FETCH_THREADS = 8  # URL downloads at once (each bounded by --url-timeout); more wait their turn
RETRY_AFTER_S = 1


def create_app(predictor, settings: Settings | None = None):
    """The ASGI app (FastAPI wrapped in the body limit) serving `predictor` (an infer.predictor.Predictor)."""
    from fastapi import FastAPI

    settings = settings or Settings()
    service = Service(predictor, settings)
    docs = settings.api_docs
    app = FastAPI(title="checkbox_dist", version=__version__, lifespan=service.lifespan,
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)
    app.add_exception_handler(RequestError, answer_refusal)
    app.add_exception_handler(MemoryError, answer_out_of_memory)
    add_routes(app, service)
    wrapped = BodyLimit(app, int(settings.max_body_mb * MB), settings.body_timeout)
    if settings.token:
        wrapped = BearerToken(wrapped, settings.token, open_paths=("/health",))
    if settings.trusted_hosts and "*" not in settings.trusted_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        wrapped = TrustedHostMiddleware(wrapped, allowed_hosts=settings.trusted_hosts)
    return Observed(wrapped, service.metrics)  # outermost: refused requests are counted and logged too


def add_routes(app, service: "Service") -> None:
    """The five endpoints, each a thin FastAPI handler over `service`."""
    from fastapi import Request

    @app.post("/predict")
    async def predict(request: Request):
        service.requests += 1
        return await service.predict(await service.read(request, many=False))

    @app.post("/predict/batch")
    async def predict_batch(request: Request):
        service.requests += 1
        return await service.predict_batch(await service.read(request, many=True))

    @app.get("/health")
    async def health():
        return service.health()

    @app.get("/model")
    async def model():
        return service.model_info()

    @app.get("/metrics")
    async def metrics():
        from starlette.responses import PlainTextResponse

        return PlainTextResponse(service.metrics.render(service), media_type="text/plain; version=0.0.4")


async def answer_refusal(_request, err: RequestError):
    """RequestError -> JSON {"detail": ...} with its status (what FastAPI does for an HTTPException)."""
    from starlette.responses import JSONResponse

    return JSONResponse({"detail": err.detail}, status_code=err.status, headers=err.headers)


class Service:
    """What the routes share: the predictor, its micro-batcher, the URL download limits, a request counter."""

    def __init__(self, predictor, settings: Settings):
        self.predictor, self.settings = predictor, settings
        self.batcher = MicroBatcher(self.run_batch, settings.max_batch, settings.max_wait_ms / 1000,
                                    settings.max_queue)
        self.limits = DownloadLimits(settings.url_timeout, int(settings.max_image_mb * MB), settings.max_redirects,
                                     AddressPolicy.parse(settings.url_allow))
        self.budget = DecodeBudget(int(settings.decode_memory_mb * MB))
        self.max_decode_bytes = int(settings.max_decode_mb * MB)
        # Decodes and URL fetches each have their own threads: slow URLs cannot starve uploads of decoders.
        self.decoders = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self.fetchers = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="fetch")
        self.requests = 0
        self.metrics = Metrics()

    def run_batch(self, decoded: list):
        """One model call on decoded images (each a tensor per ensemble member): a row of probabilities each."""
        import torch

        members = range(len(self.predictor.members))
        return self.predictor.predict_tensors([torch.stack([d[m] for d in decoded]) for m in members])

    @contextlib.asynccontextmanager
    async def lifespan(self, _app):
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(self.run_batch, [self.predictor.decode(blank_png(), "warm-up")])  # first call is slow
        await self.batcher.start()
        yield
        await self.batcher.stop()
        self.decoders.shutdown(wait=False, cancel_futures=True)
        self.fetchers.shutdown(wait=False, cancel_futures=True)

    async def read(self, request, many: bool) -> list[tuple[str, object]]:
        return await read_items(request, many, max_items=self.settings.max_batch_items,
                                max_image_bytes=self.limits.max_bytes, url_fetch=self.settings.url_fetch)

    async def predict_one(self, label: str, source) -> dict:
        """Download (if a URL), decode, queue for the model; raises UserError / Overloaded / DecodeBusy."""
        loop = asyncio.get_running_loop()
        if isinstance(source, Exception):  # refused while reading the request (a malformed URL in a batch)
            raise source
        if isinstance(source, str):
            source = await loop.run_in_executor(self.fetchers, download, source, self.limits)
        decode = functools.partial(self.predictor.decode, source, label, max_bytes=self.max_decode_bytes,
                                   budget=self.budget)
        decoded = await loop.run_in_executor(self.decoders, decode)
        row, batch_size = await self.batcher.submit(decoded)
        return {"input": label, **self.predictor.describe(row), "batch_size": batch_size}

    async def predict(self, items: list[tuple[str, object]]) -> dict:
        label, source = items[0]
        try:
            return await self.predict_one(label, source)
        except (BadImageError, DownloadError) as err:
            raise RequestError(422, str(err)) from None
        except (Overloaded, DecodeBusy) as err:
            raise busy(str(err)) from None
        except MemoryError:
            raise busy("out of memory") from None
        except Exception as err:  # noqa: BLE001 - a model call that broke (a bug, a device error): this request
            raise RequestError(500, unexpected(label, err)) from None  # alone, one line; the log says why

    async def predict_batch(self, items: list[tuple[str, object]]) -> dict:
        """One result or {"input", "error"} per image, in order; the images share model calls."""
        if len(items) > self.settings.max_batch_items:
            raise RequestError(413, f"{len(items)} images is over the {self.settings.max_batch_items} per request "
                                    f"limit")
        outcomes = await asyncio.gather(*(self.predict_one(label, source) for label, source in items),
                                        return_exceptions=True)
        results = [_result_or_error(label, got) for (label, _), got in zip(items, outcomes)]
        failed = sum("error" in r for r in results)
        return {"results": results, "predicted": len(results) - failed, "failed": failed}

    def health(self) -> dict:
        return {"status": "ok", "requests": self.requests, "queued": self.batcher.queued,
                **self.batcher.stats.to_dict()}

    def model_info(self) -> dict:
        """Classes, input size and version; paths, training config, commits and versions only with model_details."""
        height, width = self.predictor.spec.height_width
        answer = {"version": __version__, "classes": self.predictor.classes,
                  "input_size": {"height": height, "width": width, "channels": self.predictor.spec.channels}}
        if not self.settings.model_details:
            return answer
        info = self.predictor.info()
        return {**answer, "tta": info["tta"], "ensemble": info["ensemble"], "backend": info["members"][0]["backend"],
                "members": info["members"], "serve": self.settings.public()}


def _result_or_error(label: str, got):
    """A batch entry: the prediction, or {"input", "error"} for this item alone; never raises, so one bad item
    (a bad image, a full queue, no memory left, a bug) cannot fail the other items of its batch."""
    if isinstance(got, (UserError, Overloaded, DecodeBusy)):
        return {"input": label, "error": str(got)}
    if isinstance(got, MemoryError):
        return {"input": label, "error": f"{label[:200]}: server out of memory; retry later"}
    if isinstance(got, BaseException):
        return {"input": label, "error": unexpected(label, got)}
    return got


def unexpected(label: str, err: BaseException) -> str:
    """An error no rule answers (a bug, a model call that broke): logged in full, answered as one line that
    names the type only (the exception's text may hold paths or device details)."""
    log.error("item %r failed: %s", label[:200], "".join(traceback.format_exception_only(err)).strip())
    return f"{label[:200]}: could not be predicted ({type(err).__name__})"


async def answer_out_of_memory(request, _err: MemoryError):
    """MemoryError anywhere in a request (reading a body, parsing JSON): 503 with Retry-After, not 500."""
    return await answer_refusal(request, busy("out of memory"))


def busy(why: str) -> RequestError:
    """503 with Retry-After: a memory or queue budget is spent for now."""
    return RequestError(503, f"server busy ({why}); retry later", headers={"Retry-After": str(RETRY_AFTER_S)})


def blank_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, "PNG")
    return buffer.getvalue()
