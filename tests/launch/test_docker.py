"""The Docker images for real: build docker/Dockerfile.cpu, docker/Dockerfile and docker/Dockerfile.tpu and run them.

    .venv/bin/pytest tests/launch/test_docker.py -q     # as root; docs/LAUNCH.md has the cold and warm times

- serving image: a checkpoint mounted read-only at /model, then its int8 ONNX export; GET /health and POST
  /predict of a real crop on 127.0.0.1 answer what `checkbox-dist predict` answers on the host; nothing
  mounted: one `error:` line;
- training image, as its user `app` with a runs folder mounted: the quickstart (tiny), a 2-process CPU
  `accelerate launch train.py` (ACCELERATE_USE_CPU), `checkbox-dist predict --image_url` against a server on
  the host; the host reads the run folder and loads its checkpoint; an unwritable runs folder: one line;
- both images hold exactly the versions of constraints.txt;
- TPU image (torch_xla on the CPU): built and run when docker/Dockerfile.tpu, constraints.txt or pyproject.toml
  changed since its last good build on this machine (tests/launch/docker_harness.py's cache), else skipped
  with that reason: its ~8 GB dependency layer alone would take minutes of every CI run, and nothing else
  decides what it holds. CHECKBOX_DIST_DOCKER_TPU=always builds it anyway, =never skips it. The image and its
  wheels (~12 GB together) are deleted after the check.

Docker, debootstrap, the base image and the wheel folder are set up by tests/launch/docker_harness.py (apt-get
when missing; the test is skipped, naming why, where that cannot work). Every build and container uses
--network host (never a Docker bridge network); servers bind 127.0.0.1, and the 2-process run's gloo uses the
loopback interface (GLOO_SOCKET_IFNAME=lo).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

import docker_harness as dh
from conftest import REPO, TINY, run_cli

DOCKERFILES = ["Dockerfile", "Dockerfile.cpu", "Dockerfile.tpu"]
SERVE, TRAIN, TPU = "checkbox-dist-test:serve", "checkbox-dist-test:train", "checkbox-dist-test:tpu"
QUICK = [*TINY, "data.synth_n=60", "data.batch_size=8", "train.epochs=1"]  # seconds, on 1 or 2 processes
APP = 1000  # the images' user


def docker_test(test):
    return pytest.mark.system(pytest.mark.slow(pytest.mark.timeout(3600)(test)))


# ---- the static checks a build does not make -----------------------------------------------------------------

@pytest.mark.parametrize("name", DOCKERFILES)
def test_each_dockerfile_takes_a_base_whose_default_is_pinned(name):
    text = (REPO / "docker" / name).read_text()
    default = re.search(r"^ARG BASE=(\S+)$", text, re.M)
    assert default and re.fullmatch(r"[\w./-]+:\d+(\.\d+)+[\w.-]*(@sha256:[0-9a-f]{64})?", default.group(1))
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${BASE}"] * 2  # the build stage and the image


def test_tpu_image_installs_the_xla_pins_the_tests_use():
    script = (REPO / "tests" / "xla_venv.sh").read_text()
    pins = re.search(r'^PINS="([^"]+)"', script, re.M).group(1).split()
    text = (REPO / "docker" / "Dockerfile.tpu").read_text()
    assert [pin.split("==")[0] for pin in pins] == [pin.split("==")[0].split("[")[0] for pin in dh.XLA_PINS]
    for pin in dh.XLA_PINS:
        assert pin in text and pin.replace("[tpu]", "") in pins, pin
    grep = re.search(r"^grep (-v -i -E '[^']+')", script, re.M).group(1)
    assert grep in text and grep.split("'")[1] == dh.XLA_FILTER.pattern


def test_dockerignore_keeps_local_and_large_things_out():
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip()
                and not p.startswith("#")]
    for path in (".venv", ".venv-xla", ".git", "runs", "wandb", "tests"):
        assert any(fnmatch.fnmatch(path, p) for p in patterns), path


# ---- the engine, the base, the wheels, the builds ------------------------------------------------------------

@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A Docker daemon with the local base image; yields the measurements, written to CACHE/last_run.json."""
    work = tmp_path_factory.mktemp("docker")
    dh.CACHE.mkdir(parents=True, exist_ok=True)
    reason = dh.install_reason(dh.CACHE / "apt.log")
    if reason:
        pytest.skip(reason)
    daemon = dh.Engine(work / "dockerd.log")
    reason = daemon.start()
    if reason:
        pytest.skip(reason)
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "daemon_started_here": daemon.proc is not None}
    try:
        report["base_s"] = round(dh.ensure_base(work), 1)
        yield {"work": work, "report": report}
    finally:
        dh.remove_containers()
        daemon.stop()
        (dh.CACHE / "last_run.json").write_text(json.dumps(report, indent=1) + "\n")


