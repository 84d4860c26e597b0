"""Docker for tests/launch/test_docker.py: the engine, a base image made from Debian's packages, a wheel folder
served on 127.0.0.1, and builds and runs on the host's network (never a Docker bridge network).

No image registry is reachable from CI, so the base is made here, once per machine: `debootstrap --variant=minbase
bookworm` from the Debian mirror apt already uses, imported as local/debian:bookworm, plus Debian's python3,
python3-venv and libpython3.11 in one layer (local/python:3.11-bookworm). pip inside `docker build` cannot reach
the package registry (the build has no CA bundle), so the wheels are downloaded on the host (`pip download`;
torch comes from local disk here) into CACHE/wheels, which an http.server on 127.0.0.1:WHEEL_PORT serves to the
builds through pip's own settings, `--build-arg PIP_FIND_LINKS=http://127.0.0.1:38127/ --build-arg
PIP_NO_INDEX=1`. The base image stays in Docker's image store and the wheel folder in CACHE between runs;
Docker's layer cache keeps the rest.

Network: dockerd, when started here, runs with --bridge=none --iptables=false --ip-masq=false; every build and
every container uses --network host (run() and detached() take no other), and what listens binds 127.0.0.1.
Everything started here (the daemon, containers, the wheel server) is stopped here.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CHECKBOX_DIST_DOCKER_CACHE", Path.home() / ".cache" / "checkbox_dist" / "docker"))
DEBIAN_IMAGE = "local/debian:bookworm"
BASE_IMAGE = "local/python:3.11-bookworm"
# Like the official python image: python3 with venv, and the shared libpython (torch_xla's _XLAC links to it).
BASE_DOCKERFILE = f"""FROM {DEBIAN_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv libpython3.11 \\
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
CMD ["python3"]
"""
BASE_KEY = hashlib.sha256(BASE_DOCKERFILE.encode()).hexdigest()[:16]  # a changed recipe makes a new base
LABEL = "org.checkbox-dist.test"  # on the images the tests build, and on their containers (value: pytest's pid)
XLA_PINS = ["torch==2.9.1", "torchvision==0.24.1", "torch_xla[tpu]==2.9.0"]  # docker/Dockerfile.tpu's
XLA_FILTER = re.compile(r"^(torch|torchvision|triton|nvidia-|cuda-)", re.I)  # tests/xla_venv.sh's grep
WHEEL_PORT = int(os.environ.get("CHECKBOX_DIST_DOCKER_WHEEL_PORT", "38127"))
# The classic builder: its --network host needs no BuildKit entitlement (and no buildx plugin).
DOCKER_ENV = dict(os.environ, DOCKER_BUILDKIT="0")
_names = itertools.count()


def docker(*args, timeout: float = 600, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *map(str, args)], capture_output=True, text=True, env=DOCKER_ENV,
                          timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(map(str, args[:3]))} ... exited {proc.returncode}\n"
                             f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def image_exists(tag: str, label: str = "") -> bool:
    """TAG is in Docker's store (with LABEL, `key=value`, when given)."""
    proc = docker("image", "inspect", "-f", "{{json .Config.Labels}}", tag, check=False, timeout=60)
    if proc.returncode != 0:
        return False
    key, _, value = label.partition("=")
    return not label or (json.loads(proc.stdout) or {}).get(key) == value


# ---- the engine ------------------------------------------------------------------------------------------------

def install_reason(log: Path) -> str | None:
    """Installs Debian's docker.io and debootstrap with apt-get when missing; why they are missing otherwise."""
    missing = [package for package, tool in (("docker.io", "dockerd"), ("docker.io", "docker"),
                                             ("debootstrap", "debootstrap")) if shutil.which(tool) is None]
    if not missing:
        return None
    missing = sorted(set(missing))
    if os.geteuid() != 0:
        return f"{' and '.join(missing)} not installed, and installing them needs root"
    if shutil.which("apt-get") is None:
        return f"{' and '.join(missing)} not installed, and there is no apt-get to install them"
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with log.open("w") as out:
        for commands in ([install], [["apt-get", "update", "-q"], install]):
            if all(subprocess.run(c, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=900).returncode == 0
                   for c in commands):
                return None
    return f"apt-get could not install {' and '.join(missing)} (no network to the Debian mirror?): see {log}"


class Engine:
    """The Docker daemon: the one already running, or one started here (and then stopped by stop())."""

    def __init__(self, log: Path):
        self.log, self.proc = log, None

    def start(self) -> str | None:
        """None when a daemon answers, else the reason there is none."""
        if docker("info", check=False, timeout=60).returncode == 0:
            return None
        if os.geteuid() != 0:
            return "no Docker daemon is running, and starting one needs root"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false"],
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"dockerd exited with code {self.proc.returncode}: {self.log.read_text()[-1500:]}"
            if docker("info", check=False, timeout=30).returncode == 0:
                return None
            time.sleep(0.5)
        self.stop()
        return f"dockerd did not answer within 90 s: {self.log.read_text()[-1500:]}"

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()  # dockerd stops its containers and its own containerd
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None


def remove_containers() -> None:
    """Every container this test session started, running or not."""
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}={os.getpid()}", check=False).stdout.split()
    if ids:
        docker("rm", "-f", *ids, check=False)


