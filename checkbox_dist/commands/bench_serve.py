"""`checkbox-dist bench-serve`: a bounded load test of `serve` (requests/s, p50/p99 latency, batch sizes)."""

from __future__ import annotations

from checkbox_dist.commands import add_command

EXAMPLES = """examples:
  checkbox-dist bench-serve --checkpoint runs/quickstart-<time> --seconds 5 --concurrency 16  # its own server
  checkbox-dist bench-serve --checkpoint RUN --server-args "--max-batch 1"                  # batching off
  checkbox-dist bench-serve --url http://127.0.0.1:8000 --seconds 5                         # a running server"""
DETAILS = """--concurrency clients each POST one image to /predict as multipart, back to back, for --seconds (after
a 1 s warm-up that is not counted). The image is --image, or a synthetic crop. The server's own /health
counters, read before and after, give the batch sizes it formed. A server it starts runs on the same
machine as the clients, so the figures are a floor for the server alone."""


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "bench-serve", "bounded load test of `serve`: requests/s, p50/p99 latency",
                    EXAMPLES, DETAILS)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--checkpoint", help="start `serve` on this checkpoint on a free local port")
    target.add_argument("--url", help="benchmark a server that is already running, e.g. http://127.0.0.1:8000")
    p.add_argument("--seconds", type=float, default=5.0, help="measured load, after a 1 s warm-up")
    p.add_argument("--concurrency", type=int, default=16, help="clients sending at once")
    p.add_argument("--image", default="", help="image file to send (default: a synthetic crop)")
    p.add_argument("--server-args", default="", help="extra `serve` options, e.g. \"--max-batch 1\"")
    p.set_defaults(handler=run)


def run(args) -> int:
    from checkbox_dist.bench import serve

    return serve.run(args)
