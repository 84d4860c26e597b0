"""The evaluation metrics (core/metrics.py) against independent computations: hand-computed cases for ECE and
per-class precision/recall/F1 (scikit-learn's definitions, zero_division=0), plain-Python loops on random data,
and the temperature fit against a NumPy grid search of the validation NLL. scikit-learn is not a dependency,
so its definitions are written out here rather than imported."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from checkbox_dist.core.metrics import classification_metrics, expected_calibration_error, fit_temperature

CLASSES = ["checked", "other", "unchecked"]


def test_ece_of_a_hand_computed_case():
    """5 bins of width 0.2, each (low, high]. (0.8, 1]: confidences 0.9 (right), 0.9 (wrong), 1.0 (wrong: a bin's
    upper edge belongs to it) -> |1/3 - 0.9333| x 3/6; (0.6, 0.8]: 0.7 (wrong) -> 0.7 x 1/6; (0.4, 0.6]: 0.5
    (right) and 0.5 (wrong) -> |0.5 - 0.5| x 2/6 = 0."""
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [1.0, 0.0, 0.0],
                          [0.1, 0.7, 0.2], [0.3, 0.2, 0.5], [0.5, 0.3, 0.2]])
    labels = torch.tensor([0, 1, 1, 0, 2, 1])
    expected = abs(1 / 3 - (0.9 + 0.9 + 1.0) / 3) * 3 / 6 + 0.7 * 1 / 6 + 0.0
    assert expected_calibration_error(probs, labels, bins=5) == pytest.approx(expected, abs=1e-6)
    # perfectly calibrated: in each bin the accuracy equals the confidence
    calibrated = torch.tensor([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]])
    assert expected_calibration_error(calibrated, torch.tensor([0, 1]), bins=5) == pytest.approx(0.0, abs=1e-7)


def _ece_loop(probs: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """Guo et al.'s ECE, one sample at a time: bin b holds confidences in (b/bins, (b+1)/bins]."""
    totals = [[0, 0.0, 0.0] for _ in range(bins)]  # n, correct, confidence sum
    for row, label in zip(probs, labels):
        conf = float(row.max())
        b = min(bins - 1, max(0, math.ceil(conf * bins) - 1))
        totals[b][0] += 1
        totals[b][1] += float(int(row.argmax()) == int(label))
        totals[b][2] += conf
    return sum(abs(c / n - s / n) * n / len(labels) for n, c, s in totals if n)


def test_ece_matches_a_per_sample_loop_on_random_data():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 3, generator=generator, dtype=torch.float64) * 2
    labels = torch.randint(0, 3, (500,), generator=generator)
    probs = torch.softmax(logits, 1)
    for bins in (15, 7):
        ours = expected_calibration_error(probs.float(), labels, bins)
        assert ours == pytest.approx(_ece_loop(probs.numpy(), labels.numpy(), bins), abs=1e-5), bins
    # and classification_metrics reports the ECE of the calibrated probabilities, softmax(logits / T)
    reported = classification_metrics(logits, labels, CLASSES, ece_bins=15, temperature=2.0)["ece"]
    assert reported == pytest.approx(_ece_loop(torch.softmax(logits / 2, 1).numpy(), labels.numpy(), 15), abs=1e-5)


def _logits_for(predicted: list[int]) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(predicted), 3).float() * 5


