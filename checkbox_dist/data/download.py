"""Download one image over http(s), with limits, for `predict URL` and `serve` (JSON {"url": ...}).

    from checkbox_dist.data.download import DownloadLimits, download
    data = download("https://example.com/crop.png", DownloadLimits(timeout_s=10, max_bytes=10_000_000))

Every way a download can go wrong is one `DownloadError` line that names the URL: HTTP status (404 ...),
timeout, size over the limit, a content type that is not an image, too many redirects, a scheme other
than http/https (also when a redirect points at one: no `file://` through the back door). Whether the
bytes decode as an image is checked afterwards by `images.decode`, which raises its own one-line error.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from checkbox_dist import __version__
from checkbox_dist.core.errors import UserError

SCHEMES = ("http", "https")
# Real crops are 1-200 KB as PNG (the largest of the 411, 1804 px wide, is under 1 MB): 10 MB is ample.
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_REDIRECTS = 5
# Servers that do not know what they hold say octet-stream; a missing header is also let through, and
# the decoder decides. Everything else (text/html error pages, JSON) is refused before decoding.
NEUTRAL_TYPES = {"application/octet-stream", "binary/octet-stream", "application/binary"}
CHUNK = 64 * 1024


class DownloadError(UserError):
    """A URL that could not be turned into image bytes; the message starts with the URL."""


@dataclass
class DownloadLimits:
    timeout_s: float = DEFAULT_TIMEOUT_S  # whole download, not per read
    max_bytes: int = DEFAULT_MAX_BYTES
    max_redirects: int = DEFAULT_MAX_REDIRECTS


def is_url(text: str) -> bool:
    """True for anything that looks like scheme://..., so that `ftp://x` is refused rather than read as a path."""
    return "://" in text and urlsplit(text).scheme.isalpha()


def check_url(url: str) -> str:
    """`url` if it is a well-formed http(s) URL with a host, else DownloadError; used before any request data
    is touched. Control characters, spaces, a bad port or bracket are refused here, not left to urllib."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise DownloadError(f"{_short(url)}: the URL holds spaces or control characters")
    try:
        parts = urlsplit(url)
        scheme, host, _port = parts.scheme.lower(), parts.hostname, parts.port  # .port raises on "abc", 99999
    except ValueError as err:
        raise DownloadError(f"{_short(url)}: malformed URL ({err})") from None
    if scheme not in SCHEMES:
        raise DownloadError(f"{_short(url)}: only http:// and https:// URLs are downloaded")
    if not host:
        raise DownloadError(f"{_short(url)}: the URL has no host")
    return url


def _short(url: str) -> str:
    """`url` for an error message: printable (control characters escaped) and at most 200 characters."""
    text = url.encode("unicode_escape").decode("ascii") if not url.isprintable() else url
    return text if len(text) <= 200 else text[:197] + "..."


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows at most `limit` redirects, and only to http(s)."""

    def __init__(self, limit: int):
        super().__init__()
        self.max_redirections = limit
        self.max_repeats = limit  # a loop A -> B -> A is caught by the same count

    def http_error_302(self, req, fp, code, msg, headers):
        # Checked here, before urllib's own scheme test, which would report a file:// target as a 302 error.
        location = headers.get("location") or headers.get("uri")
        target = urljoin(req.full_url, location) if location else ""
        if target and urlsplit(target).scheme.lower() not in SCHEMES:
            raise DownloadError(f"{_short(req.full_url)}: redirected to a non-http(s) URL ({_short(target)})")
        if self.max_redirections == 0:
            raise DownloadError(f"{_short(req.full_url)}: redirects are not followed (limit 0)")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _opener(limits: DownloadLimits) -> urllib.request.OpenerDirector:
    # No FileHandler/FTPHandler/DataHandler: build_opener adds them by default, so list the handlers.
    handlers = [urllib.request.ProxyHandler(), urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor(),
                _Redirects(limits.max_redirects)]
    opener = urllib.request.OpenerDirector()
    for handler in handlers:
        opener.add_handler(handler)
    return opener


def download(url: str, limits: DownloadLimits | None = None) -> bytes:
    """The body of `url` (an image, by its headers), or DownloadError with one line saying why not."""
    limits = limits or DownloadLimits()
    check_url(url)
    label = _short(url)
    deadline = time.monotonic() + limits.timeout_s
    request = urllib.request.Request(url, headers={"User-Agent": f"checkbox-dist/{__version__}",
                                                   "Accept": "image/*, application/octet-stream;q=0.5"})
    try:
        with _opener(limits).open(request, timeout=limits.timeout_s) as response:
            _check_headers(label, response.headers, limits)
            return _read_body(label, response, limits, deadline)
    except DownloadError:
        raise
    except urllib.error.HTTPError as err:
        if 300 <= err.code < 400:  # urllib's own "redirect error that would lead to an infinite loop"
            raise DownloadError(f"{label}: too many redirects (more than {limits.max_redirects})") from None
        raise DownloadError(f"{label}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, (socket.timeout, TimeoutError)):
            raise DownloadError(f"{label}: timed out after {limits.timeout_s:g} s") from None
        reason = getattr(err.reason, "strerror", None) or str(err.reason)
        raise DownloadError(f"{label}: cannot connect ({reason})") from None
    except (socket.timeout, TimeoutError):
        raise DownloadError(f"{label}: timed out after {limits.timeout_s:g} s") from None
    except (OSError, ValueError) as err:  # reset connections, bad chunked encoding, bad URL characters
        raise DownloadError(f"{label}: download failed ({err})") from None


def _check_headers(label: str, headers, limits: DownloadLimits) -> None:
    if headers.get("Content-Type"):
        ctype = headers.get_content_type()
        if not ctype.startswith("image/") and ctype not in NEUTRAL_TYPES:
            raise DownloadError(f"{label}: not an image (content-type {ctype})")
    length = headers.get("Content-Length")
    if length and length.isdigit() and int(length) > limits.max_bytes:
        raise DownloadError(f"{label}: {int(length):,} bytes is over the {limits.max_bytes:,} byte limit")


def _read_body(label: str, response, limits: DownloadLimits, deadline: float) -> bytes:
    # read1 returns after one socket read, so a server that trickles bytes still meets the deadline
    # (each read is also bounded by the socket timeout): worst case ~2x timeout_s, never unbounded.
    parts, total = [], 0
    while True:
        chunk = response.read1(CHUNK)
        if not chunk:
            return b"".join(parts)
        total += len(chunk)
        if total > limits.max_bytes:
            raise DownloadError(f"{label}: over the {limits.max_bytes:,} byte limit")
        if time.monotonic() > deadline:
            raise DownloadError(f"{label}: timed out after {limits.timeout_s:g} s")
        parts.append(chunk)
