"""Shared fixtures: the real CLI as a subprocess, tiny synthetic datasets, the real data when present.

Tests run the installed `checkbox-dist` command (or `python -m checkbox_dist`) exactly as users do;
tiny timm models (`test_resnet`, `test_efficientnet_gn`) at 32 px keep each run to a few seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from invariance_runs import AdamWRuns
from reliability_harness import cli as harness_cli

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "checkbox_state_v2" / "train"

# Overrides that make any config a seconds-long CPU run.
TINY = ["model.name=test_resnet", "data.image_size=32", "data.num_workers=0", "train.progress=false",
        "tracking.backends=[]", "train.mixed_precision=no"]


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 300,
            check: bool = True, fresh: bool = False) -> subprocess.CompletedProcess:
    """`checkbox-dist ARGS` in its own process; returns the completed process (text output).

    By default the process is forked from the reliability harness's preloaded server (tests/
    reliability_harness.py): the same `checkbox_dist.cli.main(argv)` the console script calls, with its own
    pid, environment, cwd, output and exit status, but without ~7 s of importing torch per run.
    `fresh=True` starts a new interpreter (`python -m checkbox_dist`), for the tests that check the real
    entry point."""
    if fresh:
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_SILENT="true", OMP_NUM_THREADS="2")
        full_env.update(env or {})
        full_env = {k: v for k, v in full_env.items() if v is not None}  # None = unset that variable
        proc = subprocess.run([sys.executable, "-m", "checkbox_dist", *args], capture_output=True, text=True,
                              env=full_env, cwd=cwd or REPO, timeout=timeout)
    else:
        result = harness_cli(list(args), env=env, cwd=cwd or REPO, timeout=timeout)
        proc = subprocess.CompletedProcess(["checkbox-dist", *args], result.rc, result.out, result.err)
    if check and proc.returncode != 0:
        raise AssertionError(f"checkbox-dist {' '.join(args)} exited {proc.returncode}\n"
                             f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache (synthetic datasets, decoded images) shared by the whole session."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def synth_root(cache_dir) -> Path:
    """60 synthetic images (20 per class) in ROOT/<class>/ layout."""
    from checkbox_dist.synth import generate

    root = cache_dir / "synth60"
    generate(root, 60, seed=3)
    return root


def tiny_train_args(out: Path, cache_dir: Path, *extra: str, data_root: Path | None = None) -> list[str]:
    # letterbox pinned: the tests' expectations were written for it (the packaged quickstart stretches)
    args = ["train", "--config", str(REPO / "configs" / "quickstart.yaml"), *TINY, "data.resize=letterbox",
            f"train.output_dir={out}", f"data.cache_dir={cache_dir}", "data.synth_n=60", "data.synth_seed=3"]
    if data_root is not None:
        args.append(f"data.root={data_root}")
    return args + list(extra)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def load_weights(folder: Path) -> dict:
    import torch

    return torch.load(folder / "model.pt", map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data not present at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(scope="session")
def adamw_runs(tmp_path_factory) -> AdamWRuns:
    """The launch-shape tests' AdamW recipe, trained once per world size per session (tests/invariance_runs.py):
    launch invariance compares worlds 1, 2 and 4, elastic resume takes world 2 as its uninterrupted reference."""
    return AdamWRuns(tmp_path_factory.mktemp("adamw"))


# ---- inference, export, serve (tests/infer/test_predict.py, test_export.py, test_serve.py) -----------------------

@pytest.fixture(scope="session")
def infer_checkpoint(tmp_path_factory, cache_dir) -> Path:
    """One tiny checkpoint for the inference tests, made by the real `train` command (1 epoch, ~8 s).
    Its input is 32x48 (data.image_width), so predict, export and serve are tested on a non-square model."""
    out = tmp_path_factory.mktemp("infer") / "run"
    run_cli(*tiny_train_args(out, cache_dir, "train.epochs=1", "data.image_width=48"))
    return out / "checkpoints" / "best"


@pytest.fixture(scope="session")
def infer_exported(infer_checkpoint) -> Path:
    """`export --format onnx --int8` on infer_checkpoint: model.onnx + model.int8.onnx next to model.pt."""
    proc = run_cli("export", "--checkpoint", str(infer_checkpoint), "--format", "onnx", "--int8")
    assert "ONNX Runtime matches PyTorch" in proc.stdout, proc.stdout
    return infer_checkpoint


@pytest.fixture(scope="session")
def image_server(synth_root):
    """An http.server on 127.0.0.1 with one route per way a URL can fail; yields its base URL.

    /good.png   a PNG            /missing.png  404             /hang.png   answers after 5 s
    /big.png    3 MiB, declared  /big-stream   3 MiB, no length /page.html  text/html
    /fake.png   image/png header, bytes are not an image         /loop       302 -> /loop2 -> /loop
    /redirect   302 -> /good.png /to-file      302 -> file:///etc/passwd
    """
    import time
    from http.server import BaseHTTPRequestHandler

    good = sorted((synth_root / "checked").glob("*.png"))[0].read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _send(self, code, body=b"", ctype="image/png", headers=(), length=True):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            if length:
                self.send_header("Content-Length", str(len(body)))
            for key, value in headers:
                self.send_header(key, value)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up: that is the test
                pass

        def do_GET(self):
            path = self.path.split("?")[0]
            if path == "/good.png":
                self._send(200, good)
            elif path == "/hang.png":
                time.sleep(5)
                self._send(200, good)
            elif path == "/big.png":
                self._send(200, b"\0" * (3 << 20))
            elif path == "/big-stream":
                self.close_connection = True
                self._send(200, b"\0" * (3 << 20), ctype="application/octet-stream", length=False)
            elif path == "/page.html":
                self._send(200, b"<html>not here</html>", ctype="text/html; charset=utf-8")
            elif path == "/fake.png":
                self._send(200, b"this is not a png at all", ctype="image/png")
            elif path in ("/loop", "/loop2"):
                self._send(302, headers=[("Location", "/loop2" if path == "/loop" else "/loop")], ctype="text/plain")
            elif path == "/redirect":
                self._send(302, headers=[("Location", "/good.png")], ctype="text/plain")
            elif path == "/to-file":
                self._send(302, headers=[("Location", "file:///etc/passwd")], ctype="text/plain")
            else:
                self._send(404, b"not found", ctype="text/plain")

    with local_http_server(Handler) as url:
        yield url


@contextlib.contextmanager
def local_http_server(handler):
    """A threaded HTTP server on 127.0.0.1 (a free port) answering with `handler`; yields its base URL. A proxy
    from the environment (CI machines have them) must not see requests to it: NO_PROXY covers it meanwhile."""
    from http.server import ThreadingHTTPServer

    saved = {key: os.environ.get(key) for key in ("NO_PROXY", "no_proxy")}
    for key in saved:
        os.environ[key] = ",".join(filter(None, [saved[key], "127.0.0.1", "localhost"]))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_main(*args: str) -> tuple[int, str, str]:
    """The `checkbox-dist` entry point in this process: (exit code, stdout, stderr). The same code path as
    the command, without another interpreter start (~3 s of importing torch + timm on 2 cores)."""
    import contextlib
    import io

    from checkbox_dist.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


