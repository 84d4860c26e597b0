"""`checkbox-dist serve` as a real server process on 127.0.0.1, driven by a real HTTP client (httpx): every
endpoint, each 4xx, size limits (by Content-Length and chunked), refusal of file:// and paths, micro-batching
of concurrent requests, and a smoke run of `bench-serve` (figures are quoted in docs/INFERENCE.md, not asserted).

~25 s on 2 shared cores (server start ~8 s, plus the session's tiny training run when run alone).
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys

import httpx
import pytest
from PIL import Image

from conftest import REPO, run_main

pytestmark = pytest.mark.system  # a real uvicorn server on 127.0.0.1

LIMITS = {"body": 1 << 20, "image": 1 << 19}  # --max-body-mb 1, --max-image-mb 0.5
DECODE_MB = 400  # --max-decode-mb and --decode-memory-mb: one 7999x7999 16-bit PNG (366 MiB) at a time
BODY_TIMEOUT_S = 2  # --body-timeout
PIDS: dict[str, int] = {}  # server url -> its process id


@pytest.fixture(scope="module")
def server(infer_checkpoint, tmp_path_factory, image_server):
    from checkbox_dist.bench.serve import free_port, wait_healthy

    # image_server first: it puts 127.0.0.1 in NO_PROXY, which the server process must inherit

    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    command = [sys.executable, "-m", "checkbox_dist", "serve", "--checkpoint", str(infer_checkpoint),
               "--port", str(port),
               "--max-body-mb", "1", "--max-image-mb", "0.5", "--max-batch", "8", "--max-wait-ms", "100",
               "--url-timeout", "1", "--max-batch-items", "4", "--log-level", "warning",
               "--max-decode-mb", str(DECODE_MB), "--decode-memory-mb", str(DECODE_MB), "--url-allow", "127.0.0.1",
               "--body-timeout", str(BODY_TIMEOUT_S)]
    with log.open("w") as handle:
        proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
                                env=dict(os.environ, OMP_NUM_THREADS="2"))
    url = f"http://127.0.0.1:{port}"
    PIDS[url] = proc.pid
    try:
        wait_healthy(url, proc, timeout_s=240)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    text = log.read_text()
    assert "Traceback" not in text and "Exception" not in text, text[-3000:]


@pytest.fixture(scope="module")
def pngs(synth_root) -> dict[str, bytes]:
    files = {c: sorted((synth_root / c).glob("*.png")) for c in ("checked", "other", "unchecked")}
    return {f"{c}{i}": files[c][i].read_bytes() for c in files for i in range(3)}


def _noise_png(n_bytes: int) -> bytes:
    """A valid PNG of at least n_bytes (random pixels do not compress)."""
    side = int((n_bytes / 3) ** 0.5) + 8
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, "PNG", compress_level=0)
    return buffer.getvalue()


def test_health_and_a_model_answer_that_leaks_nothing(server, infer_checkpoint):
    from checkbox_dist import __version__

    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and "batch_size" in health
    model = httpx.get(f"{server}/model").json()
    # no paths, training config, commits or library versions unless --model-details
    assert model == {"version": __version__, "classes": ["checked", "other", "unchecked"],
                     "input_size": {"height": 32, "width": 48, "channels": 3}}, model
    for path in ("/docs", "/redoc", "/openapi.json"):  # API docs are off unless --api-docs
        assert httpx.get(f"{server}{path}").status_code == 404, path
    # DNS rebinding: a server bound to 127.0.0.1 answers only requests naming a loopback host
    response = httpx.get(f"{server}/health", headers={"host": "attacker.example"})
    assert response.status_code == 400, response.text


def test_a_body_that_never_arrives_is_408_after_the_body_timeout(server):
    import socket
    import time

    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        start = time.monotonic()
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000000\r\n\r\n")
        answer = sock.recv(4096)
        waited = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert BODY_TIMEOUT_S - 0.5 <= waited <= BODY_TIMEOUT_S + 5, waited


def test_predict_upload_and_url_match_the_predictor(server, infer_checkpoint, image_server, synth_root):
    from checkbox_dist.infer.predictor import Predictor

    path = sorted((synth_root / "checked").glob("*.png"))[0]  # what image_server serves as /good.png
    expected = Predictor([infer_checkpoint], device="cpu").predict_files([path])[0]
    upload = httpx.post(f"{server}/predict", files={"file": ("a.png", path.read_bytes(), "image/png")})
    by_url = httpx.post(f"{server}/predict", json={"url": f"{image_server}/good.png"})
    for response in (upload, by_url):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["class"] == expected["class"] and body["batch_size"] >= 1
        assert body["confidence"] == pytest.approx(expected["confidence"], abs=1e-5)
        assert sum(body["confidence"].values()) == pytest.approx(1, abs=1e-4)
    assert upload.json()["input"] == "a.png" and by_url.json()["input"] == f"{image_server}/good.png"


# Each bad request: (endpoint, request kwargs given the image server's URL and a good PNG, status, text in "detail").
BAD_REQUESTS = {
    "file URL": ("predict", lambda srv, good: {"json": {"url": "file:///etc/passwd"}}, 400,
                 "only http:// and https://"),
    "a path": ("predict", lambda srv, good: {"json": {"url": "/etc/passwd"}}, 400, "only http:// and https://"),
    "ftp URL": ("predict", lambda srv, good: {"json": {"url": "ftp://example.com/a.png"}}, 400,
                "only http:// and https://"),
    "redirect to file://": ("predict", lambda srv, good: {"json": {"url": f"{srv}/to-file"}}, 422,
                            "redirected to a non-http(s) URL"),
    "404": ("predict", lambda srv, good: {"json": {"url": f"{srv}/missing.png"}}, 422, "HTTP 404"),
    "hangs": ("predict", lambda srv, good: {"json": {"url": f"{srv}/hang.png"}}, 422, "timed out after 1 s"),
    "too big": ("predict", lambda srv, good: {"json": {"url": f"{srv}/big.png"}}, 422, "over the 524,288 byte limit"),
    "HTML": ("predict", lambda srv, good: {"json": {"url": f"{srv}/page.html"}}, 422,
             "not an image (content-type text/html)"),
    "redirect loop": ("predict", lambda srv, good: {"json": {"url": f"{srv}/loop"}}, 422, "too many redirects"),
    "path key": ("predict", lambda srv, good: {"json": {"path": "/etc/passwd"}}, 400, 'expected JSON {"url"'),
    "JSON list": ("predict", lambda srv, good: {"json": ["https://example.com/a.png"]}, 400, 'expected JSON {"url"'),
    "bad JSON": ("predict", lambda srv, good: {"content": b"{not json",
                                               "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    "raw PNG body": ("predict", lambda srv, good: {"content": good, "headers": {"content-type": "image/png"}}, 415,
                     "multipart/form-data"),
    "not an image": ("predict", lambda srv, good: {"files": {"file": ("x.png", b"GIF89a nonsense", "image/png")}},
                     422, "x.png: "),
    "no file": ("predict", lambda srv, good: {"files": {"note": (None, b"a text field, no file")}}, 400,
                "send one image"),
    "two files": ("predict", lambda srv, good: {"files": [("file", ("a.png", good)), ("file", ("b.png", good))]},
                  400, "send one image"),
    "image over the limit": ("predict", lambda srv, good: {"files": {"file": ("n.png", _noise_png(LIMITS["image"]
                                                                                                 + 1000))}},
                             413, "byte image limit"),
    "body over the limit": ("predict", lambda srv, good: {"files": {"file": ("n.png", _noise_png(2 * LIMITS["body"]))}},
                            413, "request body is over"),
    "chunked body over the limit": ("predict", lambda srv, good: {  # no Content-Length, counted as it arrives
        "content": iter([b"x" * 65536] * 40), "headers": {"content-type": "application/json"}}, 413,
        "request body is over"),
    "too many files": ("predict/batch", lambda srv, good: {"files": [("files", (f"{i}.png", good)) for i in range(5)]},
                       413, "over the 4 per request limit"),
    "urls not a list": ("predict/batch", lambda srv, good: {"json": {"urls": "https://example.com/a.png"}}, 400,
                        'expected JSON {"urls"'),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_one_line_4xx(server, image_server, pngs, case):
    endpoint, kwargs, status, text = BAD_REQUESTS[case]
    response = httpx.post(f"{server}/{endpoint}", timeout=30, **kwargs(image_server, pngs["checked0"]))
    assert response.status_code == status, (response.status_code, response.text)
    detail = response.json()["detail"]
    assert isinstance(detail, str) and text in detail and "\n" not in detail, (status, detail)
    assert httpx.get(f"{server}/health").json()["status"] == "ok"  # still serving


def test_get_on_predict_is_405(server):
    assert httpx.get(f"{server}/predict").status_code == 405


def test_batch_endpoint_keeps_order_and_reports_each_failure(server, image_server, pngs):
    files = [("files", ("a.png", pngs["checked0"])), ("files", ("bad.png", b"not an image")),
             ("files", ("c.png", pngs["other1"]))]
    body = httpx.post(f"{server}/predict/batch", files=files, timeout=30).json()
    assert [r["input"] for r in body["results"]] == ["a.png", "bad.png", "c.png"]
    assert body["predicted"] == 2 and body["failed"] == 1
    assert body["results"][1]["error"] == "bad.png: not an image"
    for r in (body["results"][0], body["results"][2]):
        assert sum(r["confidence"].values()) == pytest.approx(1, abs=1e-4)
    body = httpx.post(f"{server}/predict/batch", json={"urls": [f"{image_server}/good.png",
                                                                  f"{image_server}/missing.png"]}, timeout=30).json()
    assert "class" in body["results"][0] and "HTTP 404" in body["results"][1]["error"]


def test_concurrent_requests_are_micro_batched(server, pngs):
    before = httpx.get(f"{server}/health").json()

    async def burst():
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(client.post(f"{server}/predict", files={"file": (f"{k}.png", v)})
                                          for k, v in list(pngs.items()) * 2))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 18
    sizes = [r.json()["batch_size"] for r in responses]
    after = httpx.get(f"{server}/health").json()
    assert after["images"] - before["images"] == 18
    # 18 requests in flight, max batch 8, max wait 100 ms: they share model calls
    assert max(sizes) > 1 and after["batch_size"]["max"] > 1 and max(sizes) <= 8
    assert after["batches"] - before["batches"] < 18


def test_bench_serve_command_reports_rate_and_latency(server):
    code, stdout, _ = run_main("bench-serve", "--url", server, "--seconds", "1", "--concurrency", "4")
    assert code == 0, stdout
    assert "requests/s" in stdout and "p50" in stdout and "p99" in stdout and " 0 errors" in stdout


def test_crafted_images_are_422_and_a_batch_keeps_its_good_results(server, pngs):
    from hostile_images import CRAFTED

    for name, data in CRAFTED.items():
        response = httpx.post(f"{server}/predict", files={"file": (name, data)}, timeout=30)
        assert response.status_code == 422, (name, response.status_code, response.text)
        assert response.json()["detail"].startswith(f"{name}: ")
    files = [("files", ("a.png", pngs["checked0"])), *[("files", (n, d)) for n, d in CRAFTED.items()],
             ("files", ("c.png", pngs["other1"]))]
    response = httpx.post(f"{server}/predict/batch", files=files, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predicted"] == 2 and body["failed"] == len(CRAFTED)
    assert [r["input"] for r in body["results"]] == ["a.png", *CRAFTED, "c.png"]
    assert all(r["error"].startswith(f"{r['input']}: ") for r in body["results"][1:-1])


def _vm_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith(key + ":")).split()[1])


def test_a_batch_of_16_bit_images_stays_within_the_decode_memory(server):
    """Four 7999x7999 16-bit PNGs (124 KB each, 366 MiB each to decode) in one batch: each is predicted, and the
    server's peak RSS grows by at most --decode-memory-mb (plus 64 MiB for the request itself)."""
    from hostile_images import png16

    data = png16(7999)
    pid = PIDS[server]
    before = max(_vm_kib(pid, "VmHWM"), 0)
    files = [("files", (f"big{i}.png", data)) for i in range(4)]
    response = httpx.post(f"{server}/predict/batch", files=files, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predicted"] == 4, body
    growth_mib = (_vm_kib(pid, "VmHWM") - before) / 1024
    print(f"server peak RSS growth under the batch: {growth_mib:.0f} MiB")
    assert growth_mib <= DECODE_MB + 64, f"server peak RSS grew {growth_mib:.0f} MiB"
    # one image over --max-decode-mb is that image's 422, found from its header before decoding
    buffer = io.BytesIO()
    Image.new("RGBA", (7500, 7500)).save(buffer, "PNG")  # 56 Mpx: under the pixel cap, 429 MiB to decode
    big = httpx.post(f"{server}/predict", files={"file": ("huge.png", buffer.getvalue())}, timeout=60)
    assert big.status_code == 422 and "MiB to decode, over the 400 MiB limit" in big.json()["detail"], big.text


MALFORMED_URLS = ["http://[::1", "http://[::1]:abc/a.png", "http://example.com:abc/a.png", "http://exa mple.com/a.png",
                  "http://example.com/a\r\nX-Injected: 1", "http://example.com/a\x00.png", "http://example.com:99999/",
                  "http:///a.png", "http://user@/a.png"]


def test_deep_json_and_malformed_urls_are_4xx_and_fail_alone_in_a_batch(server, image_server):
    deep = b'{"url": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = httpx.post(f"{server}/predict", content=deep, headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 400 and "not valid JSON" in response.json()["detail"], response.text
    for url in MALFORMED_URLS:
        response = httpx.post(f"{server}/predict", json={"url": url}, timeout=30)
        assert response.status_code == 400, (url, response.status_code, response.text)
        detail = response.json()["detail"]
        assert "\n" not in detail and "\r" not in detail and "\x00" not in detail, detail
    good = f"{image_server}/good.png"
    response = httpx.post(f"{server}/predict/batch", json={"urls": [good, *MALFORMED_URLS[:3]]}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predicted"] == 1 and body["failed"] == 3, body
    assert all("error" in r for r in body["results"][1:])


def test_url_policy_refuses_addresses_outside_the_allow_list(server, image_server):
    """The server runs with --url-allow 127.0.0.1: 127.0.0.2 (loopback too) and the metadata address are refused
    before any connection, in /predict and per item in a batch; the allowed server still works."""
    port = image_server.rsplit(":", 1)[1]
    for url, kind in ((f"http://127.0.0.2:{port}/good.png", "loopback"),
                      ("http://169.254.169.254/latest/meta-data/", "cloud metadata")):
        response = httpx.post(f"{server}/predict", json={"url": url}, timeout=30)
        assert response.status_code == 422 and "refused: " in response.json()["detail"], response.text
        assert kind in response.json()["detail"]
    body = httpx.post(f"{server}/predict/batch", json={"urls": [f"{image_server}/good.png",
                                                                  f"http://127.0.0.2:{port}/good.png"]},
                      timeout=30).json()
    assert "class" in body["results"][0] and "refused" in body["results"][1]["error"], body


def test_fuzz_corpus_through_the_batch_endpoint(server):
    """100 mutated files per seed, 4 a request: every answer is 200 with one result or error per file (the
    server log is checked for tracebacks when the module's server stops)."""
    from hostile_images import fuzz_seeds, mutants

    for seed in fuzz_seeds():
        corpus = mutants(100, seed)
        for start in range(0, len(corpus), 4):
            chunk = corpus[start:start + 4]
            response = httpx.post(f"{server}/predict/batch", files=[("files", item) for item in chunk], timeout=60)
            assert response.status_code == 200, (f"FUZZ_SEED={seed}", [n for n, _ in chunk], response.text[:500])
            results = response.json()["results"]
            assert [r["input"] for r in results] == [n for n, _ in chunk]
            assert all("class" in r or r["error"].startswith(r["input"] + ": ") for r in results), results


def test_slow_urls_do_not_hold_up_uploads(server, image_server, pngs):
    """48 URLs that hang (12 batches of 4: more than the 40 threads the decoders once shared with fetches, so that
    pool would be full) and, meanwhile, one upload: the upload is answered at once, since URL fetches have their
    own 8 threads. Each hung URL costs its --url-timeout (1 s) per 8 of them: the URL count sets this test's time."""
    import time

    async def scenario():
        async with httpx.AsyncClient(timeout=120) as client:
            hung = [asyncio.create_task(client.post(f"{server}/predict/batch",
                                                    json={"urls": [f"{image_server}/hang.png"] * 4}))
                    for _ in range(12)]
            await asyncio.sleep(0.5)
            start = time.monotonic()
            upload = await client.post(f"{server}/predict", files={"file": ("a.png", pngs["checked0"])})
            waited = time.monotonic() - start
            pending = sum(not task.done() for task in hung)
            answers = await asyncio.gather(*hung)
            return upload, waited, pending, answers

    upload, waited, pending, answers = asyncio.run(scenario())
    assert upload.status_code == 200 and pending > 0, (upload.text, pending)
    assert waited < 0.8, f"the upload waited {waited:.2f} s behind URL fetches"
    assert all(a.status_code == 200 and a.json()["failed"] == 4 for a in answers)
