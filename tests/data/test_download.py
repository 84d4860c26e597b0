"""URL fetching (data/download.py) against small socket servers on 127.0.0.1 that the tests start: a total
deadline from connect to last byte, the address policy (after DNS, again on every redirect), and error
messages that never echo the remote's text. No other address is ever connected to: refused addresses are
refused before any connection."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from checkbox_dist.data.download import AddressPolicy, DownloadError, DownloadLimits, download

LOCAL = AddressPolicy.parse(["127.0.0.1"])


@pytest.fixture
def raw_server():
    """Serve `script(conn)` on each accepted connection of a 127.0.0.1 socket; yields (base url, set script)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.2)
    state = {"script": None, "stop": False}

    def loop():
        while not state["stop"]:
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            threading.Thread(target=_run, args=(state["script"], conn), daemon=True).start()

    def _run(script, conn):
        with conn:
            try:
                conn.recv(65536)
                script(conn, state)
            except OSError:
                pass

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", lambda script: state.update(script=script)
    state["stop"] = True
    thread.join(5)
    sock.close()


def _drip(conn, state, seconds=8.0):
    """A status line and headers, one byte a second, for at most `seconds`."""
    start = time.monotonic()
    for byte in b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Slow: " + b"a" * 100:
        if state["stop"] or time.monotonic() - start > seconds:
            return
        conn.sendall(bytes([byte]))
        time.sleep(1.0)


def test_headers_dripped_a_byte_a_second_fail_at_the_total_deadline(raw_server):
    url, serve = raw_server
    serve(_drip)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="timed out after 2 s"):
        download(f"{url}/slow.png", DownloadLimits(timeout_s=2, policy=LOCAL))
    assert time.monotonic() - start < 3.5


def test_status_reason_text_of_the_remote_is_not_echoed(raw_server):
    url, serve = raw_server
    serve(lambda conn, _: conn.sendall(b"HTTP/1.1 401 SECRET-REASON-token=abc123\r\nContent-Length: 0\r\n\r\n"))
    with pytest.raises(DownloadError) as caught:
        download(f"{url}/a.png", DownloadLimits(timeout_s=2, policy=LOCAL))
    assert "HTTP 401" in str(caught.value) and "SECRET" not in str(caught.value) and "abc123" not in str(caught.value)
    serve(lambda conn, _: conn.sendall(b"NOT-HTTP SECRET-LINE-abc123\r\n\r\n"))
    with pytest.raises(DownloadError) as caught:
        download(f"{url}/a.png", DownloadLimits(timeout_s=2, policy=LOCAL))
    assert "abc123" not in str(caught.value), caught.value


def test_the_address_policy_refuses_internal_addresses_before_connecting(raw_server):
    url, serve = raw_server
    port = url.rsplit(":", 1)[1]
    served = []
    serve(lambda conn, _: served.append(1) or conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    cases = {f"http://127.0.0.1:{port}/a.png": "loopback", f"http://localhost:{port}/a.png": "loopback",
             "http://169.254.169.254/latest/meta-data/": "cloud metadata", "http://10.1.2.3/a.png": "private",
             "http://192.168.0.1/a.png": "private", "http://[::1]/a.png": "loopback", "http://224.0.0.1/a.png": "multicast",
             "http://169.254.1.1/a.png": "link-local", "http://0.0.0.0/a.png": "unspecified",
             "http://[::ffff:127.0.0.1]/a.png": "loopback"}
    for target, kind in cases.items():
        with pytest.raises(DownloadError, match=f"refused: .*{kind}") as caught:
            download(target, DownloadLimits(timeout_s=2, policy=AddressPolicy()))
        assert str(caught.value).startswith(target.split("/latest")[0]), caught.value
    assert not served  # nothing reached the local server
    download(f"{url}/a.png", DownloadLimits(timeout_s=2, policy=LOCAL))  # allowed by the setting
    assert served


def test_every_redirect_is_checked_again(raw_server):
    url, serve = raw_server
    port = url.rsplit(":", 1)[1]
    for target in (f"http://127.0.0.2:{port}/a.png", "http://169.254.169.254/latest/meta-data/"):
        serve(lambda conn, _, t=target: conn.sendall(f"HTTP/1.1 302 Found\r\nLocation: {t}\r\nContent-Length: 0"
                                                     f"\r\n\r\n".encode()))
        with pytest.raises(DownloadError, match="refused"):
            download(f"{url}/r", DownloadLimits(timeout_s=2, policy=LOCAL))


def test_policy_parsing():
    policy = AddressPolicy.parse(["10.0.0.0/8, images.internal", "::1"])
    assert policy.refusal("a.example", "10.2.3.4") is None and policy.refusal("images.internal", "192.168.1.1") is None
    assert policy.refusal("x", "::1") is None and "private" in policy.refusal("x", "192.168.1.1")
    assert policy.refusal("example.com", "93.184.216.34") is None
    with pytest.raises(ValueError):
        AddressPolicy.parse(["10.0.0.0/33"])
