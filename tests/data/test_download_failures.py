"""URL downloads (data/download.py) that fail the ways users meet: nothing listening, a host name that does not
resolve, a redirect when --max-redirects is 0, a body that trickles past the deadline. Every message is one line
naming the URL. Only 127.0.0.1 is ever connected to: the name lookup is stubbed, never sent to a resolver."""

from __future__ import annotations

import socket
import time

import pytest

from checkbox_dist.data import download as download_module
from checkbox_dist.data.download import AddressPolicy, DownloadError, DownloadLimits, download
from conftest import local_http_server

LOCAL = AddressPolicy.parse(["127.0.0.1"])


def _one_line(err: pytest.ExceptionInfo, url: str) -> str:
    text = str(err.value)
    assert "\n" not in text and text.startswith(url), text
    return text


def _closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released without listen)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_is_cannot_connect():
    url = f"http://127.0.0.1:{_closed_port()}/a.png"
    start = time.monotonic()
    with pytest.raises(DownloadError) as caught:
        download(url, DownloadLimits(timeout_s=5, policy=LOCAL))
    assert _one_line(caught, url) == f"{url}: cannot connect"
    assert time.monotonic() - start < 4  # refused at once, not at the deadline


def test_a_host_that_does_not_resolve_is_host_not_found(monkeypatch):
    asked = []

    def no_such_host(host, *args, **kwargs):  # what the resolver raises for an unknown name (EAI_NONAME)
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(download_module.socket, "getaddrinfo", no_such_host)
    url = "http://images.nonexistent.invalid/a.png"
    with pytest.raises(DownloadError) as caught:
        download(url, DownloadLimits(timeout_s=5, policy=AddressPolicy()))
    assert _one_line(caught, url) == f"{url}: cannot connect (host images.nonexistent.invalid not found)"
    assert asked == ["images.nonexistent.invalid"]


@pytest.fixture
def local_server():
    """An HTTP server on 127.0.0.1 with a route per case; yields its base URL."""
    from http.server import BaseHTTPRequestHandler

    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 100

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/a.png")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == "/a.png":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                self.wfile.write(png)
            elif self.path == "/trickle.png":  # headers at once, then the body a byte every 0.5 s
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                try:
                    for byte in png[:12]:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.5)
                except OSError:  # the client gave up: that is the test
                    pass

    with local_http_server(Handler) as url:
        yield url


def test_max_redirects_0_refuses_a_redirect_and_still_fetches_direct_urls(local_server):
    url = f"{local_server}/redirect"
    with pytest.raises(DownloadError) as caught:
        download(url, DownloadLimits(timeout_s=5, max_redirects=0, policy=LOCAL))
    assert _one_line(caught, url) == f"{url}: redirects are not followed (limit 0)"
    assert download(f"{local_server}/a.png", DownloadLimits(timeout_s=5, max_redirects=0, policy=LOCAL))
    # control: with one redirect allowed, the same URL downloads the image it points to
    assert download(url, DownloadLimits(timeout_s=5, max_redirects=1, policy=LOCAL)).startswith(b"\x89PNG")


def test_a_body_trickling_past_the_deadline_times_out_at_the_deadline(local_server):
    url = f"{local_server}/trickle.png"
    start = time.monotonic()
    with pytest.raises(DownloadError) as caught:
        download(url, DownloadLimits(timeout_s=1.5, policy=LOCAL))
    waited = time.monotonic() - start
    assert _one_line(caught, url) == f"{url}: timed out after 1.5 s"
    assert 1.2 < waited < 4, waited  # each byte came well within any per-read timeout: the total deadline ended it
