"""What `serve` accepts from a request: the body-size limit (an ASGI wrapper) and the images in a body.

    app = BodyLimit(app, max_bytes)      # 413 for a body over max_bytes, by Content-Length or as it streams in
    items = await read_items(request, many=True, max_items=64, max_image_bytes=10 * MB, url_fetch=True)

read_items gives (label, bytes) per multipart upload or (url, url) per JSON URL, after checking counts,
per-image sizes and URL syntax and schemes (a malformed URL in a batch is (url, DownloadError): that
item's own error); anything it refuses raises RequestError(status, one-line detail), which
the app answers as JSON {"detail": ...}. Request data never names a file: uploads are bytes, URLs must be
http(s).
"""

from __future__ import annotations

import asyncio
import hmac
import json

from checkbox_dist.data.download import DownloadError, check_url

MB = 2**20
JSON_TYPES = ("application/json",)


class RequestError(Exception):
    """A request `serve` refuses: answered as HTTP `status` with JSON {"detail": detail}."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


class BearerToken:
    """ASGI wrapper: 401 unless the request carries `Authorization: Bearer <token>` (compared in constant
    time); paths in `open_paths` (the liveness probe) need none."""

    def __init__(self, app, token: str, open_paths: tuple[str, ...] = ()):
        self.app, self.expected, self.open_paths = app, f"Bearer {token}".encode(), open_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            return await self.app(scope, receive, send)
        await _send_json(send, 401, "missing or wrong bearer token (Authorization: Bearer ...)",
                         [(b"www-authenticate", b"Bearer")])


async def _send_json(send, status: int, detail: str, headers=()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI wrapper: 413 for a body over `max_bytes`, by Content-Length or while it streams in (chunked); 408
    for a body that has not arrived in full `timeout_s` after the request started."""

    def __init__(self, app, max_bytes: int, timeout_s: float = 30.0):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s
        self.drain_cap = 8 * max_bytes  # read (and drop) up to this much so the client can see our 413

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and int(length) > self.max_bytes:
            if int(length) <= self.drain_cap:
                await self.drain(receive, 0)
            return await self.reply(send)
        await self.call_metered(scope, receive, send)

    async def call_metered(self, scope, receive, send):
        """Run the app on a receive that counts the body; answer 413 instead once it goes over."""
        metered = _MeteredRequest(self, receive, send)
        try:
            await self.app(scope, metered.receive, metered.send)
        except Exception:
            if not (metered.over or metered.late):
                raise
        if metered.over:
            await self.reply(send)
        elif metered.late and not metered.started:
            await _send_json(send, 408, f"the request body did not arrive within {self.timeout_s:g} s",
                             [(b"connection", b"close")])

    async def reply(self, send):
        body = json.dumps({"detail": f"request body is over the {self.max_bytes:,} byte limit"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def drain(self, receive, seen: int):
        while seen <= self.drain_cap:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                return
            seen += len(message.get("body", b""))


class _MeteredRequest:
    """One request's receive and send, cut off once its body passes the limit."""

    def __init__(self, limit: BodyLimit, receive, send):
        self.limit, self._receive, self._send = limit, receive, send
        self.seen, self.over, self.late, self.started, self.complete = 0, False, False, False, False
        self.deadline = asyncio.get_running_loop().time() + limit.timeout_s

    async def receive(self):
        if self.over or self.late:
            return {"type": "http.disconnect"}
        if self.complete:  # the body is in: later receives wait for a disconnect, with no deadline
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), self.deadline - asyncio.get_running_loop().time())
        except asyncio.TimeoutError:
            self.late = True
            return {"type": "http.disconnect"}  # the app stops reading; BodyLimit answers 408
        if message["type"] == "http.request" and not message.get("more_body"):
            self.complete = True
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit.max_bytes:
                self.over = True
                if message.get("more_body"):
                    await self.limit.drain(self._receive, self.seen)
                return {"type": "http.disconnect"}  # the app stops reading; BodyLimit answers
        return message

    async def send(self, message):
        if not self.over and not self.late:
            self.started = True
            await self._send(message)


async def read_items(request, many: bool, *, max_items: int, max_image_bytes: int,
                     url_fetch: bool) -> list[tuple[str, object]]:
    """(label, bytes | url) per image in the request; RequestError for a malformed one."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        return await read_uploads(request, many, max_items, max_image_bytes)
    if ctype in JSON_TYPES:
        return await read_urls(request, many, url_fetch)
    raise RequestError(415, "send multipart/form-data with an image in field 'file' ('files' for a batch), "
                            "or JSON {\"url\": \"https://...\"}")


async def read_uploads(request, many: bool, max_items: int, max_image_bytes: int) -> list[tuple[str, bytes]]:
    """(file name, bytes) per uploaded file: one for /predict, up to `max_items` for a batch."""
    uploads = await _form_files(request, max_items)
    if many and len(uploads) > max_items:
        raise RequestError(413, f"{len(uploads)} images is over the {max_items} per request limit")
    if not uploads or (len(uploads) != 1 and not many):
        raise RequestError(400, "send one image as multipart field 'file'" if not many else
                           "send images as multipart fields 'files'")
    return [await _read_upload(upload, i, max_image_bytes) for i, upload in enumerate(uploads)]


async def _form_files(request, max_items: int) -> list:
    try:
        # one over the limit, so that "too many" reaches the 413 in read_uploads rather than a parser error
        form = await request.form(max_files=max_items + 1, max_fields=max_items + 1)
    except Exception as err:  # noqa: BLE001 - python-multipart parse errors
        raise RequestError(400, f"malformed multipart body ({err})") from None
    return [value for _, value in form.multi_items() if not isinstance(value, str)]  # str: a text field


async def _read_upload(upload, index: int, max_image_bytes: int) -> tuple[str, bytes]:
    data = await upload.read()
    label = (upload.filename or f"upload_{index}")[:200]
    if len(data) > max_image_bytes:
        raise RequestError(413, f"{label}: {len(data):,} bytes is over the {max_image_bytes:,} byte image limit")
    return label, data


async def read_urls(request, many: bool, url_fetch: bool) -> list[tuple[str, str]]:
    """(url, url) per URL in a JSON body {"url": ...} or, for a batch, {"urls": [...]}; http(s) only."""
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise RequestError(400, "the body is not valid JSON (or nested too deep)") from None
    urls = _urls_in(body, many)
    if not url_fetch:
        raise RequestError(403, "URL fetching is disabled on this server: upload the image instead")
    items = []
    for url in urls:
        try:
            items.append((url, check_url(url)))  # before anything else: file://, paths, ftp:// ... never go further
        except DownloadError as err:
            if not many:
                raise RequestError(400, str(err)) from None
            items.append((url, err))  # in a batch: that item's own error
    return items


def _urls_in(body, many: bool) -> list[str]:
    key = "urls" if many else "url"
    urls = body.get(key) if isinstance(body, dict) else None
    if many and isinstance(urls, list) and urls and all(isinstance(u, str) for u in urls):
        return urls
    if not many and isinstance(urls, str):
        return [urls]
    raise RequestError(400, f'expected JSON {{"{key}": ' + ('["https://...", ...]}' if many else '"https://..."}'))
