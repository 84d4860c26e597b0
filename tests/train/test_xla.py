"""The TPU code path, run on the CPU: torch_xla with PJRT_DEVICE=CPU, through `accelerate launch
--config_file launch/tpu_vm.yaml train.py`, exactly as launch/tpu_vm.sh runs it on a TPU VM.

    .venv/bin/pytest tests/train/test_xla.py -q

torch_xla 2.9.0 needs torch 2.9.x, so it runs from a second environment that tests/xla_venv.sh builds
on first use (.venv-xla, or CHECKBOX_DIST_XLA_VENV; ~3.5 min and ~7 GB cold, ~30 s from uv's cache).
One training run (test_resnet, 32 px, bf16, the quickstart's augmentation, gradient accumulation 4 over 10
micro-batches, 3 epochs of 3 optimizer steps, XLA_ALWAYS_ALLREDUCE=1) feeds the run's tests: about 60-90 s
on an idle 2-core machine, nearly all of it XLA compiling the first
epoch's graphs. Several XLA processes cannot run on a CPU (xmp.spawn refuses nprocs > 1), so this is
the single-process path; data parallelism is tested with gloo in tests/train/test_distributed.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("CHECKBOX_DIST_XLA_VENV", REPO / ".venv-xla"))

# the first test also builds .venv-xla when missing (~4-5 min cold) and runs the compile-heavy training
pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def xla_python() -> Path:
    """The torch_xla environment, built when missing (needs PyPI: CI has it)."""
    build = subprocess.run(["bash", str(REPO / "tests" / "xla_venv.sh"), str(VENV)], capture_output=True, text=True,
                           timeout=1500)
    if build.returncode != 0:
        tail = "\n".join(line for line in (build.stdout + build.stderr).splitlines()
                         if not line.startswith("WARNING: Location"))[-3000:]
        raise AssertionError(f"tests/xla_venv.sh failed (exit {build.returncode}):\n{tail}")
    return VENV / "bin" / "python"


@pytest.fixture(scope="module")
def xla_run(xla_python, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("xla")
    run_dir = tmp / "run"
    cmd = [str(xla_python), "-m", "accelerate.commands.launch", "--config_file", str(REPO / "launch" / "tpu_vm.yaml"),
           str(REPO / "train.py"), "--config", str(REPO / "configs" / "quickstart.yaml"),
           "model.name=test_resnet", "data.image_size=32", "data.synth_n=125", f"data.cache_dir={tmp / 'cache'}",
           "data.batch_size=10", "data.eval_batch_size=30",  # 100 train = 10 micro-batches; val 25 = 1 batch
           # the quickstart's augmentation as shipped (affine and colour): it must run on the device
           "data.num_workers=0", "train.mixed_precision=bf16", "train.grad_accum_steps=4", "train.epochs=3",
           "train.log_every_steps=1000", "schedule.name=constant", "train.progress=false", "tracking.backends=[]",
           f"train.output_dir={run_dir}"]
    # XLA_ALWAYS_ALLREDUCE=1: xm.all_reduce runs on one device too (torch_xla skips it when the world is 1), so
    # the gradient all-reduces a TPU pod would do are traced and counted here.
    env = dict(os.environ, PJRT_DEVICE="CPU", CHECKBOX_DIST_RANK_TRACE="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(REPO), XLA_ALWAYS_ALLREDUCE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=1200)
    if proc.returncode != 0:
        raise AssertionError(f"XLA run exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n"
                             f"--- stderr\n{proc.stderr[-5000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"dir": run_dir, "stdout": proc.stdout, "epochs": [r for r in rows if r["kind"] == "epoch"],
            "trace": json.loads((run_dir / "debug" / "rank0.json").read_text())}


def test_accelerate_runs_the_loop_on_xla_with_bf16(xla_run):
    first = xla_run["stdout"].splitlines()[0]
    assert "XLA on xla:0" in first and "world size 1" in first and "precision bf16" in first, first
    assert xla_run["trace"]["distributed_type"] == "XLA" and xla_run["trace"]["device"] == "xla:0"
    assert "40 global" in xla_run["stdout"]  # 10 per process x 4 accumulation


def test_one_gradient_all_reduce_per_optimizer_step_and_windows_on_the_loops_count(xla_run):
    """10 micro-batches, accumulation 4, read ahead by the real MpDeviceLoader thread: the windows close on
    micro-batches 3, 7 and 9 of every epoch (the last one short), optimizer.step runs 3 times per epoch, and the
    only in-place all-reduce inside an epoch is the gradients' one, on the window's last micro-batch."""
    trace = xla_run["trace"]
    assert trace["windows"] == {str(e): [3, 7, 9] for e in (1, 2, 3)}
    assert trace["optimizer_steps"] == {str(e): 3 for e in (1, 2, 3)}
    for epoch, counts in trace["xla_all_reduces"].items():
        per_batch = [b - a for a, b in zip(counts, counts[1:])]  # all-reduces traced by micro-batches 0..8
        assert per_batch == [1 if m in (3, 7) else 0 for m in range(9)], (epoch, counts)


def test_loss_falls(xla_run):
    losses = [row["train_loss"] for row in xla_run["epochs"]]
    assert len(losses) == 3
    assert losses[-1] < losses[0] - 0.02, losses


def test_no_recompile_and_no_host_sync_in_steady_state(xla_run):
    """Static shapes: epochs 2 and 3 (train, eval, checkpoint) reuse epoch 1's graphs. No per-step sync:
    each train batch adds exactly one device-to-host transfer, the trace's own read of the indices."""
    counts = xla_run["trace"]["xla"]
    compiles = {epoch: [c for c, _ in rows] for epoch, rows in counts.items()}
    assert compiles["1"][-1] > 0  # the counters are live
    assert set(compiles["2"]) | set(compiles["3"]) == {compiles["2"][0]}, compiles
    for epoch in ("2", "3"):
        transfers = [t for _, t in counts[epoch]]
        assert [b - a for a, b in zip(transfers, transfers[1:])] == [1] * (len(transfers) - 1), transfers