@pytest.fixture(scope="module")
def wheels(engine):
    folder, seconds = dh.wheel_folder("main", engine["work"] / "pip-download.log")
    engine["report"]["wheels_s"] = round(seconds, 1)
    with dh.wheel_server(folder) as url:
        yield url


def _build(engine, wheels, dockerfile: str, tag: str) -> str:
    engine["report"][tag] = dh.build(dockerfile, tag, wheels, engine["work"] / f"build-{dockerfile}.log")
    return tag


@pytest.fixture(scope="module")
def serve_image(engine, wheels):
    return _build(engine, wheels, "Dockerfile.cpu", SERVE)


@pytest.fixture(scope="module")
def train_image(engine, wheels):
    return _build(engine, wheels, "Dockerfile", TRAIN)


def _one_error_line(proc) -> str:
    """The container failed with exactly one `error:` line and no traceback; returns it."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


def _host_predict(checkpoint: Path, image: Path) -> dict:
    [record] = json.loads(run_cli("predict", "--checkpoint", str(checkpoint), str(image), "--format", "json",
                                  "--device", "cpu").stdout)
    return record


# ---- the serving image -----------------------------------------------------------------------------------------

@docker_test
@pytest.mark.parametrize("model", ["", "model.int8.onnx"])  # the checkpoint (PyTorch); its int8 ONNX export
def test_serve_image_answers_like_predict_on_the_host(serve_image, infer_exported, synth_root, model):
    from checkbox_dist.bench.serve import free_port

    crop = sorted((synth_root / "checked").glob("*.png"))[0]
    port = free_port()
    with dh.detached(serve_image, "--checkpoint", f"/model/{model}", "--host", "127.0.0.1", "--port", port,
                     "--device", "cpu", volumes=(f"{infer_exported}:/model:ro",)) as name:
        url = f"http://127.0.0.1:{port}"
        dh.wait_healthy(url, name)
        health = httpx.get(f"{url}/health").json()
        response = httpx.post(f"{url}/predict", files={"file": (crop.name, crop.read_bytes(), "image/png")}, timeout=60)
        log = dh.logs(name)
    assert health["status"] == "ok"
    assert response.status_code == 200, response.text
    body, expected = response.json(), _host_predict(infer_exported / model, crop)
    assert sorted(body["confidence"]) == ["checked", "other", "unchecked"]
    assert body["class"] == expected["class"]
    assert body["confidence"] == pytest.approx(expected["confidence"], abs=1e-5)
    assert "Traceback" not in log and f"127.0.0.1:{port}" in log, log[-3000:]


@docker_test
def test_serve_image_without_a_checkpoint_says_so_in_one_line(serve_image):
    line = _one_error_line(dh.run(serve_image))  # the image's own command: --checkpoint /model, nothing there
    assert "/model" in line, line


# ---- the training image ----------------------------------------------------------------------------------------

def _runs_folder(path: Path, owner: int) -> Path:
    path.mkdir(mode=0o755)
    os.chown(path, owner, owner)
    return path


def _ok(proc, what: str):
    assert proc.returncode == 0, f"{what} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n" \
                                 f"--- stderr\n{proc.stderr[-3000:]}"
    return proc


@docker_test
def test_training_image_trains_on_one_and_two_processes_and_predicts_a_url(train_image, tmp_path, image_server,
                                                                         synth_root):
    runs = _runs_folder(tmp_path / "runs", APP)
    mount = (f"{runs}:/app/runs",)
    quick = _ok(dh.run(train_image, "checkbox-dist", "quickstart", *QUICK, volumes=mount), "quickstart")
    [run] = runs.glob("quickstart-*")
    assert f"checkbox-dist predict --checkpoint runs/{run.name}" in quick.stdout  # the closing lines

    two = _ok(dh.run(train_image, "accelerate", "launch", "--config_file", "launch/cpu_2proc.yaml", "train.py",
                     "--config", "quickstart", *QUICK, "train.output_dir=runs/two", volumes=mount,
                     env={"ACCELERATE_USE_CPU": "true", "GLOO_SOCKET_IFNAME": "lo"}),
             "accelerate launch (2 CPU processes)")
    first = two.stdout.splitlines()[0]
    assert "MULTI_CPU on cpu:0" in first and "world size 2" in first, first
    assert (runs / "two" / "checkpoints" / "best" / "model.pt").is_file()

    # The container reaches a server on the host's 127.0.0.1 (the conftest's image server: /good.png).
    url = f"{image_server}/good.png"
    predicted = _ok(dh.run(train_image, "checkbox-dist", "predict", "--checkpoint", f"runs/{run.name}",
                           f"--image_url={url}", "--format", "json", volumes=mount), "predict")
    [record] = json.loads(predicted.stdout)
    assert record["input"] == url

    # The host reads what the container wrote (as uid 1000) and loads the checkpoint it saved.
    for path in [run, *run.rglob("*")]:
        assert path.stat().st_uid == APP and path.stat().st_mode & 0o004, path
    expected = _host_predict(run, sorted((synth_root / "checked").glob("*.png"))[0])  # what /good.png serves
    assert record["class"] == expected["class"]
    assert record["confidence"] == pytest.approx(expected["confidence"], abs=1e-5)


@docker_test
def test_training_image_with_an_unwritable_runs_folder_says_so_in_one_line(train_image, tmp_path):
    runs = _runs_folder(tmp_path / "runs", 0)  # root's, mode 755: the image's user cannot write there
    line = _one_error_line(dh.run(train_image, "checkbox-dist", "quickstart", *QUICK,
                                  volumes=(f"{runs}:/app/runs",)))
    assert "runs/quickstart-" in line and f"Permission denied (as uid {APP})" in line, line
    assert not list(runs.iterdir())


@docker_test
def test_images_hold_the_versions_ci_tests(serve_image, train_image, engine):
    pins = dh.pinned((REPO / "constraints.txt").read_text())
    for image, needed in ((serve_image, {"fastapi", "uvicorn", "onnxruntime"}), (train_image, {"accelerate"})):
        versions = dh.installed(image)
        wrong = {name: (versions[name], pins[name]) for name in versions if name in pins
                 and versions[name] != pins[name]}
        assert not wrong, (image, wrong)
        assert {"checkbox-dist", "torch", *needed} <= set(versions), (image, sorted(versions))
    sizes = {tag: round(engine["report"][tag]["bytes"] / 1e9, 2) for tag in (serve_image, train_image)}
    print(f"image sizes (GB): {sizes}")


# ---- the TPU image -----------------------------------------------------------------------------------------------

def _tpu_key() -> str:
    parts = [(REPO / p).read_bytes() for p in ("docker/Dockerfile.tpu", "constraints.txt", "pyproject.toml")]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


@docker_test
def test_tpu_image_builds_and_runs_torch_xla_on_the_cpu(engine, wheels):
    mode = os.environ.get("CHECKBOX_DIST_DOCKER_TPU", "changed")
    stamp = dh.CACHE / "tpu.stamp"
    if mode == "never":
        pytest.skip("CHECKBOX_DIST_DOCKER_TPU=never")
    if mode == "changed" and stamp.is_file() and stamp.read_text().split()[0] == _tpu_key():
        pytest.skip(f"the TPU image was built and run with this docker/Dockerfile.tpu, constraints.txt and "
                    f"pyproject.toml on {stamp.read_text().split(maxsplit=1)[1].strip()} ({stamp}); "
                    f"CHECKBOX_DIST_DOCKER_TPU=always builds it again")
    folder, seconds = dh.wheel_folder("tpu", engine["work"] / "pip-download.log")  # served as WHEELS/tpu/
    engine["report"]["tpu_wheels_s"] = round(seconds, 1)
    try:
        engine["report"][TPU] = dh.build("Dockerfile.tpu", TPU, f"{wheels} {wheels}tpu/",
                                         engine["work"] / "build-Dockerfile.tpu.log")
        versions = dh.installed(TPU)
        assert versions["torch"].split("+")[0] == "2.9.1" and versions["torch-xla"] == "2.9.0", versions
        pins = dh.pinned(dh.xla_constraints())
        assert not {n: versions[n] for n in versions if n in pins and versions[n] != pins[n]}
        proc = _ok(dh.run(TPU, "accelerate", "launch", "--config_file", "launch/tpu_vm.yaml", "train.py",
                          "--config", "quickstart", *QUICK, "train.output_dir=/tmp/run", env={"PJRT_DEVICE": "CPU"}),
                   "accelerate launch on XLA")
        first = proc.stdout.splitlines()[0]
        assert "XLA on xla:0" in first and "world size 1" in first, first
        stamp.write_text(f"{_tpu_key()} {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    finally:  # ~8 GB of image and ~4 GB of wheels, needed again only when the key changes
        dh.docker("rmi", "-f", TPU, check=False)
        shutil.rmtree(folder, ignore_errors=True)
