"""Every data.root format (data/sources.py): class folders, CSV / JSONL / Parquet manifests, a saved Hugging Face
dataset, WebDataset-style tar shards. Each is written here from 30 synthetic images; each trains (stopped after
one step, then resumed), evaluates and runs a 2-fold `cv` through the real CLI; bad rows are one line each;
grouped splits and folds never split a group; the scan is written once as an index and reused.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY, run_cli, tiny_train_args
from checkbox_dist.core.errors import UserError
from checkbox_dist.data.images import PreprocessSpec, decode
from checkbox_dist.data.sources import detect_format, index_file, indexed_catalog, scan
from checkbox_dist.data.split import build_split, stratified_split
from checkbox_dist.data.writers import convert, write_hf, write_manifest, write_shards
from checkbox_dist.experiments.cv_folds import plan_folds

FORMATS = ["folder", "csv", "jsonl", "parquet", "hf", "tar"]
GROUP = 3  # consecutive images of a class share a group ("shot"), as crops of one screenshot would


def _group(path: Path) -> str:
    return f"{path.parent.name}-shot{int(path.stem.split('_')[-1]) // GROUP}"


def _row(path: Path) -> dict:
    return {"path": f"images/{path.parent.name}/{path.name}", "label": path.parent.name}


def write_format(kind: str, folder: Path, out: Path) -> Path:
    """`folder` (ROOT/<class>/*.png) written as data.root of format `kind` under `out` (data/writers.py; the
    manifests' rows carry a group column, the shards are 2)."""
    images = sorted(folder.glob("*/*.png"))
    classes = sorted({p.parent.name for p in images})
    if kind == "folder":
        shutil.copytree(folder, out / "folder", ignore=shutil.ignore_patterns("SYNTH.json"))
        return out / "folder"
    if kind in ("csv", "jsonl", "parquet"):
        shutil.copytree(folder, out / "images", ignore=shutil.ignore_patterns("SYNTH.json"))
        rows = [dict(_row(p), group=_group(p)) for p in images]
        return write_manifest(kind, rows, out / f"manifest.{kind}")
    if kind == "hf":
        return write_hf(images, classes, out / "hf")
    return write_shards(images, out / "shards", shards=2)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    from checkbox_dist.synth import generate

    root = tmp_path_factory.mktemp("formats") / "synth30"
    generate(root, 30, seed=5)
    return root


@pytest.fixture(scope="module")
def roots(images, tmp_path_factory) -> dict[str, Path]:
    return {kind: write_format(kind, images, tmp_path_factory.mktemp(kind)) for kind in FORMATS}


@pytest.mark.parametrize("kind", FORMATS)
def test_each_format_is_detected_and_reads_the_same_images(kind, roots, images):
    root = roots[kind]
    assert detect_format(root) == kind
    catalog = scan(root)
    assert catalog.classes == ["checked", "other", "unchecked"] and len(catalog.refs) == 30
    assert len({r.key for r in catalog.refs}) == 30 and not catalog.bad
    spec = PreprocessSpec(image_size=32)
    originals = {(p.parent.name, p.stem): decode(p, spec) for p in images.glob("*/*.png")}
    for ref, label in zip(catalog.refs, catalog.labels):
        stem = ref.name.split(".")[0].removeprefix(f"{catalog.classes[label]}_") if kind == "tar" else None
        if kind == "hf":
            continue  # rows carry no names: compared in bulk below
        name = stem if kind == "tar" else Path(ref.key).stem
        assert torch.equal(decode(ref, spec), originals[(catalog.classes[label], name)]), ref
    decoded = sorted(decode(r, spec).sum().item() for r in catalog.refs)
    assert decoded == sorted(t.sum().item() for t in originals.values())


def test_convert_writes_each_format_from_a_class_folder_without_copying_it(images: Path, tmp_path: Path):
    """data/writers.py `convert` (bench-data --formats): a manifest beside the folder names its files, the HF
    dataset and the shards hold their bytes; every format reads back as the folder's samples and classes."""
    work = tmp_path / "work"
    folder = work / "crops"
    shutil.copytree(images, folder)
    want = scan(folder)
    for kind in FORMATS:
        out = work / f"crops-{kind}" if kind in ("hf", "tar") else work / f"crops.{kind}"
        root = convert(folder, kind, out, per_shard=12)
        catalog = scan(root)
        assert catalog.kind == kind and catalog.classes == want.classes and not catalog.bad
        got = sorted((catalog.classes[y], r.read_bytes()) for r, y in zip(catalog.refs, catalog.labels))
        assert got == sorted((want.classes[y], r.read_bytes()) for r, y in zip(want.refs, want.labels)), kind
    assert convert(folder, "folder", work / "x") == folder
    assert len(list((work / "crops-tar").glob("*.tar"))) == 3  # 30 samples, 12 a shard
    first = (work / "crops.csv").read_text().splitlines()[1]
    assert first.startswith("crops/checked/checked_") and first.endswith(".png,checked")
    assert sorted(p.name for p in work.iterdir()) == ["crops", "crops-hf", "crops-tar", "crops.csv", "crops.jsonl",
                                                      "crops.parquet"]  # no temporary left
    with pytest.raises(UserError, match="must hold"):
        convert(folder, "csv", tmp_path / "elsewhere" / "m.csv")


def test_a_glob_of_shards_is_tar_and_keys_name_shard_and_member(roots):
    pattern = roots["tar"] / "train-*.tar"
    catalog = scan(pattern)
    assert catalog.kind == "tar" and len(catalog.refs) == 30
    assert {r.key.split("/")[0] for r in catalog.refs} == {"train-0000.tar", "train-0001.tar"}


def test_bad_manifest_rows_are_one_line_each_skipped_or_the_first_stops(tmp_path: Path, images: Path):
    shutil.copytree(images, tmp_path / "images")
    good = [_row(p) for p in sorted(images.glob("*/*.png"))]
    bad = [{"path": "images/checked/missing.png", "label": "checked"}, {"path": "", "label": "checked"},
           {"path": "https://example.com/a.png", "label": "other"}, {"path": "/etc/passwd", "label": "other"},
           {"path": "../outside.png", "label": "other"}, {"path": good[0]["path"], "label": ""},
           {"path": good[1]["path"], "label": "checked", "split": "test"}, dict(good[2], label="other")]
    manifest = write_manifest("csv", [dict(r, split="") for r in good] + bad, tmp_path / "m.csv")
    split = build_split(manifest, on_bad_image="skip")
    assert len(split.train) + len(split.val) == 30 and len(split.skipped) == len(bad)
    for line, reason in zip(split.skipped, ["file not found", "empty path", "no URLs", "no URLs", "leaves the manifest",
                                            "empty label", "not train or val", "listed before"]):
        assert reason in line and "\n" not in line, line
    assert split.skipped[0].startswith(f"{manifest}:32: ")  # the manifest's line number (header = line 1)
    with pytest.raises(UserError, match=r"m.csv:32: images/checked/missing.png: file not found .*7 more"):
        build_split(manifest)


def test_a_bad_manifest_row_stops_training_with_one_error_line(tmp_path: Path, images: Path, cache_dir: Path):
    shutil.copytree(images, tmp_path / "images")
    rows = [_row(p) for p in sorted(images.glob("*/*.png"))]
    manifest = write_manifest("jsonl", rows + [{"path": "images/x.png", "label": "checked"}], tmp_path / "m.jsonl")
    proc = run_cli(*tiny_train_args(tmp_path / "run", cache_dir, data_root=manifest), check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert errors == [f"error: {manifest}:31: images/x.png: file not found (set data.on_bad_image=skip to leave "
                      "such rows out)"], proc.stderr[-2000:]


def test_a_broken_jsonl_line_is_a_bad_row_not_a_broken_manifest(tmp_path: Path, images: Path):
    shutil.copytree(images, tmp_path / "images")
    manifest = write_manifest("jsonl", [_row(p) for p in sorted(images.glob("*/*.png"))], tmp_path / "m.jsonl")
    manifest.write_text(manifest.read_text() + '{"path": "images/checked/x.png", "label"\n[1, 2]\n')
    split = build_split(manifest, on_bad_image="skip")
    assert len(split.train) + len(split.val) == 30
    assert [line.split(": ", 1)[0] for line in split.skipped] == [f"{manifest}:31", f"{manifest}:32"]
    assert "not JSON" in split.skipped[0] and "not a JSON object" in split.skipped[1]


def test_bad_tar_samples_and_hf_rows_are_bad_rows(tmp_path: Path, images: Path):
    shards = write_shards(sorted(images.glob("*/*.png")), tmp_path / "shards", shards=1)
    first = next(images.glob("checked/*.png"))
    os.link(first, tmp_path / "same.png")
    (tmp_path / "same.cls").write_text("checked")
    os.link(tmp_path / "same.cls", tmp_path / "same2.cls")
    with tarfile.open(shards / "train-0000.tar", "a") as tar:
        tar.add(first, arcname="orphan.png")
        tar.add(tmp_path / "same.png", arcname="twin.png")  # a hard link to orphan.png's bytes
        tar.add(tmp_path / "same.cls", arcname="twin.cls")
        tar.add(tmp_path / "same2.cls", arcname="twin2.cls")  # a .cls without an image (a hard link, too)
        assert tar.getmember("twin.png").islnk()
    split = build_split(shards, on_bad_image="skip")
    assert len(split.train) + len(split.val) == 31
    twin = next(ref for ref, _ in split.train + split.val if ref.key.endswith("/twin.png"))
    assert twin.read_bytes() == first.read_bytes()
    assert split.skipped == [f"{shards / 'train-0000.tar'}:orphan.png: no label (.cls missing or empty)",
                             f"{shards / 'train-0000.tar'}:twin2: a .cls without an image"]


def test_missing_extra_is_one_line_naming_the_pip_extra(tmp_path: Path, monkeypatch):
    (tmp_path / "m.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if pyarrow were not installed
    with pytest.raises(UserError, match=r'Parquet manifests need the optional dependencies: pip install '
                                        r'"checkbox_dist\[formats\]"'):
        scan(tmp_path / "m.parquet")


def test_grouped_split_and_folds_never_straddle_and_stay_stratified():
    labels = [i % 3 for i in range(300)]
    groups = [f"g{i // 5}" if i % 7 else "" for i in range(300)]  # some ungrouped samples: groups of one
    train, val = stratified_split(labels, 0.2, seed=1, groups=groups)
    assert sorted(train + val) == list(range(300))
    named = lambda idx: {groups[i] for i in idx if groups[i]}  # noqa: E731
    assert not named(train) & named(val)
    assert stratified_split(labels, 0.2, seed=1, groups=groups) == (train, val)
    for c in range(3):
        assert 14 <= sum(1 for i in val if labels[i] == c) <= 26  # ~20 % of 100 per class, whole groups
    folds = plan_folds(labels, 4, seed=2, groups=groups)
    for g in set(groups) - {""}:
        assert len({folds[i] for i in range(300) if groups[i] == g}) == 1
    sizes = [folds.count(f) for f in range(4)]
    assert max(sizes) - min(sizes) <= 5
    assert stratified_split(labels, 0.2, 1) == stratified_split(labels, 0.2, 1, [""] * 300)  # no groups: as before


def test_a_manifest_group_column_keeps_groups_on_one_side_in_split_and_the_split_command(roots, tmp_path: Path):
    split = build_split(roots["csv"], val_fraction=0.3, seed=3)
    group_of = lambda items: {_group(Path(r.key)) for r, _ in items}  # noqa: E731
    assert split.val and not group_of(split.train) & group_of(split.val)
    out = tmp_path / "split.json"
    run_cli("split", "--data", str(roots["parquet"]), "--out", str(out), "--val-fraction", "0.3", "--seed", "3")
    index = json.loads(out.read_text())
    assert index["train"] == [[r.key, split.classes[y]] for r, y in split.train]  # same rows, same groups
    again = build_split(roots["parquet"], split_file=str(out))
    assert [r.key for r, _ in again.val] == [r.key for r, _ in split.val]


def test_split_column_decides_and_rows_without_one_are_split(tmp_path: Path, images: Path):
    shutil.copytree(images, tmp_path / "images")
    files = sorted(images.glob("*/*.png"))
    rows = [{"path": f"images/{p.parent.name}/{p.name}", "label": p.parent.name,
             "split": "val" if i % 10 == 0 else ("train" if i % 10 < 5 else "")} for i, p in enumerate(files)]
    split = build_split(write_manifest("jsonl", rows, tmp_path / "m.jsonl"), val_fraction=0.2, seed=1)
    val_keys = {r.key for r, _ in split.val}
    pinned_val = {r["path"] for r in rows if r["split"] == "val"}
    pinned_train = {r["path"] for r in rows if r["split"] == "train"}
    assert pinned_val <= val_keys and not pinned_train & val_keys and len(val_keys) > len(pinned_val)


def test_the_index_is_written_once_and_read_by_the_next_run_until_the_data_changes(roots, tmp_path: Path):
    said = []
    for kind in ("folder", "csv", "tar", "hf"):
        root, cache = roots[kind], tmp_path / kind
        first = indexed_catalog(root, cache, said.append)
        file = index_file(root, cache)
        written = file.stat().st_mtime_ns
        second = indexed_catalog(root, cache, said.append)
        assert first.scanned and not second.scanned and file.stat().st_mtime_ns == written
        assert [r.key for r in second.refs] == [r.key for r in first.refs] and second.labels == first.labels
        assert second.refs == first.refs and second.groups == first.groups
    assert len(said) == 4 and all(line.startswith("data: scanned ") for line in said)
    os.utime(roots["csv"], ns=(1, 1))  # the manifest changed (its mtime): scanned again
    assert indexed_catalog(roots["csv"], tmp_path / "csv", said.append).scanned


def _cv_args(root: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return ["cv", "--config", str(REPO / "configs" / "quickstart.yaml"), "--folds", "2", "--out", str(out), *TINY,
            "data.resize=letterbox", "train.epochs=1", f"data.root={root}", f"data.cache_dir={cache}",
            "data.batch_size=8", *extra]


@pytest.mark.parametrize("kind", FORMATS)
def test_each_format_trains_resumes_evaluates_and_runs_cv(kind, roots, tmp_path: Path):
    """STOP after the first step (exit 75), resume=auto to the end, `eval` of the best checkpoint on the same
    data, `cv --folds 2`; device cache on for half the formats, file streaming (decode in the loader) for the rest."""
    root, cache, run = roots[kind], tmp_path / "cache", tmp_path / "run"
    where = "data.device_cache=" + ("on" if kind in ("folder", "csv", "hf") else "off")
    args = tiny_train_args(run, cache, "train.epochs=1", "data.batch_size=8", where, data_root=root)
    run.mkdir()
    (run / "STOP").touch()
    first = run_cli(*args, check=False)
    assert first.returncode == 75, first.stderr[-2000:]
    assert f"data: scanned {root} ({kind}, 30 samples)" in first.stdout
    second = run_cli(*args, "train.resume=auto")
    assert "resumed from" in second.stdout and "data: scanned" not in second.stdout  # the index was read
    evaluated = run_cli("eval", "--checkpoint", str(run / "checkpoints" / "last"), "--data", str(root),
                        "--out", str(tmp_path / "eval"), "--device", "cpu")
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["n"] == 30, evaluated.stdout
    out = tmp_path / "cv"
    run_cli(*_cv_args(root, out, cache, where))
    with (out / "oof_predictions.csv").open(newline="") as handle:
        oof = list(csv.DictReader(handle))
    assert sorted(r["path"] for r in oof) == sorted(r.key for r in scan(root).refs)
    if kind in ("csv", "jsonl", "parquet"):  # the group column: no shot in both folds
        fold_of = {}
        for r in oof:
            fold_of.setdefault(_group(Path(r["path"])), set()).add(r["fold"])
        assert all(len(f) == 1 for f in fold_of.values())


@pytest.mark.system  # a real 2-process gloo world
def test_two_ranks_read_one_index_of_the_shards_and_train_as_one_process_does(roots, tmp_path: Path):
    """Rank 0 (the local main process) scans the shards and writes the index; rank 1 would be SIGKILLed if it
    scanned (CHECKBOX_DIST_FAULT=scan:1@1), so it read the index. Tar samples are read by offset in the one
    global order, so 2 processes x 1 micro-batch train bit-identical parameters to 1 process x 2 (exact sums)."""
    from reliability_harness import run_world

    from conftest import load_weights

    recipe = ["train.global_batch_size=16", "data.batch_size=8", "train.exact_gradient_sum=true", "train.epochs=1",
              "train.max_steps=2", "eval.calibrate=false", "data.device_cache=off"]
    runs = {}
    for world in (2, 1):
        out = runs[world] = tmp_path / f"world{world}"
        args = tiny_train_args(out, tmp_path / f"cache{world}", *recipe, data_root=roots["tar"])[1:]
        results = run_world(world, ["train", *args], env={"CHECKBOX_DIST_FAULT": "scan:1@1"})
        for rank, result in enumerate(results):
            assert result.rc == 0, f"rank {rank} of {world}: exit {result.rc}\n{result.err[-3000:]}"
        assert results[0].out.count("data: scanned ") == 1
    a, b = load_weights(runs[2] / "checkpoints" / "last"), load_weights(runs[1] / "checkpoints" / "last")
    params = [k for k in a if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert params and all(torch.equal(a[k], b[k]) for k in params)  # BatchNorm statistics are per process


def test_a_dataset_dict_gives_the_split_and_eval_scores_its_val_part(tmp_path: Path, images: Path):
    import datasets

    from checkbox_dist.infer.evaluate import labelled_items

    files = sorted(images.glob("*/*.png"))
    classes = ["checked", "other", "unchecked"]
    parts = {name: write_hf(files[::3] if name == "validation" else [f for j, f in enumerate(files) if j % 3],
                             classes, tmp_path / name) for name in ("train", "validation")}
    datasets.DatasetDict({k: datasets.load_from_disk(str(v)) for k, v in parts.items()}).save_to_disk(
        str(tmp_path / "dict"))
    catalog = scan(tmp_path / "dict")
    assert catalog.kind == "hf" and catalog.splits.count("val") == 10 and catalog.splits.count("train") == 20
    split = build_split(tmp_path / "dict")
    assert len(split.val) == 10 and all(ref.key.startswith("validation/") for ref, _ in split.val)
    items, _ = labelled_items(str(tmp_path / "dict"), classes)
    assert [ref.key for ref, _ in items] == [ref.key for ref, _ in split.val]
    with pytest.raises(UserError, match="class 'other' is not one of the model's classes"):
        labelled_items(str(tmp_path / "dict"), ["checked", "unchecked"])