def test_per_class_precision_recall_f1_of_a_hand_computed_case():
    """true:      c c c c o o u u u u
       predicted: c c o u o c u u c c
    checked:   tp 2, predicted 5 -> P 2/5, true 4 -> R 2/4, F1 = 2PR/(P+R) = 4/9
    other:     tp 1, predicted 2 -> P 1/2, true 2 -> R 1/2, F1 1/2
    unchecked: tp 2, predicted 3 -> P 2/3, true 4 -> R 2/4, F1 4/7"""
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    got = classification_metrics(_logits_for([0, 0, 1, 2, 1, 0, 2, 2, 0, 0]), labels, CLASSES)
    expected = {"checked": (2 / 5, 2 / 4, 4 / 9, 4), "other": (1 / 2, 1 / 2, 1 / 2, 2),
                "unchecked": (2 / 3, 2 / 4, 4 / 7, 4)}
    for name, (p, r, f1, support) in expected.items():
        row = got["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p, r, f1), abs=1e-6), name
        assert row["support"] == support
    assert got["macro_f1"] == pytest.approx((4 / 9 + 1 / 2 + 4 / 7) / 3, abs=1e-6)
    assert got["top1"] == pytest.approx(5 / 10) and got["confusion"] == [[2, 1, 1], [1, 1, 0], [2, 0, 2]]


def test_a_class_never_predicted_and_one_never_seen_score_zero():
    """scikit-learn's zero_division=0: no prediction of a class -> precision 0; no true sample -> recall 0;
    F1 0 when precision + recall is 0."""
    labels = torch.tensor([0, 0, 1, 1])
    got = classification_metrics(_logits_for([0, 0, 0, 2]), labels, CLASSES)["per_class"]
    assert got["checked"]["precision"] == pytest.approx(2 / 3) and got["checked"]["recall"] == 1.0
    assert got["other"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}  # never predicted
    assert got["unchecked"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}  # never true


def test_per_class_scores_match_counting_loops_on_random_data():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(300, 3, generator=generator)
    labels = torch.randint(0, 3, (300,), generator=generator)
    got = classification_metrics(logits, labels, CLASSES)
    predicted = logits.argmax(1).tolist()
    for c, name in enumerate(CLASSES):
        tp = sum(p == c and y == c for p, y in zip(predicted, labels.tolist()))
        fp = sum(p == c and y != c for p, y in zip(predicted, labels.tolist()))
        fn = sum(p != c and y == c for p, y in zip(predicted, labels.tolist()))
        precision, recall = tp / (tp + fp), tp / (tp + fn)
        f1 = 2 * tp / (2 * tp + fp + fn)  # the same number as 2PR/(P+R), computed another way
        row = got["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision, recall, f1), abs=1e-6)
        assert row["support"] == tp + fn


def _nll(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    z = logits / t
    z = z - z.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(labels)), labels]))


def test_temperature_fit_finds_the_nll_minimum_of_a_grid_search():
    """Labels drawn from softmax(z), logits 3z (over-confident by 3): the fit is the grid's NLL minimum (which is
    near 3), and its NLL is no higher than any grid point's."""
    rng = np.random.default_rng(2)
    z = rng.normal(size=(2000, 3)) * 1.5
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    labels = (rng.random((len(p), 1)) > p.cumsum(1)).sum(1).clip(0, 2)  # one draw from each row of p
    logits = 3 * z
    t = fit_temperature(torch.from_numpy(logits).float(), torch.from_numpy(labels))
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 1501))  # steps of 0.4 %
    nll = [_nll(logits, labels, g) for g in grid]
    best = float(grid[int(np.argmin(nll))])
    assert t == pytest.approx(best, rel=0.005) and 2.5 < t < 3.5
    assert _nll(logits, labels, t) <= min(nll) + 1e-6


def test_temperature_fit_stays_in_its_range_on_separable_data():
    """All val images right with a margin: the NLL falls towards 0 as T -> 0. The fit stays within its 0.05..20
    clamp and reaches the infimum (its NLL within 1e-6 of 0); on data that is always wrong, the NLL falls as T
    grows and the fit goes to the top of the range."""
    labels = torch.tensor([0, 1, 2] * 10)
    logits = torch.nn.functional.one_hot(labels, 3).float() * 4
    t = fit_temperature(logits, labels)
    assert 0.05 <= t < 1 and _nll(logits.numpy(), labels.numpy(), t) < 1e-6
    wrong = fit_temperature(logits, (labels + 1) % 3)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 1501))
    nll = [_nll(logits.numpy(), ((labels + 1) % 3).numpy(), g) for g in grid]
    assert wrong <= 20 and _nll(logits.numpy(), ((labels + 1) % 3).numpy(), wrong) <= min(nll) + 1e-4