# ---- the base image and the wheel folder ---------------------------------------------------------------------

@contextlib.contextmanager
def cache_lock():
    """Two test sessions on one machine make the base and the wheel folder one at a time."""
    import fcntl

    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def debian_mirror() -> str:
    """The Debian mirror apt uses here (deb822 or one-line sources), else deb.debian.org."""
    for source in sorted(Path("/etc/apt").glob("sources.list*")) + sorted(Path("/etc/apt").glob("sources.list.d/*")):
        if source.is_file():
            match = re.search(r"(https?://\S+/debian)/?(\s|$)", source.read_text())
            if match:
                return match.group(1)
    return "http://deb.debian.org/debian"


def ensure_base(work: Path) -> float:
    """Makes BASE_IMAGE unless Docker already has it; returns the seconds it took (0 when cached)."""
    start = time.monotonic()
    with cache_lock():
        if image_exists(BASE_IMAGE, f"{LABEL}.base={BASE_KEY}"):
            return 0.0
        if not image_exists(DEBIAN_IMAGE):
            root = work / "rootfs"
            proc = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(root), debian_mirror()],
                                  capture_output=True, text=True, timeout=1200)
            assert proc.returncode == 0, f"debootstrap failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            for cached in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (root / cached).glob("*"):
                    if path.is_file():
                        path.unlink()
            tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            docker("import", "-", DEBIAN_IMAGE, stdin=tar.stdout, timeout=600)
            assert tar.wait() == 0
            shutil.rmtree(root)
        docker("build", "--network", "host", "--label", f"{LABEL}.base={BASE_KEY}", "-t", BASE_IMAGE, "-",
               input=BASE_DOCKERFILE, timeout=900)
    return time.monotonic() - start


