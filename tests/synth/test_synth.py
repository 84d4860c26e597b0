"""Tests for the synthetic UI-widget generator (checkbox_dist.synth). ~3 s, most of it importing torch."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest
from PIL import Image

from checkbox_dist import synth
from checkbox_dist.commands import synth as synth_command
from checkbox_dist.core.errors import UserError
from checkbox_dist.synth import CLASSES, generate, render_index, render_sample, render_sample_meta


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


def test_classes_are_sorted_folder_names():
    assert CLASSES == ("checked", "other", "unchecked") == tuple(sorted(CLASSES))


def test_render_index_is_deterministic_and_seed_dependent():
    for i in (0, 1, 2, 17):
        a, la = render_index(0, i)
        b, lb = render_index(0, i)
        assert la == lb == CLASSES[i % 3]
        assert a.mode == "RGBA" and a.size == b.size
        assert np.array_equal(_arr(a), _arr(b))
    # another seed gives other pictures (same class, by index)
    differs = [not np.array_equal(_arr(render_index(0, i)[0]), _arr(render_index(1, i)[0])) for i in range(6)]
    assert all(differs)
    # another index of the same seed differs too
    assert not np.array_equal(_arr(render_index(0, 3)[0]), _arr(render_index(0, 6)[0]))


def test_render_sample_respects_label_and_is_uniform_without_one():
    rng = np.random.default_rng(123)
    for label in CLASSES:
        for _ in range(5):
            img, got = render_sample(rng, label)
            assert got == label and img.mode == "RGBA"
    with pytest.raises(ValueError):
        render_sample(rng, "indeterminate")
    labels = [render_sample(rng)[1] for _ in range(150)]
    for c in CLASSES:
        assert 25 <= labels.count(c) <= 75, labels.count(c)  # ~50 each; 25/75 is > 5 sigma away


def test_transparent_variants_have_clear_corners_and_opaque_ones_are_opaque():
    rng = np.random.default_rng(7)
    n_clear = n_opaque = 0
    for i in range(150):
        img, _, meta = render_sample_meta(rng, CLASSES[i % 3])
        a = _arr(img)[..., 3]
        if meta["transparent"]:
            n_clear += 1
            assert max(a[0, 0], a[0, -1], a[-1, 0], a[-1, -1]) == 0, (i, meta)
            # ...and something solid was drawn: blur softens thin strokes (a 33x47 icon's 1 px lines peak at 165)
            assert a.max() >= 150, (i, meta)
        else:
            n_opaque += 1
            assert a.min() == 255, (i, meta)
    assert n_clear >= 45 and n_opaque >= 30, (n_clear, n_opaque)  # ~60% / 40%


def test_size_and_aspect_distribution_looks_like_real_crops():
    sizes = np.array([render_index(11, i)[0].size for i in range(300)], dtype=float)
    w, h = sizes[:, 0], sizes[:, 1]
    assert w.min() >= 16 and h.min() >= 16 and w.max() <= 600 and h.max() <= 600
    aspect = w / h
    assert (aspect > 2).mean() > 0.35  # real: 57% wider than 2:1 (widget + label)
    assert ((aspect > 0.8) & (aspect < 1.25)).mean() > 0.08  # real: 21% square-ish (widget alone)
    assert (aspect > 4).any() and (aspect < 1).any()
    assert 100 <= np.median(w) <= 260 and 40 <= np.median(h) <= 110  # real median 178 x 72
    assert (h < 40).any() and (w > 300).any()


def test_checked_controls_are_more_colourful_than_unchecked_ones():
    """A trivial classifier signal: 'on' controls carry the accent fill, 'off' ones are grey outlines."""

    def chroma(img):
        a = _arr(img).astype(float)
        wt = a[..., 3] / 255.0
        c = a[..., :3].max(-1) - a[..., :3].min(-1)
        return (c * wt).sum() / max(wt.sum(), 1.0)

    rng = np.random.default_rng(3)
    checked = np.mean([chroma(render_sample(rng, "checked")[0]) for _ in range(60)])
    unchecked = np.mean([chroma(render_sample(rng, "unchecked")[0]) for _ in range(60)])
    assert checked > 2 * unchecked, (checked, unchecked)  # measured ~45 vs ~12


def test_colour_alone_does_not_give_the_class_away():
    """Generator v2: the knob position (toggles) and the mark (boxes, radios) carry the class; track colour
    and halos must not, or the model learns 'accent = checked' (the v1 ResNet50s called 5 knob-right grey
    switches 'unchecked'). On pixels: a fifth or more of 'on' switches are as grey as a typical 'off' one."""

    def chroma(img):
        a = _arr(img).astype(float)
        wt = a[..., 3] / 255.0
        return ((a[..., :3].max(-1) - a[..., :3].min(-1)) * wt).sum() / max(wt.sum(), 1.0)

    rng = np.random.default_rng(21)
    toggles = {"checked": [], "unchecked": []}
    halos = {"checked": [], "unchecked": []}
    for _ in range(900):
        for label in toggles:
            img, _, meta = render_sample_meta(rng, label)
            if meta["kind"] == "toggle":
                toggles[label].append(chroma(img))
            else:
                halos[label].append(meta["halo"])
    on, off = np.array(toggles["checked"]), np.array(toggles["unchecked"])
    assert len(on) > 100 and len(off) > 100
    assert on.mean() > 1.5 * off.mean()  # colour still usually agrees...
    assert 0.1 < (on <= np.median(off)).mean() < 0.45, (on <= np.median(off)).mean()  # ...but not always
    rates = [np.mean(halos[k]) for k in ("checked", "unchecked")]
    assert all(0.14 < r < 0.26 for r in rates) and abs(rates[0] - rates[1]) < 0.06, rates


def test_box_and_radio_colour_does_not_give_the_class_away():
    """Generator v3: grey 'on' boxes/radios and accent-outlined 'off' ones exist (the v2 proxies called such real
    crops wrong in every CV run), while the mark still carries the class and colour usually agrees."""
    rng = np.random.default_rng(5)
    chroma = {"checked": [], "unchecked": []}
    while min(len(v) for v in chroma.values()) < 300:
        for label in chroma:
            img, _, meta = render_sample_meta(rng, label)
            if meta["kind"] in ("checkbox", "radio") and not meta["dark"]:
                a = _arr(img).astype(float)
                wt = (a[..., 3] > 0) & (np.abs(a[..., :3] - a[0, 0, :3]).sum(-1) > 30)  # drawn pixels, not page
                c = a[..., :3].max(-1) - a[..., :3].min(-1)
                chroma[label].append(c[wt].mean() if wt.any() else 0.0)
    on, off = np.array(chroma["checked"]), np.array(chroma["unchecked"])
    # Measured on these 300 + 300 (v3 / v2 with untied() switched off): mean chroma 58 vs 22 / 76 vs 15; 'on'
    # as grey as a label (< 10) 18 % / 9 %; 'off' at least as colourful as the median 'on' 13 % / 3 %.
    assert on.mean() > 2 * off.mean(), (on.mean(), off.mean())  # colour usually agrees...
    assert 0.14 < (on < 10).mean() < 0.35, (on < 10).mean()  # ...but grey 'on' controls exist
    assert 0.08 < (off >= np.median(on)).mean() < 0.3, (off >= np.median(on)).mean()  # and colourful 'off' ones


def test_v4_other_crops_shaped_like_control_rows():
    """Generator v4's hard negatives, on pixels (1500 'other' crops): icon rows with a filled tile where a
    checkbox would be, icons with a count badge in their top-right corner, empty fields and pale buttons."""
    rng = np.random.default_rng(11)
    tile, badge, field, chroma = {True: [], False: []}, {True: [], False: []}, {True: [], False: []}, {}
    for _ in range(1500):
        img, _, meta = render_sample_meta(rng, "other")
        a = _arr(img).astype(float)
        ink = (a[..., 3] > 0) & (np.abs(a[..., :3] - a[0, 0, :3]).sum(-1) > 30)
        if meta["kind"] == "icon_text":  # the leftmost square, where a checkbox row has its box
            tile[meta["tile"]].append(ink[:, : ink.shape[0]].mean())
        elif meta["kind"] == "icon" and ink.any():  # top-right 30 % x 30 % of what was drawn
            ys, xs = np.nonzero(ink)
            dy, dx = max(1, int(0.3 * (ys.max() + 1 - ys.min()))), max(1, int(0.3 * (xs.max() + 1 - xs.min())))
            badge[meta["badge"]].append(ink[ys.min(): ys.min() + dy, xs.max() + 1 - dx: xs.max() + 1].mean())
        elif meta["kind"] == "input":  # inside the field, right of where a caret would be
            g, (h, w) = np.asarray(img.convert("L")).astype(float), img.size[::-1]
            field[meta["empty"]].append((g[h // 3: 2 * h // 3 + 1, int(0.3 * w): int(0.9 * w)].std(), w / h))
        elif meta["kind"] == "button" and ink.any():
            c = a[..., :3].max(-1) - a[..., :3].min(-1)
            chroma.setdefault(meta["style"], []).append(c[ink].mean())
    # Measured with seed 11: tiles 51 of 127 rows, left-square ink 0.31 vs 0.08 bare; badges 39 of 187 icons,
    # corner ink 0.67 vs 0.38; empty fields 37 of 129, interior std median 0.0 vs 21 (text), aspect >= 1.97;
    # neutral buttons' mean chroma 6.9 vs 132 filled.
    n_tile, n_badge, n_empty = (len(d[True]) / (len(d[True]) + len(d[False])) for d in (tile, badge, field))
    assert 0.3 < n_tile < 0.6 and np.mean(tile[True]) > 2.5 * np.mean(tile[False]), (n_tile, tile)
    assert 0.1 < n_badge < 0.3 and np.mean(badge[True]) > np.mean(badge[False]) + 0.15, (n_badge, badge)
    assert 0.12 < n_empty < 0.4, n_empty
    assert np.median([v for v, _ in field[True]]) < 3 and np.median([v for v, _ in field[False]]) > 10, field
    assert min(r for _, r in field[True]) > 1.8, field[True]  # never square: an empty square is an 'off' box
    assert len(chroma["neutral"]) >= 15 and np.mean(chroma["neutral"]) < 25, chroma["neutral"]
    assert np.mean(chroma["filled"]) > 100, chroma["filled"]


def test_every_layout_and_other_kind_is_drawn():
    rng = np.random.default_rng(5)
    layouts = {render_sample_meta(rng, "checked")[2]["layout"] for _ in range(300)}
    assert layouts == {"right", "left", "above", "alone"}
    kinds = {render_sample_meta(rng, "other")[2]["kind"] for _ in range(900)}
    assert kinds == {"button", "icon", "text", "input", "dropdown", "badge", "slider", "progress", "icon_text",
                     "tabs", "avatar", "rating", "menu", "chip", "spinner", "photo", "dots"}, kinds


def test_pseudo_cjk_labels_are_drawn_as_wide_as_they_measure():
    from PIL import ImageDraw

    from checkbox_dist.synth import widgets as W

    label = W.words(np.random.default_rng(0), cjk=1.0)
    assert 2 <= len(label) <= 8 and all(0x4E00 <= ord(c) <= 0x9FFF for c in label)
    px = 40
    img = Image.new("L", (int(W.text_width(label, px)) + 80, 100), 0)
    W.text(ImageDraw.Draw(img), (40, 50), label, px, 255)
    cols = np.flatnonzero(np.asarray(img).max(0))
    rows = np.flatnonzero(np.asarray(img).max(1))
    assert 0.7 * W.text_width(label, px) <= cols[-1] - cols[0] <= W.text_width(label, px) + 1
    assert rows[0] >= 50 - px / 2 - 1 and rows[-1] <= 50 + px / 2 + 1  # vertically centred on the anchor
    assert (np.asarray(img) > 0).mean() > 0.03  # strokes, not a blank cell


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_generate_layout_counts_balance_and_cache(tmp_path):
    out = tmp_path / "synth"
    counts = generate(out, 12, seed=3)
    assert counts == {"checked": 4, "other": 4, "unchecked": 4}
    expected = [f"{CLASSES[i % 3]}/{CLASSES[i % 3]}_{i:06d}.png" for i in range(12)]
    assert _files(out) == sorted(expected + ["SYNTH.json"])  # no .tmp leftovers
    stamp = json.loads((out / "SYNTH.json").read_text())
    assert (stamp["n"], stamp["seed"], stamp["version"]) == (12, 3, synth.VERSION)
    img = Image.open(out / "other" / "other_000001.png")
    assert img.mode == "RGBA"
    assert np.array_equal(np.asarray(img), _arr(render_index(3, 1)[0]))  # PNG is lossless

    mtimes = {p: os.stat(out / p).st_mtime_ns for p in _files(out)}
    os.utime(out / expected[0], ns=(1, 1))  # an old mtime: a rewrite would reset it
    assert generate(out, 12, seed=3) == counts
    assert os.stat(out / expected[0]).st_mtime_ns == 1
    assert all(os.stat(out / p).st_mtime_ns == t for p, t in mtimes.items() if p != expected[0])

    # a different n regenerates and drops files beyond the new n
    assert generate(out, 6, seed=3) == {"checked": 2, "other": 2, "unchecked": 2}
    assert len(_files(out)) == 7 and json.loads((out / "SYNTH.json").read_text())["n"] == 6
    assert os.stat(out / expected[0]).st_mtime_ns != 1


def test_kind_labels_write_the_same_images_into_class_and_kind_folders(tmp_path):
    by_class, by_kind = generate(tmp_path / "c", 90, seed=2), generate(tmp_path / "k", 90, seed=2, labels="kind")
    assert sum(by_kind.values()) == 90 and len(by_kind) > 6, by_kind
    for c in CLASSES:  # every kind folder is one class's: the counts add up to the class counts
        assert sum(n for k, n in by_kind.items() if k.startswith(f"{c}-")) == by_class[c]
    for png in (tmp_path / "k").glob("*/*.png"):  # same file name, same bytes, folder = class-kind
        assert png.parent.name.startswith(png.name.split("_")[0] + "-")
        assert png.read_bytes() == (tmp_path / "c" / png.name.split("_")[0] / png.name).read_bytes()
    assert generate(tmp_path / "k", 90, seed=2, labels="kind") == by_kind  # cached
    stamp = json.loads((tmp_path / "k" / "SYNTH.json").read_text())
    assert stamp["labels"] == "kind" and stamp["counts"] == by_kind
    assert generate(tmp_path / "k", 90, seed=2) == by_class  # relabelled: class folders, no kind folders left
    assert sorted(p.name for p in (tmp_path / "k").iterdir() if p.is_dir()) == sorted(CLASSES)
    with pytest.raises(UserError, match="--labels must be one of class, kind"):
        generate(tmp_path / "x", 3, labels="kinds")


def test_generate_is_byte_identical_across_runs_and_workers(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, 9, seed=5)
    generate(b, 9, seed=5, workers=2)
    files = [p for p in _files(a) if p.endswith(".png")]
    assert files == [p for p in _files(b) if p.endswith(".png")] and len(files) == 9
    for p in files:
        assert (a / p).read_bytes() == (b / p).read_bytes(), p
    c = tmp_path / "c"
    generate(c, 9, seed=6)
    assert any((a / p).read_bytes() != (c / p).read_bytes() for p in files)


def test_generate_refuses_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="at least 1"):
        generate(tmp_path / "x", 0)
    with pytest.raises(UserError, match="workers"):
        generate(tmp_path / "x", 3, workers=0)
    f = tmp_path / "file.txt"
    f.write_text("not a folder")
    with pytest.raises(UserError, match="not a directory"):
        generate(f, 3)
    assert not (tmp_path / "x").exists()


def test_cli_subcommand_prints_one_summary_line(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="checkbox-dist")
    synth_command.add_parser(parser.add_subparsers(dest="command"))  # the command's flags; synth.run does the work
    out = tmp_path / "cli"
    args = parser.parse_args(["synth", "--out", str(out), "--n", "6", "--seed", "2"])
    assert synth.run(args) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "checked=2" in line and "other=2" in line and str(out) in line
    assert synth.run(args) == 0
    assert "cached" in capsys.readouterr().out
    with pytest.raises(UserError):
        synth.run(parser.parse_args(["synth", "--out", str(out), "--n", "0"]))


def test_synth_dataset_renders_on_the_fly():
    ds = synth.SynthDataset(7, seed=4)
    assert len(ds) == 7
    for i in (0, 1, 2, 6, -1):
        img, y = ds[i]
        j = i % 7
        assert isinstance(img, Image.Image) and img.mode == "RGBA"
        assert y == j % 3 and CLASSES[y] == render_index(4, j)[1]
        assert np.array_equal(_arr(img), _arr(render_index(4, j)[0]))
    with pytest.raises(IndexError):
        ds[7]
    import torch.utils.data

    assert isinstance(ds, torch.utils.data.Dataset)
    assert synth.SynthDataset(3, 0, transform=lambda im: im.size)[0][0] == render_index(0, 0)[0].size


def test_generate_keeps_other_live_writers_temp_files(tmp_path):
    """Two runs generating the same cache at once (two Slurm jobs): neither deletes the other's files in
    flight; temp files of dead writers are cleaned up."""
    import subprocess

    out = tmp_path / "s"
    (out / "checked").mkdir(parents=True)
    writer = subprocess.Popen(["sleep", "60"])  # stands for the other run, still writing
    finished = subprocess.Popen(["true"])
    finished.wait()
    live = out / "checked" / f".checked_000000.png.{writer.pid}.tmp"
    dead = out / "checked" / f".checked_000003.png.{finished.pid}.tmp"
    live.write_bytes(b"in flight")
    dead.write_bytes(b"left by a killed run")
    try:
        generate(out, 6, seed=0)
        assert live.exists() and not dead.exists()
    finally:
        writer.kill()


def test_int8_calibration_finds_a_kind_labelled_synthetic_training_set(tmp_path):
    """A checkpoint trained on data.synth_labels=kind calibrates on that folder, every kind folder sampled."""
    from checkbox_dist.infer.quantize import calibration_files

    data = {"root": "", "cache_dir": str(tmp_path), "synth_n": 60, "synth_seed": 1, "synth_labels": "kind"}
    files, root = calibration_files({"config": {"data": data}}, "", 60)
    assert root == tmp_path / "synth-n60-s1-kind" and len(files) == 60
    assert {f.parent.name for f in files} == {p.name for p in root.iterdir() if p.is_dir()}
    assert all(f.parent.name.split("-")[0] in CLASSES for f in files)
    files, root = calibration_files({"config": {"data": {**data, "synth_labels": "class"}}}, "", 6)
    assert root == tmp_path / "synth-n60-s1" and {f.parent.name for f in files} == set(CLASSES)


def test_every_seed_and_index_renders():
    """Pillow refuses some rounded rectangles whose radius is (almost) half their side (x1 < x0 after its own
    rounding): the generator draws them anyway. (7, 15934) is the one `synth --n 50000 --seed 7` stopped at;
    a bounded sweep over other seeds and indices, ~2,000 renders."""
    render_index(7, 15934)
    rng = np.random.default_rng(2026)
    for seed, index in zip(rng.integers(0, 10_000, 2000), rng.integers(0, 2_000_000, 2000)):
        img, label = render_index(int(seed), int(index))
        assert img.mode == "RGBA" and label in CLASSES


def test_a_sample_that_fails_is_one_line_naming_seed_and_index_and_leaves_no_folder(tmp_path, monkeypatch):
    from checkbox_dist.synth import generator

    real = generator.render_sample_meta

    def failing(rng, label=None):
        if failing.calls == 5:
            raise ValueError("x1 must be greater than or equal to x0")
        failing.calls += 1
        return real(rng, label)

    failing.calls = 0
    monkeypatch.setattr(generator, "render_sample_meta", failing)
    with pytest.raises(UserError) as err:
        generate(tmp_path / "new", 12, seed=7)
    assert str(err.value) == ("synth: sample 5 of seed 7 could not be drawn (ValueError: x1 must be greater than or "
                              "equal to x0)")
    assert not (tmp_path / "new").exists()  # nothing half-written stays behind
