"""The seed's defaults as behaviour: its best-model rule ("val loss lower and top-1 not lower") picks the epoch it
should on a scripted sequence of val metrics, early stopping with patience stops at the right epoch, and the
`best` checkpoint holds the weights of the epoch the rule chose.

The run is the real training loop (the `train` command, in this process) on a tiny model; only the val loss and
top-1 that `evaluate` returns are scripted, so the rule sees exactly the sequence below.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from checkbox_dist.train import loop
from checkbox_dist.train.evaluation import is_better
from conftest import load_weights, read_metrics, run_main, tiny_train_args

# (val loss, val top-1) per epoch, and why each is or is not a new best under the seed's rule.
SCRIPT = [
    (1.00, 0.50),  # 1: first evaluation: best
    (0.90, 0.45),  # 2: loss lower but top-1 lower: not best (val_loss alone would take it)
    (0.95, 0.60),  # 3: loss 0.95 < 1.00 and top-1 0.60 >= 0.50: best
    (0.95, 0.70),  # 4: loss equal, not lower: not best (val_top1 would take it)
    (0.80, 0.60),  # 5: loss lower, top-1 equal ("not lower"): best
    (0.70, 0.55),  # 6: top-1 lower: not best                       bad epochs 1
    (0.85, 0.65),  # 7: loss higher: not best                        bad epochs 2
    (0.60, 0.59),  # 8: top-1 lower: not best                        bad epochs 3 = patience: stop
    (0.10, 0.99),  # 9: never reached
]
SEED_BEST = [True, False, True, False, True, False, False, False]
EXPECTED_BEST = {"seed": SEED_BEST,
                 "val_loss": [True, True, False, False, True, True, False, True],
                 "val_top1": [True, False, True, True, False, False, False, False]}


def _apply(rule: str, script) -> list[bool]:
    best, flags = None, []
    for loss, top1 in script:
        metrics = {"loss": loss, "top1": top1, "macro_f1": top1}
        flags.append(is_better(rule, metrics, best))
        if flags[-1]:
            best = metrics
    return flags


@pytest.mark.parametrize("rule", sorted(EXPECTED_BEST))
def test_best_rules_on_the_scripted_sequence(rule):
    assert _apply(rule, SCRIPT[:8]) == EXPECTED_BEST[rule]


def test_seed_rule_picks_its_epoch_and_patience_stops_the_run(tmp_path: Path, cache_dir: Path, monkeypatch):
    real = loop.evaluate
    epochs_seen = []

    def scripted(s):
        metrics = real(s)  # the real evaluation (per-class numbers, confusion), then the scripted loss and top-1
        loss, top1 = SCRIPT[len(epochs_seen)]
        epochs_seen.append(len(epochs_seen) + 1)
        return dict(metrics, loss=loss, top1=top1)

    monkeypatch.setattr(loop, "evaluate", scripted)
    out = tmp_path / "run"
    code, stdout, stderr = run_main(*tiny_train_args(
        out, cache_dir, "train.epochs=12", "train.early_stopping_patience=3", "eval.best_rule=seed",
        "checkpoint.keep_last=20", "data.batch_size=16", "optim.name=sgd", "optim.lr=0.05", "eval.calibrate=false"))
    assert code == 0, stderr[-3000:]
    rows = [r for r in read_metrics(out) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in rows] == list(range(1, 9)) and epochs_seen == list(range(1, 9))
    assert [r["is_best"] for r in rows] == SEED_BEST
    assert "early stopping: no new best for 3 epochs (best epoch 5)" in stdout
    best = out / "checkpoints" / "best"
    assert json.loads((best / "meta.json").read_text())["epoch"] == 5
    assert torch.load(best / "model.pt", weights_only=True)["metrics"]["val_loss"] == 0.80
    chosen, later = load_weights(out / "checkpoints" / "epoch_0005"), load_weights(out / "checkpoints" / "epoch_0008")
    weights = load_weights(best)
    assert all(torch.equal(weights[k], chosen[k]) for k in weights)
    assert not all(torch.equal(weights[k], later[k]) for k in weights)  # the rule's epoch, not the last one
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_epoch"] == 5 and summary["stopped_early"] is True
    assert not (out / "checkpoints" / "epoch_0009").exists()