def test_augmentation_runs_on_the_device_no_cpu_fallback(xla_run):
    """No op of a training step falls back to the CPU (torch_xla's `aten::` counters, totals at each train
    batch): the shipped affine augmentation (data/augment.py warp, not grid_sample) included. The run's host
    reads (`aten::_local_scalar_dense`, once per log interval and epoch) and evaluation's metrics come between
    epochs, not within one."""
    trace = xla_run["trace"]
    for epoch in ("2", "3"):
        calls = trace["xla_fallback_calls"][epoch]
        assert len(calls) == 10 and len(set(calls)) == 1, (epoch, calls, trace["xla_fallbacks"])
    assert not any("grid_sampler" in name for name in trace["xla_fallbacks"]), trace["xla_fallbacks"]


@pytest.fixture(scope="module")
def backend_checks(xla_python) -> dict:
    env = dict(os.environ, PJRT_DEVICE="CPU", PYTHONPATH=str(REPO))
    proc = subprocess.run([str(xla_python), str(REPO / "tests" / "train" / "xla_backend_checks.py")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_bf16_on_xla_autocasts_and_never_sets_xla_use_bf16(backend_checks):
    """With Accelerate's TPU branch taken (the only place it exports XLA_USE_BF16=1 and turns its autocast off),
    the Accelerator that session.build_accelerator returns leaves no whole-program downcast: float32 stays
    float32 on the device, weights included, and the training forward's convolutions run in bf16 (autocast)."""
    bf16 = backend_checks["bf16"]
    assert bf16["took_tpu_branch"] and bf16["distributed_type"] == "XLA"
    assert bf16["env"] == {"XLA_USE_BF16": None, "XLA_DOWNCAST_BF16": None}
    assert "f32[2,2]" in bf16["probe_ir"] and "bf16" not in bf16["probe_ir"], bf16["probe_ir"]
    assert "f32[16,3,3,3]" in bf16["weight_ir"], bf16["weight_ir"]
    assert bf16["convolutions"] and set(bf16["convolutions"]) == {"bf16"}, bf16["convolutions"]


def test_dropout_masks_are_keyed_by_the_step_seed_on_the_device_generator(backend_checks):
    """backend.seed_step seeds the XLA device's own generator: the same seed gives the same mask after other
    draws, and a second thread reseeding torch and drawing meanwhile (another thread replica) changes nothing.
    The control: torch.manual_seed, the loop's call before, does not reach XLA's generator at all."""
    rng = backend_checks["rng"]
    reference = rng["reference"]
    assert reference[0] == reference[3] and reference[0] != reference[1] != reference[2]
    assert all(run == reference for run in rng["concurrent"])
    assert rng["control"][0] != rng["control"][3]


def test_sync_batchnorm_is_refused_on_xla_with_one_line(xla_python, tmp_path):
    env = dict(os.environ, PJRT_DEVICE="CPU", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = subprocess.run([str(xla_python), "-m", "checkbox_dist", "train", "--config",
                           str(REPO / "configs" / "quickstart.yaml"), "model.name=test_resnet", "data.image_size=32",
                           "model.sync_batchnorm=true", f"data.cache_dir={tmp_path / 'cache'}", "tracking.backends=[]",
                           f"train.output_dir={tmp_path / 'run'}"], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: model.sync_batchnorm is not supported on XLA (TPU): its statistics are all-reduced "
                      "over torch.distributed, which XLA runs without; set model.sync_batchnorm=false"], proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


def test_checkpoint_saved_on_cpu_loads_in_the_main_environment(xla_run):
    """The main environment (torch 2.14, no torch_xla) loads the checkpoint for inference and resume."""
    import torch

    from checkbox_dist.model import checkpoint

    payload, state = checkpoint.load(xla_run["dir"] / "checkpoints" / "last", with_state=True)
    devices = set()

    def walk(obj):
        if isinstance(obj, torch.Tensor):
            devices.add(obj.device.type)
        elif isinstance(obj, dict):
            for value in obj.values():
                walk(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                walk(value)

    walk(payload)
    walk(state)
    assert devices == {"cpu"}
    assert payload["versions"]["torch"].startswith("2.9.") and "torch_xla" not in sys.modules
    assert state["optimizer"]["state"]  # AdamW moments were saved, as CPU tensors
    model, best = checkpoint.load_model(xla_run["dir"])
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (4, len(best["classes"]))
