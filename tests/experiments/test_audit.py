"""`checkbox-dist audit`: confident-learning ranking, the CLI's files, and deliberately mislabelled images.

The end-to-end test moves 3 synthetic images into the wrong class folder and audits out-of-fold
probabilities that know the images' true content (a stand-in for models that learned the classes: a tiny
CPU model cannot learn the synthetic classes within a test's seconds). Audit on a real `cv` output is
tested in test_cv.py. ~5 s.
"""

from __future__ import annotations

import csv
import json
import random
import shutil

import numpy as np
import pytest
from PIL import Image

from checkbox_dist.experiments.audit import rank_suspects
from checkbox_dist.cli import main as cli_main

CLASSES = ["checked", "other", "unchecked"]


def _row(path, given, probs, fold=0):
    return {"path": path, "given": given, "predicted": CLASSES[probs.index(max(probs))], "fold": fold, "probs": probs}


def test_thresholds_are_mean_self_confidence_and_flags_need_both_conditions():
    rows = [_row("a", "checked", [0.9, 0.05, 0.05]), _row("b", "checked", [0.7, 0.1, 0.2]),
            _row("c", "checked", [0.1, 0.1, 0.8]),   # the model says unchecked: flagged
            _row("d", "other", [0.1, 0.8, 0.1]), _row("e", "other", [0.3, 0.6, 0.1]),
            _row("f", "unchecked", [0.2, 0.0, 0.8]), _row("g", "unchecked", [0.45, 0.0, 0.55])]
    ranked, thresholds = rank_suspects(CLASSES, rows)
    assert thresholds["checked"] == pytest.approx((0.9 + 0.7 + 0.1) / 3)
    assert thresholds["unchecked"] == pytest.approx((0.8 + 0.55) / 2)
    by = {r["path"]: r for r in ranked}
    assert by["c"]["flagged"] and by["c"]["suggested"] == "unchecked" and by["c"]["margin"] == pytest.approx(0.7)
    # g: p(checked) 0.45 < threshold 0.567, so not flagged even though its given-label prob is low
    assert not by["g"]["flagged"]
    # e: p(checked) 0.3 is below the checked threshold; not flagged
    assert not by["e"]["flagged"]
    assert ranked[0]["path"] == "c" and [r["rank"] for r in ranked] == list(range(1, 8))
    margins = [r["margin"] for r in ranked[1:]]
    assert margins == sorted(margins, reverse=True)


@pytest.fixture()
def mislabelled(synth_root, tmp_path):
    """A copy of the 60 synthetic images with 3 moved into a wrong class folder, and OOF probabilities."""
    root = tmp_path / "data"
    shutil.copytree(synth_root, root, ignore=shutil.ignore_patterns("SYNTH.json"))
    moves = {"other/other_000001.png": "checked", "checked/checked_000003.png": "unchecked",
             "unchecked/unchecked_000005.png": "other"}
    wrong = []
    for rel, target in moves.items():
        name = rel.split("/")[1]
        shutil.move(root / rel, root / target / name)
        wrong.append(f"{target}/{name}")
    rng = random.Random(0)
    rows = []
    for path in sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.png")):
        truth = path.split("/")[1].split("_")[0]  # the file name keeps the class it was drawn as
        probs = [rng.uniform(0.0, 0.35) for _ in CLASSES]
        # the moved images are clear ones (a model would be as sure of them as of its best-seen images)
        probs[CLASSES.index(truth)] = 3.0 if path in wrong else rng.uniform(0.6, 1.0)
        total = sum(probs)
        probs = [p / total for p in probs]
        rows.append([path, path.split("/")[0], CLASSES[probs.index(max(probs))], rng.randrange(3),
                     *[f"{p:.6f}" for p in probs]])
    oof = tmp_path / "oof.csv"
    with oof.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "given", "predicted", "fold", *[f"p_{c}" for c in CLASSES]])
        writer.writerows(rows)
    return root, oof, wrong