def requirements(extras: tuple[str, ...] = ()) -> list[str]:
    """What docker/Dockerfile*'s build stage lists: pyproject.toml's dependencies plus EXTRAS."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + [r for extra in extras for r in project["optional-dependencies"][extra]]


def xla_constraints() -> str:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    return "".join(f"{line}\n" for line in lines if not XLA_FILTER.match(line) and not line.startswith("#"))


def wheel_sets() -> dict[str, tuple[str, list[str]]]:
    """name -> (constraints text, requirements) for `pip download`; main: the training and serving images
    plus the build stage's backend, tpu: docker/Dockerfile.tpu's."""
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    return {"main": ((REPO / "constraints.txt").read_text(), requirements(("serve", "export")) + build),
            "tpu": (xla_constraints(), XLA_PINS + requirements())}


def wheel_folder(name: str, log: Path) -> tuple[Path, float]:
    """The wheels of one set: CACHE/wheels for main, CACHE/wheels/tpu for tpu. `pip download` runs only when the
    set's inputs changed since it last completed (their key is in FOLDER/.complete); the folder then starts
    afresh, so that old versions do not pile up. Returns the folder and the seconds spent."""
    start, folder = time.monotonic(), CACHE / "wheels" / ("" if name == "main" else name)
    constraints, reqs = wheel_sets()[name]
    key = hashlib.sha256(repr((constraints, reqs)).encode()).hexdigest()[:16]
    with cache_lock():
        if (folder / ".complete").is_file() and (folder / ".complete").read_text() == key:
            return folder, 0.0
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        (folder / ".constraints.txt").write_text(constraints)
        with log.open("a") as out:
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                                   "--python-version", "3.11", "-d", str(folder),
                                   "-c", str(folder / ".constraints.txt"), *reqs],
                                  stdout=out, stderr=subprocess.STDOUT, timeout=2400)
        assert proc.returncode == 0, f"pip download of the {name} wheels failed: see {log}"
        (folder / ".complete").write_text(key)
    return folder, time.monotonic() - start


@contextlib.contextmanager
def wheel_server(folder: Path):
    """An http.server on 127.0.0.1 serving FOLDER (pip's --find-links reads its directory listing); yields its URL.
    On WHEEL_PORT when it is free: the URL is a build argument, and build arguments are part of the cache key of
    every RUN layer, so another port would rebuild every image."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    try:
        server = ThreadingHTTPServer(("127.0.0.1", WHEEL_PORT), handler)
    except OSError:  # taken (another test session?): correct, only not cached
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# ---- builds and runs -----------------------------------------------------------------------------------------

def build(dockerfile: str, tag: str, wheels_url: str, log: Path) -> dict:
    """`docker build` of docker/DOCKERFILE from the local base and wheel folder; the old image of TAG, now
    untagged, is removed. Returns seconds and size."""
    start = time.monotonic()
    proc = docker("build", "--network", "host", "--force-rm", "-f", REPO / "docker" / dockerfile,
                  "--build-arg", f"BASE={BASE_IMAGE}", "--build-arg", f"PIP_FIND_LINKS={wheels_url}",
                  "--build-arg", "PIP_NO_INDEX=1", "--label", f"{LABEL}=1", "-t", tag, REPO,
                  timeout=2400, check=False)
    log.write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"docker build -f docker/{dockerfile} failed:\n{(proc.stdout + proc.stderr)[-5000:]}"
    seconds = time.monotonic() - start
    for label in (LABEL, f"{LABEL}.base"):  # the images this build and ensure_base() replaced, now untagged
        docker("image", "prune", "-f", "--filter", f"label={label}", check=False)
    size = int(docker("image", "inspect", "-f", "{{.Size}}", tag).stdout)
    return {"seconds": round(seconds, 1), "bytes": size}


def run(image: str, *args, volumes: tuple[str, ...] = (), env: dict | None = None,
        entrypoint: str = "", timeout: float = 900) -> subprocess.CompletedProcess:
    """`docker run --rm --network host` in the foreground; the container is removed even when this times out."""
    name = f"checkbox-dist-test-{os.getpid()}-{next(_names)}"
    flags = [f"--volume={v}" for v in volumes] + [f"--env={k}={v}" for k, v in (env or {}).items()]
    flags += [f"--entrypoint={entrypoint}"] if entrypoint else []
    try:
        return docker("run", "--rm", "--name", name, "--label", f"{LABEL}={os.getpid()}", "--network", "host",
                      *flags, image, *args, timeout=timeout, check=False)
    finally:
        docker("rm", "-f", name, check=False)


@contextlib.contextmanager
def detached(image: str, *args, volumes: tuple[str, ...] = ()):
    """A container in the background (`--network host`); yields its name; removed on exit."""
    name = f"checkbox-dist-test-{os.getpid()}-{next(_names)}"
    docker("run", "-d", "--name", name, "--label", f"{LABEL}={os.getpid()}", "--network", "host",
           *[f"--volume={v}" for v in volumes], image, *args)
    try:
        yield name
    finally:
        docker("rm", "-f", name, check=False)


def logs(name: str) -> str:
    proc = docker("logs", name, check=False)
    return proc.stdout + proc.stderr


def wait_healthy(url: str, name: str, timeout_s: float = 300) -> None:
    """Until GET URL/health answers 200; fails at once, with its log, when the container has stopped."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        running = docker("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip()
        assert running == "true", f"the container stopped:\n{logs(name)[-3000:]}"
        assert time.monotonic() < deadline, f"{url}/health did not answer in {timeout_s:g} s:\n{logs(name)[-3000:]}"
        time.sleep(0.5)


def installed(image: str) -> dict[str, str]:
    """{normalised name: version} of the image's Python environment."""
    proc = run(image, "list", "--format=freeze", entrypoint="pip")
    assert proc.returncode == 0, proc.stderr
    return {normalise(line.split("==")[0]): line.split("==")[1] for line in proc.stdout.splitlines() if "==" in line}


def pinned(constraints: str) -> dict[str, str]:
    return {normalise(line.split("==")[0]): line.split("==")[1].strip() for line in constraints.splitlines()
            if "==" in line and not line.startswith("#")}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
