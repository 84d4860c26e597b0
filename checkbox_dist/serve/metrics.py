"""What an operator watches: Prometheus-format counters for `GET /metrics` and one JSON access-log line per
request (logger `checkbox_dist.access`), both from one ASGI wrapper.

    metrics = Metrics()
    app = Observed(app, metrics)                 # counts and logs every request, refused ones included
    text = metrics.render(service)               # the /metrics body

Series: requests by method, route and status; request latency (histogram); images waiting for the
model (queue depth); model-call batch sizes (histogram); decode bytes in flight and their limit. Route
labels are the known routes or "other", so a client cannot create series at will.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter

ROUTES = ("/predict", "/predict/batch", "/health", "/model", "/metrics")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
access_log = logging.getLogger("checkbox_dist.access")


class Metrics:
    """Request counters and the latency histogram (the rest is read from the service when rendered)."""

    def __init__(self):
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        self.requests[(method, path if path in ROUTES else "other", status)] += 1
        self.latency[next((i for i, b in enumerate(LATENCY_BUCKETS) if seconds <= b), len(LATENCY_BUCKETS))] += 1
        self.latency_sum += seconds

    def render(self, service) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        lines = ["# HELP checkbox_dist_requests_total HTTP requests by method, route and status.",
                 "# TYPE checkbox_dist_requests_total counter"]
        for (method, path, status), n in sorted(self.requests.items()):
            lines.append(f'checkbox_dist_requests_total{{method="{method}",path="{path}",status="{status}"}} {n}')
        lines += _histogram("checkbox_dist_request_duration_seconds", "Request latency, seconds.",
                            LATENCY_BUCKETS, self.latency, self.latency_sum)
        sizes = service.batcher.stats.sizes
        counts = [sum(n for size, n in sizes.items() if (i == 0 or size > BATCH_BUCKETS[i - 1]) and
                      (i == len(BATCH_BUCKETS) or size <= BATCH_BUCKETS[i])) for i in range(len(BATCH_BUCKETS) + 1)]
        lines += _histogram("checkbox_dist_batch_size", "Images per model call.", BATCH_BUCKETS, counts,
                            sum(size * n for size, n in sizes.items()))
        lines += _gauge("checkbox_dist_queue_depth", "Images waiting for the model.", service.batcher.queued)
        lines += _gauge("checkbox_dist_decode_bytes_in_flight", "Decode memory held now (decode_cost).",
                        service.budget.in_flight)
        lines += _gauge("checkbox_dist_decode_memory_limit_bytes", "Decode memory limit (--decode-memory-mb).",
                        service.budget.max_bytes)
        return "\n".join(lines) + "\n"


def _histogram(name: str, text: str, buckets, counts: list[int], total: float) -> list[str]:
    lines, running = [f"# HELP {name} {text}", f"# TYPE {name} histogram"], 0
    for bound, n in zip([*buckets, "+Inf"], counts):
        running += n
        lines.append(f'{name}_bucket{{le="{bound}"}} {running}')
    return lines + [f"{name}_sum {total:.6f}", f"{name}_count {running}"]


def _gauge(name: str, text: str, value) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {value}"]


class Observed:
    """ASGI wrapper: times each HTTP request, counts it in `metrics` and logs one JSON line for it."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - start
            self.metrics.observe(scope["method"], scope["path"], status[0], seconds)
            client = scope.get("client") or ("", 0)
            access_log.info(json.dumps({"method": scope["method"], "path": scope["path"][:200], "status": status[0],
                                        "duration_ms": round(seconds * 1000, 1), "client": client[0]}))
