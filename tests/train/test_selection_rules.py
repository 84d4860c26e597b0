"""The best-model rules (train/selection.py) as behaviour: each rule picks the epoch it should on a scripted
sequence of val metrics, ties included; the seed's rule ("val loss lower and top-1 not lower") with early stopping
stops at the right epoch; the `best` checkpoint holds the weights of the epoch the rule chose; the run's closing
lines, summary.json, the checkpoint and the model card name the rule and the epoch, and a small val split is
called unreliable.

The runs are the real training loop (the `train` command, in this process) on a tiny model; only the val loss and
top-1 that `evaluate` returns are scripted, so the rule sees exactly the sequence below.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from checkbox_dist.train import loop
from checkbox_dist.infer import model_card
from checkbox_dist.train import selection
from checkbox_dist.train.selection import candidate, choose, closing_lines, is_better
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
                 "val_top1": [True, False, True, True, False, False, False, False],
                 "val_f1": [True, False, True, True, False, False, False, False],  # macro-F1 = top-1 below
                 "final": [True] * 8,
                 # trailing means of 3: .50 .475 (partial) | .517 .583 .633 .617 .600 .597: the first full window
                 # replaces the partial ones, then the highest mean
                 "val_top1_smooth": [True, False, True, True, True, False, False, False]}


def _apply(rule: str, script, k: int = 3) -> list[bool]:
    best, flags, recent = None, [], []
    for epoch, (loss, top1) in enumerate(script, start=1):
        recent.append(top1)
        metrics = candidate({"loss": loss, "top1": top1, "macro_f1": top1}, epoch, recent, k)
        flags.append(is_better(rule, metrics, best))
        if flags[-1]:
            best = metrics
    return flags


def _history(script) -> list[dict]:
    return [{"epoch": e, "loss": loss, "top1": top1, "macro_f1": top1} for e, (loss, top1) in enumerate(script, 1)]


@pytest.mark.parametrize("rule", sorted(EXPECTED_BEST))
def test_best_rules_on_the_scripted_sequence(rule):
    flags = _apply(rule, SCRIPT[:8])
    assert flags == EXPECTED_BEST[rule]
    kept = max(e for e, flag in enumerate(flags, start=1) if flag)
    assert choose(rule, _history(SCRIPT[:8]), 3) == kept  # the offline replay keeps the loop's epoch


def test_every_config_choice_has_a_rule_and_a_reason():
    from checkbox_dist.core.config_checks import CHOICES

    assert set(CHOICES["eval.best_rule"]) == set(selection.RULES) == set(selection.WHY)


@pytest.mark.parametrize("rule, kept", [("seed", 1), ("val_loss", 1), ("val_top1", 1), ("val_f1", 1),
                                        ("final", 3), ("val_top1_smooth", 3)])
def test_tie_policy_of_each_rule(rule, kept):
    """Three evaluations with the same loss, top-1 and macro-F1: the selecting rules keep the earlier epoch,
    except val_top1_smooth (ties to the later epoch) and final (always the last)."""
    assert choose(rule, _history([(0.5, 0.75)] * 3), 1) == kept


def test_val_top1_and_val_f1_break_a_tie_on_their_metric_by_the_lower_loss():
    script = [(0.9, 0.75), (0.8, 0.75), (0.85, 0.75)]
    assert choose("val_top1", _history(script), 3) == 2 and choose("val_f1", _history(script), 3) == 2


def test_the_smoothed_rule_uses_a_trailing_window_of_k_and_ties_go_to_the_later_epoch():
    # k=2 means: .50 (partial) | .625 .625 .625 .625: the first full window, then every tie moves to the later epoch
    script = [(1.0, 0.5), (1.0, 0.75), (1.0, 0.5), (1.0, 0.75), (1.0, 0.5)]
    assert choose("val_top1_smooth", _history(script), 2) == 5
    # one lucky evaluation does not win a window of 3; the steady run after it does
    spike = [(1.0, 0.6), (1.0, 0.6), (1.0, 0.95), (1.0, 0.6), (1.0, 0.6), (1.0, 0.8), (1.0, 0.8), (1.0, 0.8)]
    assert choose("val_top1", _history(spike), 3) == 3
    assert choose("val_top1_smooth", _history(spike), 3) == 8  # window (.8, .8, .8) beats (.6, .95, .6)
    assert choose("val_top1_smooth", _history(spike), 1) == 3  # k=1 is val_top1 with ties to the later
    assert choose("val_top1_smooth", _history(spike[:2]), 3) == 2  # fewer than k evaluations: the partial windows


def test_the_closing_lines_name_rule_and_epoch_and_call_a_small_val_split_unreliable():
    small = closing_lines("val_top1", 3, 4, 40, 55, 0.85)
    assert small[0].startswith("best: epoch 4 of 40 kept by eval.best_rule=val_top1 (highest val top-1")
    assert "checkpoints/last holds epoch 40" in small[0]
    # binomial std at p = .85, n = 55: 4.8 points
    assert small[1] == ("note: selection on 55 val images is unreliable (under 200: one evaluation's top-1 varies "
                        "by about +-4.8 points, and the best of many evaluations is the luckiest); "
                        "eval.best_rule=final keeps the final weights instead")
    assert len(closing_lines("val_top1", 3, 4, 40, 200, 0.85)) == 1  # 200 images and more: no note
    assert len(closing_lines("final", 3, 40, 40, 55, 0.85)) == 1  # nothing was selected
    assert "trailing window of 5" in closing_lines("val_top1_smooth", 5, 9, 40, 500, 0.9)[0]
    assert selection.binomial_std(1.0, 100) == pytest.approx(0.03)  # p kept in [0.1, 0.9]


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


def _scripted_run(tmp_path: Path, cache_dir: Path, monkeypatch, *extra: str):
    real = loop.evaluate
    calls = []

    def scripted(s, probe=False):
        metrics = real(s, probe)
        loss, top1 = SCRIPT[len(calls)]
        calls.append(1)
        return dict(metrics, loss=loss, top1=top1)

    monkeypatch.setattr(loop, "evaluate", scripted)
    out = tmp_path / "run"
    code, stdout, stderr = run_main(*tiny_train_args(
        out, cache_dir, "train.epochs=8", "checkpoint.keep_last=20", "data.batch_size=16", "optim.name=sgd",
        "optim.lr=0.05", "eval.calibrate=false", *extra))
    assert code == 0, stderr[-3000:]
    return out, stdout


def test_smoothed_rule_keeps_its_epochs_weights_and_the_run_names_rule_and_epoch(tmp_path: Path, cache_dir: Path,
                                                                                  monkeypatch):
    """eval.best_rule=val_top1_smooth, k=2, on the scripted top-1 .50 .45 .60 .70 .60 .55 .65 .59: trailing means
    .50 (partial) .475 .525 .65 .65 .575 .60 .62, so epoch 5 (a tie with epoch 4, to the later); val_top1 would
    keep epoch 4. `best` holds epoch 5's weights, `last` epoch 8's; the closing lines, summary.json, the best
    checkpoint and its model card name the rule and the epoch, and the 12-image val split is called unreliable."""
    out, stdout = _scripted_run(tmp_path, cache_dir, monkeypatch, "eval.best_rule=val_top1_smooth",
                                "eval.smooth_evals=2")
    rows = [r for r in read_metrics(out) if r["kind"] == "epoch"]
    assert [r["is_best"] for r in rows] == [True, True, True, True, True, False, False, False]
    ckpts = out / "checkpoints"
    best, last = load_weights(ckpts / "best"), load_weights(ckpts / "last")
    assert all(torch.equal(best[k], load_weights(ckpts / "epoch_0005")[k]) for k in best)
    assert not all(torch.equal(best[k], last[k]) for k in best)
    assert json.loads((ckpts / "last" / "meta.json").read_text())["epoch"] == 8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_epoch"] == 5 and summary["best_rule"] == "val_top1_smooth"
    assert summary["selection"] == {"rule": "val_top1_smooth", "smooth_evals": 2, "epoch": 5, "last_epoch": 8,
                                    "val_n": 12, "small_val": True, "why": selection.WHY["val_top1_smooth"].format(k=2)}
    assert ("best: epoch 5 of 8 kept by eval.best_rule=val_top1_smooth (highest mean val top-1 over a trailing "
            "window of 2 evaluations ending at it; ties go to the later epoch); checkpoints/last holds epoch 8"
            ) in stdout
    assert "note: selection on 12 val images is unreliable (under 200:" in stdout
    payload = torch.load(ckpts / "best" / "model.pt", weights_only=True)
    assert payload["metrics"]["selection"] == summary["selection"]
    text = model_card.card(payload, "m", "mit")
    assert ("epoch 5 of 8 kept by `eval.best_rule: val_top1_smooth` (highest mean val top-1 over a trailing window "
            "of 2 evaluations ending at it; ties go to the later epoch) on 12 val images (few images: the choice of "
            "epoch is noisy)") in text


def test_final_rule_keeps_the_last_weights_as_best(tmp_path: Path, cache_dir: Path, monkeypatch):
    out, stdout = _scripted_run(tmp_path, cache_dir, monkeypatch, "eval.best_rule=final",
                                "train.early_stopping_patience=2")  # final never stops early: nothing is "worse"
    ckpts = out / "checkpoints"
    best, last = load_weights(ckpts / "best"), load_weights(ckpts / "last")
    assert all(torch.equal(best[k], last[k]) for k in best)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_epoch"] == 8 and summary["selection"]["rule"] == "final"
    assert "best: epoch 8 of 8 kept by eval.best_rule=final (the last evaluated epoch, no selection)" in stdout
    assert "unreliable" not in stdout and "early stopping:" not in stdout
    assert ("note: eval.best_rule=final keeps every evaluation as the new best, so train.early_stopping_patience=2 "
            "never stops this run (it trains all train.epochs)") in stdout
