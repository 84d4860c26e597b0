"""EMA with several processes (docs/LAUNCH.md, "What differs: BatchNorm running buffers"): every process holds the
same EMA, so evaluation runs one model and the saved one is the one every process evaluated.

    .venv/bin/pytest tests/train/test_ema_processes.py -q

A real 2-process gloo world (tests/reliability_harness.py: run_world), `test_resnet` (BatchNorm) at 32 px with
`train.ema_decay`, 2 epochs with a save every 2 optimizer steps; CHECKBOX_DIST_RANK_TRACE=1 makes each process
record, at every save, the hash (core/distributed.py: weights_sha256) of the weights it saves (the EMA's) and of
its raw model, buffers included.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reliability_harness import REPO, run_world

pytestmark = pytest.mark.system  # a real 2-process gloo world

ARGS = ["train", "--config", str(REPO / "configs" / "quickstart.yaml"), "model.name=test_resnet", "data.image_size=32",
        "data.num_workers=0", "train.progress=false", "tracking.backends=[]", "data.synth_n=120", "data.synth_seed=3",
        "data.batch_size=8", "train.epochs=2", "eval.calibrate=false", "train.ema_decay=0.9",
        "checkpoint.every_steps=2"]


def test_every_process_saves_and_evaluates_the_same_ema(tmp_path: Path):
    run = tmp_path / "run"
    results = run_world(2, [*ARGS, f"train.output_dir={run}", f"data.cache_dir={tmp_path / 'cache'}"],
                        env={"CHECKBOX_DIST_RANK_TRACE": "1"})
    for rank, result in enumerate(results):
        assert result.rc == 0, f"rank {rank}: exit {result.rc}\n{result.out[-2000:]}\n{result.err[-3000:]}"
    saves = [json.loads((run / "debug" / f"rank{r}.json").read_text())["saves"] for r in (0, 1)]
    names = [(s["name"], s["step"]) for s in saves[0]]
    assert names == [(s["name"], s["step"]) for s in saves[1]]
    assert ("last", 2) in names and ("best", 6) in names and len(names) >= 6, names
    for ours, theirs in zip(*saves):
        assert ours["weights_sha256"] == theirs["weights_sha256"], (ours["name"], ours["step"])
        assert ours["raw_sha256"] == theirs["raw_sha256"], (ours["name"], ours["step"])
