"""Data parallelism through the real launcher: 2 CPU processes (gloo) with `accelerate launch`.

    .venv/bin/pytest tests/train/test_distributed.py -q

Two training runs feed the tests: 2 processes x batch 8 (launch/cpu_2proc.yaml, root train.py) and
1 process x batch 16 (launch/single_gpu.yaml, `-m checkbox_dist.train`): the same global batch. Both set
CHECKBOX_DIST_RANK_TRACE=1, so each rank writes RUN/debug/rank<N>.json (checkbox_dist/core/distributed.py):
the sample indices it trained on and evaluated, the files it wrote inside RUN, its final weights' hash.
The model is timm's `test_vit` (LayerNorm only): with BatchNorm the 2-process run would normalise with
per-process batch statistics (8 images, not 16) and could not match the 1-process run; augmentation is off,
its draws being per micro-batch (8 images here, 16 there). The same weights with augmentation, BatchNorm and
the same micro-batch on 1, 2 and 4 processes: tests/train/test_launch_invariance.py. Then the three launches
that used to train N separate models must now fail with one line. About 60-90 s on an idle 2-core machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.system  # real multi-process launches (accelerate launch, gloo)

REPO = Path(__file__).resolve().parents[2]
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]

TINY = {
    "data": {"root": "", "synth_n": 150, "synth_seed": 0, "image_size": 32, "batch_size": 8, "eval_batch_size": 16,
             "num_workers": 0},
    "model": {"name": "test_vit"},
    "optim": {"name": "adamw", "lr": 0.002, "weight_decay": 0.05},
    "schedule": {"name": "constant"},
    "train": {"epochs": 2, "early_stopping_patience": 0, "log_every_steps": 1, "progress": False,
              "mixed_precision": "no"},
    "tracking": {"backends": ["tensorboard", "wandb"]},
}


def _env(**extra: str) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", WANDB_MODE="offline", WANDB_SILENT="true",
               CHECKBOX_DIST_RANK_TRACE="1")
    env.pop("ACCELERATE_USE_CPU", None)
    env.update(extra)
    return env


def _run(cmd: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)


def _load(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    ranks = sorted(run_dir.glob("debug/rank*.json"))
    return {"dir": run_dir, "epochs": [r for r in rows if r["kind"] == "epoch"],
            "steps": [r for r in rows if r["kind"] == "step"], "log": (run_dir / "log.txt").read_text(),
            "ranks": [json.loads(p.read_text()) for p in ranks]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("dist")
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(dict(TINY, data=dict(TINY["data"], cache_dir=str(tmp / "cache")))))
    two, one = tmp / "two", tmp / "one"
    # The one recipe that gives a real 2-process CPU world (see launch/cpu_2proc.yaml).
    proc = _run(ACCELERATE + ["--config_file", "launch/cpu_2proc.yaml", "train.py", "--config", str(config),
                              f"train.output_dir={two}"], _env(ACCELERATE_USE_CPU="true"))
    assert proc.returncode == 0, f"2-process run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    # --mixed_precision no: the launch file's bf16 would win over the config's precision (docs/LAUNCH.md)
    proc = _run(ACCELERATE + ["--config_file", "launch/single_gpu.yaml", "--mixed_precision", "no", "-m",
                              "checkbox_dist.train",
                              "--config", str(config), "data.batch_size=16", f"train.output_dir={one}"], _env())
    assert proc.returncode == 0, f"1-process run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return {"two": _load(two), "one": _load(one), "config": config, "tmp": tmp}


def test_two_processes_form_one_gloo_world(runs):
    first = runs["two"]["log"].splitlines()[0]
    assert "MULTI_CPU on cpu" in first and "world size 2" in first, first
    assert [r["world_size"] for r in runs["two"]["ranks"]] == [2, 2]
    assert [r["rank"] for r in runs["two"]["ranks"]] == [0, 1]
    assert runs["two"]["ranks"][0]["pid"] != runs["two"]["ranks"][1]["pid"]
    assert "world size 1" in runs["one"]["log"].splitlines()[0]


def test_ranks_train_on_disjoint_shards_of_the_same_global_batches(runs):
    rank0, rank1 = (r["train"] for r in runs["two"]["ranks"])
    (single,) = (r["train"] for r in runs["one"]["ranks"])
    for epoch in ("1", "2"):
        assert set(rank0[epoch]).isdisjoint(rank1[epoch])
        assert len(rank0[epoch]) == len(rank1[epoch]) == len(single[epoch]) // 2
        # Global step k = rank 0's batch k + rank 1's batch k = the 1-process run's batch k (batch 16).
        for k in range(len(single[epoch]) // 16):
            assert sorted(rank0[epoch][8 * k:8 * k + 8] + rank1[epoch][8 * k:8 * k + 8]) == \
                sorted(single[epoch][16 * k:16 * k + 16])
    assert rank0["1"] != rank0["2"]  # reshuffled each epoch


def test_weights_identical_across_ranks_and_close_to_one_process(runs):
    import torch

    hashes = {r["weights_sha256"] for r in runs["two"]["ranks"]}
    assert len(hashes) == 1
    two = torch.load(runs["two"]["dir"] / "checkpoints" / "last" / "model.pt", weights_only=True)["model"]
    one = torch.load(runs["one"]["dir"] / "checkpoints" / "last" / "model.pt", weights_only=True)["model"]
    assert two.keys() == one.keys()
    for name in two:  # all-reduce vs one mean: float rounding only, over 14 AdamW steps
        a, b = two[name], one[name]
        if name.endswith("attn.qkv.bias"):
            # Except the key bias (the middle third): q.(k + b) shifts every logit of a query equally, so softmax
            # ignores it and its true gradient is 0. AdamW divides that rounding noise by its own RMS and takes
            # full lr steps either way: measured 1.5e-4 apart vs <= 1.2e-5 for every other weight (2026-12-01).
            n = a.numel() // 3
            a, b = torch.cat([a[:n], a[2 * n:]]), torch.cat([b[:n], b[2 * n:]])
        # A weight whose true gradient is ~0 gets the same AdamW noise steps as the key bias: on one 2-core machine
        # (2026-12-02) one element of blocks.0.attn.proj.weight ended 1.6e-4 apart (0.08 lr), every other weight
        # <= 1.8e-5; which element depends on the CPU's kernels. So: all but 1 in 1,000 elements of each tensor
        # within rounding, and none more than lr / 4 (5e-4) apart.
        far = ~torch.isclose(a, b, rtol=1e-3, atol=1e-4)
        assert far.sum().item() <= a.numel() // 1000, (name, far.sum().item(), (a - b).abs().max().item())
        assert (a - b).abs().max().item() < TINY["optim"]["lr"] / 4, name
    assert any(not torch.equal(two[n], torch.zeros_like(two[n])) for n in two)


def test_metrics_equal_the_one_process_run_with_the_same_global_batch(runs):
    two, one = runs["two"], runs["one"]
    assert len(two["epochs"]) == len(one["epochs"]) == 2
    assert len(two["steps"]) == len(one["steps"]) == 14
    # (Step rows hold the main process's own running loss, not a world average: compared through epochs.)
    assert [r["step"] for r in two["steps"]] == [r["step"] for r in one["steps"]]
    for a, b in zip(two["epochs"], one["epochs"]):
        for key in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top2", "val_macro_f1"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
        assert a["val_confusion"] == b["val_confusion"]


def test_eval_counts_every_val_image_exactly_once(runs):
    val_size = sum(sum(row) for row in runs["one"]["epochs"][0]["val_confusion"])
    assert val_size == 30  # 150 synthetic images, 20% to val
    for passes in zip(*(r["val"] for r in runs["two"]["ranks"])):
        rank0, rank1 = passes
        # 30 images in batches of 16: rank 0 gets 16, rank 1 gets 14 padded to 16 with repeats of the
        # first images; evaluation keeps one row per index, dropping the 2 repeats.
        assert len(rank0) == len(rank1) == 16
        assert sorted(set(rank0) | set(rank1)) == list(range(val_size))
    for row in runs["two"]["epochs"]:
        assert sum(sum(r) for r in row["val_confusion"]) == val_size


def test_only_rank_zero_writes_checkpoints_plots_logs_and_tracker_runs(runs):
    rank0, rank1 = (r["writes"] for r in runs["two"]["ranks"])
    assert rank1 == []
    written = " ".join(rank0)
    for what in ("checkpoints/last", "checkpoints/best", "plots/metrics_plot.png", "metrics.jsonl", "log.txt",
                 "tracking"):
        assert what in written, what
    run_dir = runs["two"]["dir"]
    # TensorBoard names its files events.out.tfevents.<time>.<host>.<pid>.<n>: all from rank 0's process.
    events = list(run_dir.glob("tracking/**/events.out.tfevents.*"))
    assert events and {p.name.split(".")[-2] for p in events} == {str(runs["two"]["ranks"][0]["pid"])}
    assert len(list(run_dir.glob("tracking/wandb/offline-run-*"))) == 1
    assert runs["two"]["log"].count("world size 2") == 1  # printed once, not once per rank


@pytest.mark.parametrize("launch, why", [
    (["--cpu", "--num_processes", "2"], "asked for 2 processes but started one"),
    (["--config_file", "{tmp}/multi_cpu.yaml"], "asked for 2 processes but started one"),
    (["--config_file", "{tmp}/multi_gpu_use_cpu.yaml"], "started 2 processes (WORLD_SIZE=2)"),
])
def test_launches_that_would_train_separate_models_fail_with_one_line(runs, launch, why):
    tmp = runs["tmp"]
    base = {"compute_environment": "LOCAL_MACHINE", "num_machines": 1, "num_processes": 2, "machine_rank": 0,
            "mixed_precision": "no", "main_process_port": 0}
    (tmp / "multi_cpu.yaml").write_text(yaml.safe_dump(dict(base, distributed_type="MULTI_CPU")))
    (tmp / "multi_gpu_use_cpu.yaml").write_text(yaml.safe_dump(dict(base, distributed_type="MULTI_GPU", use_cpu=True)))
    out = tmp / f"trap-{abs(hash(why)) % 1000}-{len(launch)}"
    proc = _run(ACCELERATE + [a.format(tmp=tmp) for a in launch] + ["train.py", "--config", str(runs["config"]),
                                                                      f"train.output_dir={out}"], _env())
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert why in errors[0] and "ACCELERATE_USE_CPU=true" in errors[0] and "launch/cpu_2proc.yaml" in errors[0]
    assert not (out / "checkpoints").exists()
