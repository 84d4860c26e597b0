"""launch/tpu_vm.sh against a stand-in `gcloud` (no network, no TPU): which runtime it asks for, where the W&B key
travels, and when the torch/torch_xla pins are installed.

The stand-in is first on PATH. It appends every call's argv and stdin to calls.jsonl and answers as gcloud does where
the script reads the answer: `describe` fails until `create` ran, `scp LOCAL VM:PATH` copies into a folder standing
for the workers' home (keeping the file's mode, as scp does), and `ssh --command C` runs C with bash in that home, with
stand-ins for python3/pip/accelerate first on PATH (they log their argv; pip remembers what it installed, so
`import torch_xla` succeeds after it). The script runs from a copy in a throw-away git repository, since it ships
`git archive HEAD`; a changed pin is an edit of that copy, as a developer makes it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "checkbox_dist" / "resources" / "launch" / "tpu_vm.sh"
SECRET = "wandb-sentinel-3f9c1a7e5b"

GCLOUD = r'''#!PYTHON
import json, os, shutil, subprocess, sys
state = os.environ["FAKE_GCLOUD_STATE"]
home = os.path.join(state, "vm")
stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
with open(os.path.join(state, "calls.jsonl"), "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "stdin": stdin}) + "\n")
assert sys.argv[1:4] == ["compute", "tpus", "tpu-vm"], sys.argv
positional, opts, words = [], {}, iter(sys.argv[4:])
for word in words:
    if word in ("--zone", "--project", "--command", "--accelerator-type", "--version", "--worker"):
        opts[word] = next(words)
    elif word.startswith("--"):
        key, _, value = word.partition("=")
        opts[key] = value or True
    else:
        positional.append(word)
verb = positional[0]
if verb == "describe":
    if not os.path.exists(os.path.join(home, ".created")):
        sys.exit("ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: " + positional[1])
elif verb == "create":
    os.makedirs(home, exist_ok=True)
    open(os.path.join(home, ".created"), "w").close()
elif verb == "scp":
    source, target = positional[1], positional[2].split(":", 1)[1]
    shutil.copy(source, os.path.join(home, target))  # content and mode, as scp creates a new file
elif verb == "ssh":
    env = dict(os.environ, HOME=home, PATH=os.environ["FAKE_VM_BIN"] + ":/usr/bin:/bin")
    env.pop("WANDB_API_KEY", None)  # the worker's environment is not the workstation's
    sys.exit(subprocess.run(["bash", "-c", opts["--command"]], cwd=home, env=env, input=stdin, text=True).returncode)
'''

# python3, python, pip and accelerate on the "worker": each logs its argv; pip records `name==version` words it
# installed; `python -c 'import torch_xla'` succeeds once torch_xla was; `-m venv D` makes D/bin/activate.
VM_TOOL = r'''#!PYTHON
import json, os, sys
home = os.environ["HOME"]
tool = os.path.basename(sys.argv[0])
with open(os.path.join(home, ".remote_calls.jsonl"), "a") as f:
    f.write(json.dumps({"tool": tool, "argv": sys.argv[1:],
                        "wandb_api_key": os.environ.get("WANDB_API_KEY")}) + "\n")
installed = os.path.join(home, ".installed")
if tool.startswith("python") and sys.argv[1:3] == ["-m", "venv"]:
    os.makedirs(os.path.join(sys.argv[3], "bin"), exist_ok=True)
    open(os.path.join(sys.argv[3], "bin", "activate"), "a").close()
elif tool.startswith("python") and sys.argv[1:2] == ["-c"]:
    have = open(installed).read().split() if os.path.exists(installed) else []
    sys.exit(0 if "import torch_xla" not in sys.argv[2] or any(w.startswith("torch_xla") for w in have) else 1)
elif tool == "pip" and "install" in sys.argv:
    with open(installed, "a") as f:
        f.write(" ".join(w for w in sys.argv[1:] if "==" in w) + "\n")
'''


@pytest.fixture
def tpu(tmp_path):
    """A git checkout holding tpu_vm.sh and constraints.txt, the stand-ins, and a runner returning the calls."""
    checkout = tmp_path / "checkout"
    (checkout / "launch").mkdir(parents=True)
    shutil.copy(SCRIPT, checkout / "launch" / "tpu_vm.sh")
    shutil.copy(REPO / "constraints.txt", checkout / "constraints.txt")
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "checkout"], check=True)
    bin_dir, vm_bin = tmp_path / "bin", tmp_path / "vm_bin"
    for folder, names, text in ((bin_dir, ["gcloud"], GCLOUD), (vm_bin, ["python3", "python", "pip", "accelerate"],
                                                                 VM_TOOL)):
        folder.mkdir()
        for name in names:
            (folder / name).write_text(text.replace("PYTHON", sys.executable, 1))
            (folder / name).chmod(0o755)

    def run(state: str, expect_rc: int = 0, **env: str) -> dict:
        folder = tmp_path / state
        (folder / "vm").mkdir(parents=True, exist_ok=True)
        full_env = {k: v for k, v in os.environ.items() if k not in ("RUNTIME", "WANDB_API_KEY", "PROJECT")}
        full_env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_GCLOUD_STATE=str(folder),
                        FAKE_VM_BIN=str(vm_bin), TPU_NAME="ckbx", ZONE="us-central2-b", **env)
        proc = subprocess.run(["bash", str(checkout / "launch" / "tpu_vm.sh"), "--config", "configs/quickstart.yaml"],
                              env=full_env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert proc.returncode == expect_rc, proc.stdout + proc.stderr
        return {"proc": proc, "calls": read_jsonl(folder / "calls.jsonl"),
                "remote": read_jsonl(folder / "vm" / ".remote_calls.jsonl"), "vm": folder / "vm"}

    return {"run": run, "checkout": checkout}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def create_call(result: dict) -> list[str]:
    creates = [c["argv"] for c in result["calls"] if "create" in c["argv"]]
    assert len(creates) == 1, result["calls"]
    return creates[0]


@pytest.mark.parametrize("accelerator, runtime", [("v4-8", "tpu-ubuntu2204-base"),
                                                  ("v5litepod-8", "v2-alpha-tpuv5-lite"),
                                                  ("v5p-8", "v2-alpha-tpuv5"),
                                                  ("v6e-8", "v2-alpha-tpuv6e")])
def test_runtime_version_follows_the_accelerator(tpu, accelerator, runtime):
    argv = create_call(tpu["run"](accelerator, ACCELERATOR=accelerator))
    assert argv[argv.index("--accelerator-type") + 1] == accelerator
    assert argv[argv.index("--version") + 1] == runtime


def test_runtime_override_and_unknown_accelerator(tpu):
    argv = create_call(tpu["run"]("override", ACCELERATOR="v6e-8", RUNTIME="v2-alpha-tpuv6e-custom"))
    assert argv[argv.index("--version") + 1] == "v2-alpha-tpuv6e-custom"
    unknown = tpu["run"]("unknown", expect_rc=2, ACCELERATOR="v9z-8")
    assert unknown["proc"].stderr.strip().splitlines() == [
        ("error: no TPU software version known for ACCELERATOR=v9z-8: set RUNTIME "
         "(https://cloud.google.com/tpu/docs/runtimes)")]
    assert unknown["calls"] == []


def test_wandb_key_reaches_the_workers_on_no_command_line(tpu):
    result = tpu["run"]("secret", ACCELERATOR="v4-8", WANDB_API_KEY=SECRET)
    assert result["calls"] and result["remote"]
    for call in result["calls"] + result["remote"]:
        assert SECRET not in json.dumps(call["argv"]), call
    launches = [c for c in result["remote"] if c["tool"] == "accelerate"]
    assert len(launches) == 1 and launches[0]["wandb_api_key"] == SECRET
    key_file = result["vm"] / ".checkbox_dist_wandb_key"
    assert key_file.read_text() == SECRET and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # and without a key, nothing about W&B is sent
    plain = tpu["run"]("no_secret", ACCELERATOR="v4-8")
    assert [c["wandb_api_key"] for c in plain["remote"] if c["tool"] == "accelerate"] == [None]
    assert not (plain["vm"] / ".checkbox_dist_wandb_key").exists()


def test_changed_pins_reinstall_and_unchanged_pins_do_not(tpu):
    def pin_installs(result: dict) -> list[list[str]]:
        return [c["argv"] for c in result["remote"]
                if c["tool"] == "pip" and any(w.startswith("torch_xla") for w in c["argv"])]

    first = tpu["run"]("vm", ACCELERATOR="v4-8")
    assert len(pin_installs(first)) == 1 and "torch_xla[tpu]==2.9.0" in pin_installs(first)[0]
    again = tpu["run"]("vm", ACCELERATOR="v4-8")  # same VM (state), same pins: nothing reinstalled
    assert "reusing TPU VM ckbx" in again["proc"].stdout
    assert len(pin_installs(again)) == 1
    script = tpu["checkout"] / "launch" / "tpu_vm.sh"
    script.write_text(script.read_text().replace("torch_xla[tpu]==2.9.0", "torch_xla[tpu]==2.9.1"))
    bumped = tpu["run"]("vm", ACCELERATOR="v4-8")
    assert len(pin_installs(bumped)) == 2 and "torch_xla[tpu]==2.9.1" in pin_installs(bumped)[1]
    assert len(pin_installs(tpu["run"]("vm", ACCELERATOR="v4-8"))) == 2