def test_audit_ranks_moved_images_first_and_writes_sheet_csv_and_exclude_list(mislabelled, tmp_path, capsys):
    root, oof, wrong = mislabelled
    out = tmp_path / "audit"
    assert cli_main(["audit", "--data", str(root), "--oof", str(oof), "--out", str(out), "--top", "8",
                     "--known", wrong[0], "checked/checked_000000.png"]) == 0
    printed = capsys.readouterr().out
    with (out / "audit.csv").open(newline="") as handle:
        ranked = list(csv.DictReader(handle))
    assert len(ranked) == 60
    assert {r["path"] for r in ranked[:3]} == set(wrong)
    assert all(r["flagged"] == "1" for r in ranked[:3])
    truth = {r["path"]: r["path"].split("/")[1].split("_")[0] for r in ranked[:3]}
    assert all(r["suggested"] == truth[r["path"]] for r in ranked[:3])
    assert f"{wrong[0]}: rank " in printed and "checked/checked_000000.png: rank " in printed
    flagged = [line.split("#")[0].strip() for line in (out / "flagged.txt").read_text().splitlines()]
    assert set(wrong) <= {f for f in flagged if f}
    with Image.open(out / "suspects.png") as sheet:
        assert sheet.width >= 6 * 200 and sheet.height > 150
        # the first tile shows an image, not a blank cell
        assert len(np.unique(np.asarray(sheet.convert("RGB").crop((10, 40, 210, 140))).reshape(-1, 3), axis=0)) > 5
    # OOF score: the 3 moved images are predicted as what they show, not as labelled: 57 of 60 right.
    scores = json.loads((out / "scores.json").read_text())["average"]
    assert scores["top1"] == pytest.approx(57 / 60) and scores["n"] == 60
    assert sum(f["n"] for f in scores["per_fold"].values()) == 60
    assert sum(f["top1"] * f["n"] for f in scores["per_fold"].values()) == pytest.approx(57)
    assert "OOF top-1 95.0 %" in printed
    # averaging two OOF files (an ensemble) keeps the ranking of a consistent pair
    assert cli_main(["audit", "--data", str(root), "--oof", str(oof), "--oof", str(oof), "--out",
                     str(tmp_path / "a2")]) == 0
    with (tmp_path / "a2" / "audit.csv").open(newline="") as handle:
        assert [r["path"] for r in csv.DictReader(handle)] == [r["path"] for r in ranked]
    # an ensemble with a model that is wrong everywhere: the average follows the surer model per image
    flipped = tmp_path / "flipped.csv"
    with oof.open(newline="") as src, flipped.open("w", newline="") as dst:
        reader, writer = csv.reader(src), csv.writer(dst)
        writer.writerow(next(reader))
        for row in reader:  # probabilities rotated by one class: every prediction changes
            writer.writerow(row[:4] + row[5:7] + row[4:5])
    assert cli_main(["audit", "--data", str(root), "--oof", str(oof), "--oof", str(flipped), "--out",
                     str(tmp_path / "a3")]) == 0
    report = json.loads((tmp_path / "a3" / "scores.json").read_text())
    # rotated, each moved image's true class lands on the label it was moved to: 3 of 60 "right"
    assert [e["top1"] for e in report["each"]] == [pytest.approx(57 / 60), pytest.approx(3 / 60)]
    rows = {r[0]: [float(p) for p in r[4:]] for r in csv.reader(oof.open()) if r[0] != "path"}
    expected = sum((max(range(3), key=lambda k: (p[k] + p[(k + 1) % 3]) / 2) == CLASSES.index(path.split("/")[0]))
                   for path, p in rows.items()) / 60
    assert report["average"]["top1"] == pytest.approx(expected)


def test_audit_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["audit", "--data", str(tmp_path)]) == 2
    assert "--cv-dir" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert cli_main(["audit", "--data", str(tmp_path), "--oof", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not an out-of-fold CSV" in err and len(err.strip().splitlines()) == 1
