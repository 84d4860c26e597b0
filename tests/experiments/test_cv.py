"""`checkbox-dist cv` through the real CLI on 60 synthetic images (test_resnet, 32 px, 1 epoch, 3 folds).

One CV run (first folds 0 and 1 with --fold, then the rest) is shared by the tests; ~40-60 s in all on 2 cores.
"""

from __future__ import annotations

import csv
import json
import runpy
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY, run_cli
from checkbox_dist.cli import main as cli_main

EXCLUDED = ["checked/checked_000000.png", "other/other_000001.png"]


def _cv_args(root: Path, out: Path, cache_dir: Path, *extra: str) -> list[str]:
    return ["cv", "--config", str(REPO / "configs" / "quickstart.yaml"), "--folds", "3", "--out", str(out), *TINY,
            "train.epochs=1", f"data.root={root}", f"data.cache_dir={cache_dir}", "data.batch_size=16", *extra]


@pytest.fixture(scope="module")
def cv_run(synth_root, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cv") / "out"
    exclude = out.parent / "exclude.txt"
    exclude.write_text("# leave these out\n" + "\n".join(EXCLUDED) + "\n")
    args = _cv_args(synth_root, out, cache_dir, f"data.exclude_file={exclude}")
    partial = run_cli(*args, "--fold", "0", "--fold", "1")
    full = run_cli(*args)
    return {"out": out, "root": synth_root, "args": args, "partial": partial, "full": full, "exclude": exclude}


def _all_images(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.glob("*/*.png")} - set(EXCLUDED)


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_partial_run_defers_the_summary_and_the_full_run_reuses_finished_folds(cv_run):
    assert "not done yet" in cv_run["partial"].stdout
    assert "---- fold 3/3" not in cv_run["partial"].stdout
    full = cv_run["full"].stdout
    assert "fold 0: done before, kept" in full and "fold 1: done before, kept" in full
    assert "---- fold 3/3" in full and "---- fold 1/3" not in full
    assert "mean±std" in full and "cv top-1" in full


def test_folds_are_disjoint_cover_everything_once_and_are_stratified(cv_run):
    out, root = cv_run["out"], cv_run["root"]
    everything = _all_images(root)
    vals = []
    for i in range(3):
        fold = json.loads((out / "folds" / f"fold_{i}.json").read_text())
        train = {p for p, _ in fold["train"]}
        val = {p for p, _ in fold["val"]}
        assert not train & val
        assert train | val == everything  # exclusions honoured: neither trained on nor predicted
        for path, label in fold["train"] + fold["val"]:
            assert path.split("/")[0] == label
        counts = {c: sum(1 for _, y in fold["val"] if y == c) for c in fold["classes"]}
        assert max(counts.values()) - min(counts.values()) <= 1, counts
        vals.append(val)
    assert set().union(*vals) == everything
    assert sum(len(v) for v in vals) == len(everything)
    sizes = [len(v) for v in vals]
    assert max(sizes) - min(sizes) <= 1


def test_every_image_is_predicted_exactly_once_out_of_fold(cv_run):
    out, root = cv_run["out"], cv_run["root"]
    rows = _read_csv(out / "oof_predictions.csv")
    assert sorted(r["path"] for r in rows) == sorted(_all_images(root))
    for r in rows:
        fold = json.loads((out / "folds" / f"fold_{r['fold']}.json").read_text())
        assert [r["path"], r["given"]] in fold["val"]
        probs = {k[2:]: float(v) for k, v in r.items() if k.startswith("p_")}
        assert abs(sum(probs.values()) - 1) < 1e-4
        assert r["predicted"] == max(probs, key=probs.get)


def test_summary_equals_recomputation_from_the_oof_csv(cv_run):
    out = cv_run["out"]
    rows = _read_csv(out / "oof_predictions.csv")
    summary = json.loads((out / "cv_summary.json").read_text())
    classes = summary["classes"]
    top1s, macro = [], []
    f1s = {c: [] for c in classes}
    for i in range(3):
        fold = [r for r in rows if int(r["fold"]) == i]
        top1s.append(sum(r["given"] == r["predicted"] for r in fold) / len(fold))
        per = []
        for c in classes:
            tp = sum(r["given"] == c and r["predicted"] == c for r in fold)
            fp = sum(r["given"] != c and r["predicted"] == c for r in fold)
            fn = sum(r["given"] == c and r["predicted"] != c for r in fold)
            f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
            f1s[c].append(f1)
            per.append(f1)
        macro.append(sum(per) / len(per))
        confusion = [[sum(r["given"] == a and r["predicted"] == b for r in fold) for b in classes] for a in classes]
        assert summary["per_fold"][i]["confusion"] == confusion
    assert summary["top1"]["mean"] == pytest.approx(statistics.mean(top1s))
    assert summary["top1"]["std"] == pytest.approx(statistics.stdev(top1s))
    assert summary["macro_f1"]["mean"] == pytest.approx(statistics.mean(macro))
    for c in classes:
        assert summary["per_class_f1"][c]["mean"] == pytest.approx(statistics.mean(f1s[c]))
    assert summary["pooled_oof"]["top1"] == pytest.approx(sum(r["given"] == r["predicted"] for r in rows) / len(rows))
    assert (out / "confusion_oof.png").stat().st_size > 1000
    assert f"{summary['top1']['mean']:.4f} ± {summary['top1']['std']:.4f}" in cv_run["full"].stdout


def test_each_fold_trained_and_validated_on_exactly_its_split(cv_run):
    out = cv_run["out"]
    summary = json.loads((out / "cv_summary.json").read_text())
    for i in range(3):
        fold = json.loads((out / "folds" / f"fold_{i}.json").read_text())
        log = (out / f"fold_{i}" / "log.txt").read_text()
        assert f"train {len(fold['train'])} (" in log and f"val {len(fold['val'])} (" in log
        run_summary = json.loads((out / f"fold_{i}" / "summary.json").read_text())
        # selection=final: the checkpoint is the last epoch, so the loop's own val score is the OOF score
        assert run_summary["best_epoch"] == 1
        assert run_summary["val_top1"] == pytest.approx(summary["per_fold"][i]["top1"], abs=1e-6)


def test_rerun_into_the_same_folder_with_other_settings_is_one_clear_error(cv_run, capsys):
    args = list(cv_run["args"])
    args[args.index("--folds") + 1] = "4"
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "folds=3" in err


def test_audit_of_the_cv_output_ranks_every_image(cv_run, capsys):
    out = cv_run["out"]
    assert cli_main(["audit", "--cv-dir", str(out), "--top", "4"]) == 0
    with (out / "audit" / "audit.csv").open(newline="") as handle:
        ranked = list(csv.DictReader(handle))
    assert sorted(r["path"] for r in ranked) == sorted(_all_images(cv_run["root"]))
    assert [int(r["rank"]) for r in ranked] == list(range(1, len(ranked) + 1))
    assert (out / "audit" / "suspects.png").stat().st_size > 1000


def test_train_exclude_leaves_images_out_of_training_but_scores_them(synth_root, cache_dir, tmp_path, capsys):
    """--train-exclude (audit's flagged list): out of every training part, still in the held-out part and the
    OOF file, so the score covers every image. Fold 0 only (~15 s); unknown paths and a changed list are errors."""
    out, flagged = tmp_path / "out", tmp_path / "flagged.txt"
    held_out = [p.relative_to(synth_root).as_posix() for c in ("checked", "other", "unchecked")
                for p in sorted((synth_root / c).glob("*.png"))[:3]]
    flagged.write_text("\n".join(held_out) + "\n")
    args = _cv_args(synth_root, out, cache_dir, "--train-exclude", str(flagged), "--fold", "0")
    assert cli_main(args) == 0
    assert f"{len(held_out)} images left out of every fold's training" in capsys.readouterr().out
    fold = json.loads((out / "folds" / "fold_0.json").read_text())
    train, val = {p for p, _ in fold["train"]}, {p for p, _ in fold["val"]}
    assert not train & set(held_out) and train | val | set(held_out) == {
        p.relative_to(synth_root).as_posix() for p in synth_root.glob("*/*.png")}
    scored = {r["path"] for r in _read_csv(out / "fold_0" / "oof.csv")}
    assert scored == val and val & set(held_out), (len(val & set(held_out)), len(held_out))  # flagged, still scored
    assert f"train {len(train)} (" in (out / "fold_0" / "log.txt").read_text()

    flagged.write_text(held_out[0] + "\n")  # the same folder with another list
    assert cli_main(args) == 2 and "train_exclude=" in capsys.readouterr().err
    flagged.write_text("checked/no_such.png\n")
    assert cli_main([*args[:args.index("--out") + 1], str(tmp_path / "o2"), *args[args.index("--out") + 2:]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not in" in err and "checked/no_such.png" in err


def test_plan_folds_is_seeded_balanced_and_stratified():
    from checkbox_dist.experiments.cv_folds import plan_folds

    labels = [0] * 177 + [1] * 124 + [2] * 110
    folds = plan_folds(labels, 5, seed=42)
    assert folds == plan_folds(labels, 5, seed=42) and folds != plan_folds(labels, 5, seed=1)
    sizes = [folds.count(f) for f in range(5)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 411
    for label in range(3):
        per = [sum(1 for y, f in zip(labels, folds) if y == label and f == k) for k in range(5)]
        assert max(per) - min(per) <= 1


def test_too_few_images_per_class_is_one_clear_error(synth_root, tmp_path, capsys):
    assert cli_main(["cv", "--folds", "30", "--out", str(tmp_path / "o"), f"data.root={synth_root}"]) == 2
    assert "fewer than --folds 30" in capsys.readouterr().err


def test_cv_under_accelerate_launch_trains_each_fold_with_both_processes(synth_root, cache_dir, tmp_path):
    """2 CPU processes (gloo): every fold is one 2-process training run, and the OOF file is written once."""
    import subprocess
    import sys

    out = tmp_path / "mp"
    env = dict(__import__("os").environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(REPO / "launch" / "cpu_2proc.yaml"), "-m", "checkbox_dist", "cv", "--config",
                           str(REPO / "configs" / "quickstart.yaml"), "--folds", "2", "--out", str(out), *TINY,
                           "train.epochs=1", f"data.root={synth_root}", f"data.cache_dir={cache_dir}",
                           "data.batch_size=8"], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for i in range(2):
        assert "world size 2" in (out / f"fold_{i}" / "log.txt").read_text()
    rows = _read_csv(out / "oof_predictions.csv")
    assert sorted(r["path"] for r in rows) == sorted(p.relative_to(synth_root).as_posix()
                                                   for p in synth_root.glob("*/*.png"))
    assert proc.stdout.count("cv top-1") == 1


def test_a_stop_file_in_the_cv_folder_stops_before_the_next_fold(synth_root, tmp_path):
    out = tmp_path / "stopped"
    out.mkdir()
    (out / "STOP").touch()
    assert cli_main(["cv", "--folds", "3", "--out", str(out), f"data.root={synth_root}"]) == 75  # Preempted
    assert (out / "folds" / "fold_0.json").is_file() and not (out / "fold_0").exists()


def test_inner_val_holds_out_part_of_the_training_part_and_scores_the_outer_fold(synth_root, cache_dir, tmp_path):
    """--inner-val 0.2 (the nested estimate of `train`'s 80/20 model): fold 0's run validates on a stratified 20 %
    of its training part, never on the outer fold, and the OOF file scores exactly the outer fold. Fold 0 only."""
    out = tmp_path / "out"
    assert cli_main(_cv_args(synth_root, out, cache_dir, "--inner-val", "0.2", "--selection", "best",
                             "--fold", "0")) == 0
    fold = json.loads((out / "folds" / "fold_0.json").read_text())
    train, inner = {p for p, _ in fold["train"]}, {p for p, _ in fold["val"]}
    scored = {r["path"] for r in _read_csv(out / "fold_0" / "oof.csv")}
    assert fold["inner_val"] == 0.2 and len(inner) == 9 and len(train) == 31  # 40 training images: 3 per class out
    assert not (train | inner) & scored and len(train | inner | scored) == 60
    assert json.loads((out / "cv.json").read_text())["inner_val"] == 0.2
    assert cli_main(_cv_args(synth_root, out, cache_dir, "--selection", "best", "--fold", "0")) == 2  # other setting


def test_outer_history_scores_the_outer_fold_at_every_evaluation_without_selecting_on_it(synth_root, cache_dir,
                                                                                          tmp_path, capsys):
    """--outer-history: each fold's split file lists its outer fold as the `probe` part (disjoint from the inner
    train and val parts), every evaluated epoch records the outer fold's top-1 next to the inner-val metrics, and
    OUT/outer_history.json collects them; the best epoch's recorded outer top-1 is the fold's OOF score (the
    same weights on the same images), and the selection follows the inner val set alone."""
    out = tmp_path / "out"
    assert cli_main(_cv_args(synth_root, out, cache_dir, "train.epochs=3", "eval.best_rule=val_top1",
                             "--inner-val", "0.2", "--selection", "best", "--outer-history")) == 0
    history = json.loads((out / "outer_history.json").read_text())
    summary = json.loads((out / "cv_summary.json").read_text())
    assert history["inner_val"] == 0.2 and history["best_rule"] == "val_top1" and len(history["per_fold"]) == 3
    for i, (fold, scored) in enumerate(zip(history["per_fold"], summary["per_fold"])):
        split = json.loads((out / "folds" / f"fold_{i}.json").read_text())
        probe = {p for p, _ in split["probe"]}
        assert probe == {r["path"] for r in _read_csv(out / f"fold_{i}" / "oof.csv")}
        assert not probe & {p for p, _ in split["train"] + split["val"]}
        rows = fold["history"]
        assert [r["epoch"] for r in rows] == [1, 2, 3]
        assert all(0.0 <= r["outer_top1"] <= 1.0 and 0.0 <= r["outer_macro_f1"] <= 1.0 for r in rows)
        kept = next(r for r in rows if r["epoch"] == scored["best_epoch"])
        assert kept["outer_top1"] == pytest.approx(scored["top1"])
        inner = [(r["val_top1"], -r["val_loss"]) for r in rows]
        assert scored["best_epoch"] == rows[inner.index(max(inner))]["epoch"]  # chosen on the inner val set
    # benchmarks/best_rule.py replays every rule on those histories: its val_top1 row is this run's CV score.
    # Its main() in this process (the script's imports are this test's, already loaded; no second start-up).
    capsys.readouterr()
    assert runpy.run_path(str(REPO / "benchmarks" / "best_rule.py"))["main"]([str(out), "--smooth", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in table[2:]}
    assert set(rows) == {"seed", "val_loss", "val_top1", "val_f1", "final", "val_top1_smooth", "oracle"}
    mean = statistics.fmean(f["top1"] for f in summary["per_fold"])
    assert rows["val_top1"].split()[1] == f"{100 * mean:.1f}"
    assert rows["final"].split("|")[1].split() == ["+0.0"] * 3  # deltas against itself


def test_outer_history_without_an_inner_val_set_is_one_clear_error(synth_root, cache_dir, tmp_path, capsys):
    assert cli_main(_cv_args(synth_root, tmp_path / "out", cache_dir, "--selection", "best",
                             "--outer-history")) == 2
    err = capsys.readouterr().err
    assert "error: --outer-history needs --inner-val F and --selection best" in err and "Traceback" not in err
