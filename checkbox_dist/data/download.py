"""Download one image over http(s), with limits, for `predict URL` and `serve` (JSON {"url": ...}).

    from checkbox_dist.data.download import DownloadLimits, download
    data = download("https://example.com/crop.png", DownloadLimits(timeout_s=10, max_bytes=10_000_000))

Every way a download can go wrong is one `DownloadError` line that names the URL: HTTP status (404 ...),
timeout, size over the limit, a content type that is not an image, too many redirects, a scheme other
than http/https (also when a redirect points at one: no `file://` through the back door), an address the
policy refuses. Whether the bytes decode as an image is checked afterwards by `images.decode`, which
raises its own one-line error. Messages never carry the remote's own text (status reason, headers, body).

`timeout_s` is one deadline from the first connection to the last byte, redirects included: a watchdog
shuts the socket at the deadline, so a server that drips its headers a byte at a time is cut off too.
`policy` (an AddressPolicy; `serve` sets one by default) is checked on every address a host name
resolves to, before connecting, on the first request and on every redirect; the connection then goes to
the address that was checked (no second DNS lookup), and environment proxies are not used.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
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


METADATA = ipaddress.ip_address("169.254.169.254")  # cloud instance metadata (AWS, GCP, Azure, ...)


@dataclass(frozen=True)
class AddressPolicy:
    """Which resolved addresses a download may connect to: public ones, plus those `allow`ed (networks such as
    10.0.0.0/8 or 127.0.0.1, or host names as written in the URL). Refused by default: loopback, private,
    link-local, multicast, unspecified and reserved addresses, and the cloud metadata address."""

    networks: tuple = ()
    hosts: frozenset = field(default_factory=frozenset)

    @classmethod
    def parse(cls, entries) -> "AddressPolicy":
        """From setting values: each an address, a network (CIDR) or a host name; commas separate several."""
        networks, hosts = [], set()
        for entry in (e.strip() for text in entries for e in str(text).split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if "/" in entry or entry.replace(".", "").isdigit() or ":" in entry:
                    raise ValueError(f"{entry!r} is not an address, a network or a host name") from None
                hosts.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def refusal(self, host: str, address: str) -> str | None:
        """None if `address` (that `host` resolved to) may be connected to, else what kind of address it is."""
        ip = ipaddress.ip_address(address.split("%")[0])
        if getattr(ip, "ipv4_mapped", None):
            ip = ip.ipv4_mapped
        if host.lower().rstrip(".") in self.hosts or any(ip in net for net in self.networks
                                                          if net.version == ip.version):
            return None
        if ip == METADATA:
            return "the cloud metadata address"
        for kind in ("loopback", "link_local", "multicast", "unspecified", "private", "reserved"):
            if getattr(ip, f"is_{kind}"):
                return f"a {kind.replace('_', '-')} address"
        return None


@dataclass
class DownloadLimits:
    timeout_s: float = DEFAULT_TIMEOUT_S  # whole download, connect to last byte, redirects included
    max_bytes: int = DEFAULT_MAX_BYTES
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    policy: AddressPolicy | None = None  # None: any address (the `predict` command, run by the user)


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


class _Deadline:
    """One download's deadline: sockets opened for it are shut down when it passes (a blocked read returns)."""

    def __init__(self, seconds: float):
        self.seconds, self.end = seconds, time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline")
        return left

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                sock.shutdown(socket.SHUT_RDWR)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cancel(self) -> None:
        self._timer.cancel()


def _connect(label: str, deadline: _Deadline, policy: AddressPolicy | None, address, timeout=None,
             source_address=None) -> socket.socket:
    """socket.create_connection for http.client: resolves the host, checks each address against `policy`,
    connects to the first allowed one within the deadline, and hands the socket to the deadline's watchdog."""
    host, port = address
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise DownloadError(f"{label}: cannot connect (host {_short(host)} not found)") from None
    refused, last_error = None, None
    for family, kind, proto, _, sockaddr in infos:
        why = policy.refusal(host, sockaddr[0]) if policy is not None else None
        if why:
            resolved = "" if host.strip("[]") == sockaddr[0] else f" ({sockaddr[0]})"
            refused = refused or f"{label}: refused: {_short(host)} is {why}{resolved}"
            continue
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(deadline.remaining())
            deadline.track(sock)
            sock.connect(sockaddr)
            return sock
        except OSError as err:
            sock.close()
            last_error = err
    if refused:
        raise DownloadError(refused)
    raise last_error or OSError("no address")


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, connect):
        super().__init__()
        self.connect = connect

    def http_open(self, req):
        return self.do_open(functools.partial(_connection, http.client.HTTPConnection, self.connect), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, connect):
        super().__init__()
        self.connect = connect

    def https_open(self, req):
        return self.do_open(functools.partial(_connection, http.client.HTTPSConnection, self.connect), req,
                            context=self._context)


