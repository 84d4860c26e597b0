"""Hosts with their own disks (docs/LAUNCH.md, "Several hosts"): two "machines" on this one, each with its own HOME
and so its own data.cache_dir (synthetic images, decoded cache), one shared output folder.

    .venv/bin/pytest tests/train/test_hosts.py -q

Each host is one process, started as `torchrun --nnodes 2 --node_rank r --nproc_per_node 1` starts it on its machine
(RANK r, LOCAL_RANK 0, GROUP_RANK r; tests/reliability_harness.py: start_hosts), so both are their host's local main
process. The recipe is the shipped two-stage config (configs/checkbox_state_v2.yaml) at a tiny scale: `test_resnet`
at 32 px, stage one 1 epoch on 48 synthetic images, the fine-tune 2 epochs on 60.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from reliability_harness import REPO, one_line_error, start_hosts

pytestmark = pytest.mark.system  # a real 2-process gloo world

TWO_STAGE = ["train", "--config", str(REPO / "configs" / "checkbox_state_v2.yaml"), "model.name=test_resnet",
             "data.root=", "data.synth_n=60", "data.image_size=32", "data.batch_size=8", "data.num_workers=0",
             "train.global_batch_size=16", "train.epochs=2", "train.mixed_precision=no", "train.channels_last=false",
             "train.progress=false", "train.log_every_steps=1", "tracking.backends=[]", "pretrain.synth_n=48",
             "pretrain.epochs=1", "pretrain.batch_size=8", "pretrain.global_batch_size=16", "eval.calibrate=false"]


def hosts(tmp: Path, *extra: str, expect: int, timeout: float = 120) -> list:
    homes = [tmp / f"home{r}" for r in (0, 1)]
    for home in homes:
        home.mkdir(exist_ok=True)
    env = {"CHECKBOX_DIST_RANK_TRACE": "1", "CHECKBOX_DIST_FAULT": None}
    children = start_hosts([*TWO_STAGE, *extra], [dict(env, HOME=str(home)) for home in homes])
    results = [child.wait(timeout) for child in children]
    for rank, result in enumerate(results):
        assert result.rc == expect, (f"host {rank}: exit {result.rc}, expected {expect}\n{result.out[-3000:]}\n"
                                     f"{result.err[-3000:]}")
    return results


def test_two_hosts_with_their_own_caches_train_the_two_stage_recipe_and_resume_together(tmp_path: Path):
    run = tmp_path / "shared" / "run"
    run.mkdir(parents=True)
    (run / "STOP").touch()  # a stop request at the fine-tune's first step: both save `last` and exit 75
    stopped = hosts(tmp_path, f"train.output_dir={run}", expect=75)
    log = stopped[0].out
    # Stage one was trained once, by both processes together, into the shared run folder (the caches are
    # per host), from synthetic images that each host generated into its own cache.
    assert log.count("pretrain: stage one, 1 epochs on 48 synthetic images") == 1, log[-3000:]
    assert "pretrain: stage one" not in stopped[1].out, stopped[1].out[-3000:]
    (stage,) = [p for p in (run / "pretrain").iterdir() if p.is_dir()]
    assert (stage / "summary.json").is_file() and (stage / "checkpoints" / "last").is_dir()
    for home in ("home0", "home1"):
        cache = tmp_path / home / ".cache" / "checkbox_dist"
        assert (cache / "synth-n48-s0" / "checked").is_dir() and (cache / "synth-n60-s0" / "checked").is_dir()
        assert not (cache / "pretrain").exists()
    config = (run / "config.yaml").read_text()
    assert f"init_from: {stage / 'checkpoints' / 'last'}" in config
    assert (run / "checkpoints" / "last").is_dir()

    resumed = hosts(tmp_path, f"train.output_dir={run}", "train.resume=auto", expect=0)
    assert f"pretrain: reusing {stage}" in resumed[0].out and "stage one" not in resumed[0].out
    traces = [json.loads((run / "debug" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert traces[0]["resumed"] == traces[1]["resumed"] == {"from": str(run / "checkpoints" / "last"),
                                                            "epoch": 1, "global_step": 1}, traces
    assert traces[0]["weights_sha256"] == traces[1]["weights_sha256"]
    assert (run / "summary.json").is_file()


def test_an_output_folder_that_only_host_0_sees_fails_on_every_host_with_one_line(tmp_path: Path):
    """`~/out`: the same path on both hosts, a different folder on each (a node-local disk)."""
    started = time.monotonic()
    results = hosts(tmp_path, "train.output_dir=~/out", expect=2, timeout=60)
    seconds = time.monotonic() - started
    for rank, result in enumerate(results):
        line = one_line_error(result)
        assert "must be on a filesystem every host shares" in line and "train.output_dir" in line, (rank, line)
        assert "process 1 of 2" in line, line
    assert seconds < 30, seconds  # no hang: both fail at the check, before stage one or any data
    assert not (tmp_path / "home0" / "out").exists()  # the folder the failed run created is removed
    assert not (tmp_path / "home0" / ".cache" / "checkbox_dist" / "pretrain").exists()
