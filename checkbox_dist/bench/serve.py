"""`checkbox-dist bench-serve`: a bounded load test of `serve` (requests/s, p50/p99 latency, batch sizes).

    checkbox-dist bench-serve --checkpoint RUN --seconds 5 --concurrency 16   # starts its own server
    checkbox-dist bench-serve --checkpoint RUN --server-args "--max-batch 1"  # batching off
    checkbox-dist bench-serve --url http://127.0.0.1:8000 --seconds 5                     # a running server

`--concurrency` clients each POST one image to /predict as multipart, back to back, for `--seconds`
(after a 1 s warm-up that is not counted). The image is --image, or a synthetic 64 px-class crop.
The server's own /health counters, read before and after, give the batch sizes it formed. The client
runs on the same machine as a server it starts, so on a 2-core machine both share the cores: the figures
are a floor for the server alone.
"""

from __future__ import annotations

import asyncio
import io
import shlex
import socket
import statistics
import subprocess
import sys
import time

from checkbox_dist.core.errors import UserError
from checkbox_dist.synth import render_index


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen | None, timeout_s: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise UserError(f"bench-serve: the server exited with code {proc.returncode} before it was up")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise UserError(f"bench-serve: {url}/health did not answer within {timeout_s:g} s")


def sample_png() -> bytes:
    buffer = io.BytesIO()
    render_index(0, 0)[0].save(buffer, "PNG")
    return buffer.getvalue()


async def load(url: str, image: bytes, seconds: float, concurrency: int, warmup_s: float = 0.0) -> dict:
    import httpx

    latencies, errors, statuses = [], 0, {}
    start = time.monotonic()
    measure_from, stop_at = start + warmup_s, start + warmup_s + seconds

    async def client(http: httpx.AsyncClient):
        nonlocal errors
        while (now := time.monotonic()) < stop_at:
            try:
                response = await http.post(f"{url}/predict", files={"file": ("crop.png", image, "image/png")})
                code = response.status_code
            except httpx.HTTPError:
                code = "connection error"
            done = time.monotonic()
            if now >= measure_from:
                statuses[code] = statuses.get(code, 0) + 1
                if code == 200:
                    latencies.append(done - now)
                else:
                    errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    elapsed = time.monotonic() - measure_from
    latencies.sort()
    return {"seconds": round(elapsed, 2), "requests": len(latencies), "errors": errors, "statuses": statuses,
            "requests_per_s": len(latencies) / elapsed, "p50_ms": _percentile_ms(latencies, 0.5),
            "p99_ms": _percentile_ms(latencies, 0.99),
            "mean_ms": 1000 * statistics.fmean(latencies) if latencies else 0.0}


def _percentile_ms(latencies: list[float], q: float) -> float:
    """The q-quantile of sorted latencies (seconds), in ms; 0 when there are none."""
    return 1000 * latencies[min(len(latencies) - 1, int(q * (len(latencies) - 1)))] if latencies else 0.0


def run(args) -> int:
    try:
        import httpx  # noqa: F401
    except ImportError:
        raise UserError("bench-serve needs httpx: pip install 'checkbox_dist[serve]'") from None
    if args.seconds <= 0 or args.seconds > 600 or args.concurrency < 1:
        raise UserError("bench-serve: --seconds must be in (0, 600] and --concurrency >= 1")
    image = open(args.image, "rb").read() if args.image else sample_png()
    proc, url = start_server(args.checkpoint, args.server_args) if args.checkpoint else (None, args.url.rstrip("/"))
    try:
        wait_healthy(url, proc)
        result, before, after = measure(url, image, args.seconds, args.concurrency)
    finally:
        stop_server(proc)
    report(url, image, args, result, before, after)
    return 1 if result["errors"] else 0


def start_server(checkpoint: str, server_args: str) -> tuple[subprocess.Popen, str]:
    """`checkbox-dist serve` on `checkpoint` on a free local port: (process, base URL)."""
    port = free_port()
    command = [sys.executable, "-m", "checkbox_dist", "serve", "--checkpoint", checkpoint, "--port", str(port),
               "--log-level", "warning", *shlex.split(server_args)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, f"http://127.0.0.1:{port}"


def stop_server(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def measure(url: str, image: bytes, seconds: float, concurrency: int) -> tuple[dict, dict, dict]:
    """(load result, /health before, /health after) for `seconds` of load after a 1 s uncounted warm-up."""
    import httpx

    asyncio.run(load(url, image, 1.0, concurrency, warmup_s=0))  # warm-up, not counted anywhere
    before = httpx.get(f"{url}/health", timeout=10).json()
    result = asyncio.run(load(url, image, seconds, concurrency, warmup_s=0))
    after = httpx.get(f"{url}/health", timeout=10).json()
    return result, before, after


def report(url: str, image: bytes, args, result: dict, before: dict, after: dict) -> None:
    images, batches = after["images"] - before["images"], after["batches"] - before["batches"]
    print(f"bench-serve: {url} POST /predict, {args.concurrency} concurrent clients, {result['seconds']:g} s "
          f"(+1 s warm-up), {len(image):,}-byte image {args.server_args and '| serve ' + args.server_args}")
    print(f"  {result['requests']} requests answered, {result['requests_per_s']:.1f} requests/s, latency p50 "
          f"{result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, {result['errors']} errors {result['statuses']}")
    if batches:
        print(f"  server: {images} images in {batches} model calls, mean batch {images / batches:.1f}, "
              f"largest so far {after['batch_size']['max']}")