def _connection(cls, connect, host, **kwargs):
    conn = cls(host, **kwargs)
    conn._create_connection = connect  # what HTTPConnection.connect calls: ours checks and tracks the socket
    return conn


def _opener(limits: DownloadLimits, connect) -> urllib.request.OpenerDirector:
    # No FileHandler/FTPHandler/DataHandler: build_opener adds them by default, so list the handlers. No
    # ProxyHandler when a policy is set: the policy must see the address the connection goes to.
    handlers = [_HTTPHandler(connect), _HTTPSHandler(connect), urllib.request.HTTPDefaultErrorHandler(),
                urllib.request.HTTPErrorProcessor(), _Redirects(limits.max_redirects)]
    if limits.policy is None:
        handlers.insert(0, urllib.request.ProxyHandler())
    opener = urllib.request.OpenerDirector()
    for handler in handlers:
        opener.add_handler(handler)
    return opener


def download(url: str, limits: DownloadLimits | None = None) -> bytes:
    """The body of `url` (an image, by its headers), or DownloadError with one line saying why not."""
    limits = limits or DownloadLimits()
    check_url(url)
    label = _short(url)
    deadline = _Deadline(limits.timeout_s)
    connect = functools.partial(_connect, label, deadline, limits.policy)
    request = urllib.request.Request(url, headers={"User-Agent": f"checkbox-dist/{__version__}",
                                                   "Accept": "image/*, application/octet-stream;q=0.5"})
    timed_out = f"{label}: timed out after {limits.timeout_s:g} s"
    try:
        with _opener(limits, connect).open(request, timeout=limits.timeout_s) as response:
            _check_headers(label, response.headers, limits)
            return _read_body(label, response, limits, deadline)
    except DownloadError:
        raise
    except urllib.error.HTTPError as err:
        if 300 <= err.code < 400:  # urllib's own "redirect error that would lead to an infinite loop"
            raise DownloadError(f"{label}: too many redirects (more than {limits.max_redirects})") from None
        raise DownloadError(f"{label}: HTTP {err.code}") from None  # not err.reason: the remote's own text
    except urllib.error.URLError as err:
        if isinstance(err.reason, DownloadError):
            raise err.reason from None
        if deadline.expired or isinstance(err.reason, (socket.timeout, TimeoutError)):
            raise DownloadError(timed_out) from None
        raise DownloadError(f"{label}: cannot connect") from None
    except (socket.timeout, TimeoutError):
        raise DownloadError(timed_out) from None
    except (OSError, ValueError, http.client.HTTPException) as err:  # resets, bad chunking, a garbled response
        if deadline.expired:
            raise DownloadError(timed_out) from None
        raise DownloadError(f"{label}: download failed ({type(err).__name__})") from None
    finally:
        deadline.cancel()


def _check_headers(label: str, headers, limits: DownloadLimits) -> None:
    if headers.get("Content-Type"):
        ctype = headers.get_content_type()
        if not ctype.startswith("image/") and ctype not in NEUTRAL_TYPES:
            raise DownloadError(f"{label}: not an image (content-type {ctype})")
    length = headers.get("Content-Length")
    if length and length.isdigit() and int(length) > limits.max_bytes:
        raise DownloadError(f"{label}: {int(length):,} bytes is over the {limits.max_bytes:,} byte limit")


def _read_body(label: str, response, limits: DownloadLimits, deadline: _Deadline) -> bytes:
    # read1 returns after one socket read; the deadline's watchdog shuts the socket when time is up.
    parts, total = [], 0
    while True:
        chunk = response.read1(CHUNK)
        if deadline.expired:
            raise DownloadError(f"{label}: timed out after {limits.timeout_s:g} s")
        if not chunk:
            return b"".join(parts)
        total += len(chunk)
        if total > limits.max_bytes:
            raise DownloadError(f"{label}: over the {limits.max_bytes:,} byte limit")
        parts.append(chunk)
