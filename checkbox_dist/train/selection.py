"""The best-model rules (`eval.best_rule`): which evaluated epoch `checkpoints/best` keeps, and what a run says
about that choice at its end. `checkpoints/last` (the final weights) is saved whatever the rule.

Each rule compares the evaluation just made (`candidate`) with the best one so far, so `best` is saved the
moment an epoch wins and no earlier epoch's weights have to be kept. The rules and their ties:

    seed             val loss strictly lower AND top-1 not lower (the seed write-up's rule); a tie on the loss
                     keeps the earlier epoch
    val_loss         val loss strictly lower; a tie keeps the earlier epoch
    val_top1         val top-1 higher; equal top-1 goes to the lower val loss; a tie on both keeps the earlier
    val_f1           val macro-F1 higher, then as val_top1
    val_top1_smooth  the trailing mean of val top-1 over the last `eval.smooth_evals` (k) evaluations, this one
                     and the k-1 before it, higher OR EQUAL: ties go to the later epoch. The weights kept are
                     those of the window's last epoch (a trailing window decides when its last evaluation is
                     made; a centred one would need an epoch's weights k/2 evaluations later). Before k
                     evaluations exist the window is the ones there are, and the first full window replaces
                     any partial one.
    final            every evaluation wins: `best` is the last evaluated epoch, the same weights as `last`

`choose` replays a recorded history of evaluations through the same comparison (benchmarks/best_rule.py uses it
on cv --outer-history runs).

A small validation split: one evaluation's top-1 on n images has a binomial standard deviation of
sqrt(p (1 - p) / n), 2.5 points at p = 0.85 and n = 200, and the best of E evaluations sits about
sqrt(2 ln E) of those above its epoch's true score (2.7 for E = 40): on fewer than SMALL_VAL images the luck of
the pick is larger than the differences between the late epochs of a fine-tune, so the run says so.
"""

from __future__ import annotations

import math

RULES = ("seed", "val_loss", "val_top1", "val_f1", "val_top1_smooth", "final")
SMALL_VAL = 200  # val images below which the closing lines call selection unreliable (see above)

WHY = {"seed": "val loss lower and top-1 not lower than every earlier epoch; ties keep the earlier",
       "val_loss": "lowest val loss; ties keep the earlier epoch",
       "val_top1": "highest val top-1, then lowest val loss; ties keep the earlier epoch",
       "val_f1": "highest val macro-F1, then lowest val loss; ties keep the earlier epoch",
       "val_top1_smooth": "highest mean val top-1 over a trailing window of {k} evaluations ending at it; ties "
                          "go to the later epoch",
       "final": "the last evaluated epoch, no selection"}


def candidate(metrics: dict, epoch: int, recent_top1: list[float], k: int) -> dict:
    """What the rules compare for one evaluation: its loss, top-1, macro-F1, epoch, and the trailing window's
    mean top-1 (`recent_top1`: the top-1 of the evaluations so far, this one last; the last k count)."""
    window = recent_top1[-k:]
    return {"loss": metrics["loss"], "top1": metrics["top1"], "macro_f1": metrics["macro_f1"], "epoch": epoch,
            "top1_smooth": sum(window) / len(window), "window_full": len(window) >= k}


def is_better(rule: str, metrics: dict, best: dict | None) -> bool:
    """Whether the evaluation `metrics` (a `candidate`) replaces `best` (None: nothing yet) under `rule`."""
    if best is None or rule == "final":
        return True
    if rule == "seed":
        return metrics["loss"] < best["loss"] and metrics["top1"] >= best["top1"]
    if rule == "val_loss":
        return metrics["loss"] < best["loss"]
    if rule == "val_top1":
        return (metrics["top1"], -metrics["loss"]) > (best["top1"], -best["loss"])
    if rule == "val_f1":
        return (metrics["macro_f1"], -metrics["loss"]) > (best["macro_f1"], -best["loss"])
    if rule == "val_top1_smooth":  # .get: a best saved by a run resumed from before the rule existed
        return ((metrics["window_full"], metrics["top1_smooth"])
                >= (best.get("window_full", False), best.get("top1_smooth", best["top1"])))
    raise ValueError(f"unknown eval.best_rule {rule!r}")


def choose(rule: str, history: list[dict], k: int) -> int | None:
    """The epoch `rule` keeps from `history` (one dict per evaluation, in order: epoch, loss, top1, macro_f1),
    as the training loop would have kept it; None for an empty history."""
    best, recent = None, []
    for row in history:
        recent.append(row["top1"])
        c = candidate(row, row["epoch"], recent, k)
        if is_better(rule, c, best):
            best = c
    return best["epoch"] if best else None


def patience_note(rule: str, patience: int) -> list[str]:
    """The start-of-run note when train.early_stopping_patience cannot fire: under `final` every evaluation is a new
    best, so no evaluation ever counts as "no new best"."""
    if rule != "final" or not patience:
        return []
    return [f"note: eval.best_rule=final keeps every evaluation as the new best, so train.early_stopping_patience="
            f"{patience} never stops this run (it trains all train.epochs)"]


def binomial_std(top1: float, n: int) -> float:
    """The standard deviation of a top-1 measured on n images; p is kept in [0.1, 0.9] (a perfect score on a
    few images is no evidence of a zero spread)."""
    p = min(max(top1, 0.1), 0.9)
    return math.sqrt(p * (1 - p) / max(1, n))


def closing_lines(rule: str, k: int, epoch: int, last_epoch: int, n_val: int, top1: float) -> list[str]:
    """The run's closing lines about `best`: the epoch kept, by which rule and why; below SMALL_VAL val images,
    that the choice rests on few images and where the final weights are."""
    lines = [f"best: epoch {epoch} of {last_epoch} kept by eval.best_rule={rule} ({WHY[rule].format(k=k)}); "
             f"checkpoints/last holds epoch {last_epoch}"]
    if n_val < SMALL_VAL and rule != "final":
        lines.append(f"note: selection on {n_val} val images is unreliable (under {SMALL_VAL}: one evaluation's "
                     f"top-1 varies by about +-{100 * binomial_std(top1, n_val):.1f} points, and the best of many "
                     f"evaluations is the luckiest); eval.best_rule=final keeps the final weights instead")
    return lines


def selection_record(rule: str, k: int, epoch: int, last_epoch: int, n_val: int) -> dict:
    """summary.json's and the best checkpoint's `selection` block (the model card names the rule and epoch)."""
    return {"rule": rule, "smooth_evals": k if rule == "val_top1_smooth" else None, "epoch": epoch,
            "last_epoch": last_epoch, "val_n": n_val, "why": WHY[rule].format(k=k),
            "small_val": n_val < SMALL_VAL}
