"""The recipe and the runs that tests/train/test_launch_invariance.py and tests/train/test_elastic_resume.py share:
one AdamW recipe, trained once per world size per pytest session (the conftest fixture `adamw_runs`).

BASE: `test_resnet` at 32 px on 160 synthetic training images (of `data.synth_n=200`), global batch 32 of
micro-batches of 8, 7 optimizer steps (the 5 of epoch 1, then 2 of epoch 2, reshuffled), the quickstart config's
augmentation on. ADAMW: AdamW lr 0.002 in fp32 with drop-path 0.1, EMA 0.9, the cosine schedule's warmup and
channels_last. The tests train it with exact gradient sums (EXACT, `train.exact_gradient_sum`): AdamW turns a
last-bit difference of a float32 sum into steps of about lr now and then (docs/LAUNCH.md, "Tolerance, measured").

`AdamWRuns[world]` trains ADAMW + EXACT on `world` processes (a real gloo world, tests/reliability_harness.py:
run_world) the first time a test asks for it, with CHECKBOX_DIST_RANK_TRACE=weights (the weights after every
optimizer step, RUN/debug/steps/<step>.pt), and returns the run folder from then on: launch invariance compares
worlds 1, 2 and 4; elastic resume takes world 2 as its uninterrupted reference. Run together (as CI runs the
suite) the two files share the 3 runs; a file run alone trains the worlds it asks for.
"""

from __future__ import annotations

from pathlib import Path

from reliability_harness import REPO, Result, run_world

STEPS = 7  # the elastic stop lands in step 3 and the epoch boundary after step 5: a resume crosses it
BASE = ["train", "--config", str(REPO / "configs" / "quickstart.yaml"), "model.name=test_resnet", "data.image_size=32",
        "data.num_workers=0", "train.progress=false", "tracking.backends=[]", "data.synth_n=200", "data.synth_seed=3",
        "train.global_batch_size=32", "data.batch_size=8", "train.epochs=2", f"train.max_steps={STEPS}",
        "eval.calibrate=false", "train.log_every_steps=1"]
EXACT = "train.exact_gradient_sum=true"
ADAMW = ["optim.name=adamw", "optim.lr=0.002", "model.drop_path_rate=0.1", "train.ema_decay=0.9",
         "schedule.name=cosine", "schedule.warmup_epochs=1", "train.channels_last=true"]
TRACE = {"CHECKBOX_DIST_RANK_TRACE": "weights"}


def train(world: int, out: Path, cache: Path, *extra: str, env: dict | None = None,
          expect: int | None = 0) -> list[Result]:
    """BASE + `extra` on `world` processes into `out`; asserts every process exits `expect` (None: not checked)."""
    results = run_world(world, [*BASE, f"train.output_dir={out}", f"data.cache_dir={cache}", *extra], env=env)
    if expect is not None:
        for rank, result in enumerate(results):
            assert result.rc == expect, (f"rank {rank} of {world}: exit {result.rc}, expected {expect}\n"
                                         f"{result.out[-2000:]}\n{result.err[-3000:]}")
    return results


class AdamWRuns:
    """ADAMW + EXACT trained once per world size, on first request; `.root` holds the runs, `.cache` their data cache
    (which the tests' other runs share)."""

    def __init__(self, root: Path):
        self.root, self.cache = root, root / "cache"
        self._runs: dict[int, Path | AssertionError] = {}

    def __getitem__(self, world: int) -> Path:
        if world not in self._runs:
            out = self.root / f"adamw-{world}"
            try:
                train(world, out, self.cache, *ADAMW, EXACT, env=TRACE)
                self._runs[world] = out
            except AssertionError as failed:  # every test that needs the run fails with it, none trains it again
                self._runs[world] = failed
        if isinstance(self._runs[world], AssertionError):
            raise self._runs[world]
        return self._runs[world]
