"""Bad and odd input data through the real `train` CLI: every bad file is one `error:` line (exit 2, no
traceback, no checkpoint) under `data.on_bad_image=error`, and listed exactly once under `skip`; odd but valid
images (1x1, 16-bit, palette, grey, CMYK, animated, ...) load and train; broken folder layouts and symlink
loops give one line or are ignored, never a hang. Figures: docs/RELIABILITY.md.

    .venv/bin/pytest tests/data/test_reliability_inputs.py -q

Runs are the real CLI in real processes forked from a preloaded server (tests/reliability_harness.py).
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reliability_harness import REPO, cli, one_line_error

TINY = ["--config", str(REPO / "configs" / "quickstart.yaml"), "model.name=test_resnet", "data.image_size=32",
        "data.num_workers=0", "train.progress=false", "tracking.backends=[]", "train.epochs=1",
        "data.batch_size=8", "eval.confusion_every_epochs=1000"]


def _png_with_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height (RGB, 8 bit) with one empty IDAT: a few dozen bytes, no pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _noise_png(size=(48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _noise_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _flipped_png() -> bytes:
    data = bytearray(_noise_png())
    data[len(data) // 2] ^= 0xFF  # inside IDAT: the CRC (or zlib) no longer matches
    return bytes(data)


# name -> (file name, bytes, what the error line says)
BAD = {
    "zero-byte": ("zero.png", lambda: b"", "empty file"),
    "text named .png": ("notes.png", lambda: b"just some text\n", "not an image"),
    "random bytes after a PNG signature": ("random.png", lambda: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
                                           "not an image"),
    "truncated PNG": ("half.png", lambda: _noise_png()[: len(_noise_png()) // 2], "unreadable image"),
    "truncated JPEG": ("half.jpg", lambda: _noise_jpeg()[: len(_noise_jpeg()) // 2], "unreadable image"),
    "one byte flipped in a PNG": ("flipped.png", _flipped_png, "unreadable image"),
    "decompression bomb (100000 x 100000 header)": ("bomb.png", lambda: _png_with_header_only(100_000, 100_000),
                                                    "decompression bomb"),
    "over the 64 Mpx limit (9000 x 8000 header)": ("big.png", lambda: _png_with_header_only(9000, 8000),
                                                   "decompression bomb"),
}


def _save(img: Image.Image, **kwargs):
    def make() -> bytes:
        buf = io.BytesIO()
        img.save(buf, **kwargs)
        return buf.getvalue()
    return make


def _palette_with_transparency() -> Image.Image:
    img = Image.new("RGB", (20, 20), (30, 90, 200)).convert("P")
    img.info["transparency"] = 0
    return img


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (24, 24), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


# Odd but valid: each must load and train under data.on_bad_image=error.
ODD = {
    "1x1": ("one.png", _save(Image.new("RGBA", (1, 1), (0, 0, 0, 255)), format="PNG")),
    "16-bit grey": ("sixteen.png", _save(Image.fromarray(np.full((20, 30), 40000, dtype=np.uint16)), format="PNG")),
    "palette with transparency": ("palette.png", _save(_palette_with_transparency(), format="PNG")),
    "greyscale": ("grey.png", _save(Image.new("L", (25, 25), 128), format="PNG")),
    "grey + alpha": ("grey_alpha.png", _save(Image.new("LA", (25, 25), (60, 128)), format="PNG")),
    "1-bit": ("bits.png", _save(Image.new("1", (25, 25), 1), format="PNG")),
    "CMYK JPEG": ("cmyk.jpg", _save(Image.new("CMYK", (30, 20), (0, 128, 255, 0)), format="JPEG")),
    "animated GIF": ("anim.gif", _animated_gif),
    "2000 x 3 strip": ("strip.png", _save(Image.new("RGB", (2000, 3), (0, 0, 0)), format="PNG")),
    "upper-case .PNG suffix": ("UPPER.PNG", _save(Image.new("RGB", (20, 20), (9, 9, 9)), format="PNG")),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("inputs_cache")


@pytest.fixture(scope="module")
def good_root(tmp_path_factory) -> Path:
    """24 synthetic crops, 8 per class, in ROOT/<class>/."""
    from checkbox_dist.synth import generate

    root = tmp_path_factory.mktemp("good") / "data"
    generate(root, 24, seed=5)
    (root / "SYNTH.json").unlink()
    return root


def _copy(good_root: Path, dest: Path) -> Path:
    shutil.copytree(good_root, dest)
    return dest


def _train(root: Path, run_dir: Path, cache: Path, *extra: str):
    return cli(["train", *TINY, f"data.root={root}", f"train.output_dir={run_dir}", f"data.cache_dir={cache}", *extra])


def _split_sizes(out: str) -> int:
    """train + val image count from the run's `data: ... | train N (a/b/c) | val M (d/e/f) | ...` line."""
    import re

    found = re.search(r"\| train (\d+) \([\d/]+\) \| val (\d+) \(", out)
    assert found, out
    return int(found[1]) + int(found[2])


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_file_is_one_error_line_naming_it(kind: str, tmp_path: Path, good_root: Path, cache: Path):
    name, make, reason = BAD[kind]
    root = _copy(good_root, tmp_path / "data")
    bad = root / "checked" / name
    bad.write_bytes(make())
    result = _train(root, tmp_path / "run", cache)
    line = one_line_error(result)
    assert line.startswith(f"error: {bad}: ") and reason in line and "data.on_bad_image=skip" in line, line
    assert not (tmp_path / "run").exists()  # failed before its first step: no run folder left behind


def test_skip_lists_every_bad_file_once_and_trains_on_the_rest(tmp_path: Path, good_root: Path, cache: Path):
    root = _copy(good_root, tmp_path / "data")
    bad_files = []
    for i, (name, make, _) in enumerate(BAD.values()):
        bad_files.append(root / ("checked", "other", "unchecked")[i % 3] / name)
        bad_files[-1].write_bytes(make())
    result = _train(root, tmp_path / "run", cache, "data.on_bad_image=skip")
    assert result.rc == 0, result.err[-3000:]
    assert f"data.on_bad_image=skip: left out {len(bad_files)} file(s):" in result.out
    for file in bad_files:
        assert sum(f"skipped {file}:" in line for line in result.out.splitlines()) == 1, file
    assert _split_sizes(result.out) == 24  # every good image, none lost
    assert (tmp_path / "run" / "checkpoints" / "best" / "model.pt").is_file()


def test_odd_but_valid_images_and_symlink_loops_train_with_on_bad_image_error(
        tmp_path: Path, good_root: Path, cache: Path):
    root = _copy(good_root, tmp_path / "data")
    for i, (name, make) in enumerate(ODD.values()):
        (root / ("checked", "other", "unchecked")[i % 3] / name).write_bytes(make())
    # Symlink loops: a folder link to its own parent, two file links to each other, a class folder linking
    # to itself. None may hang the scan or count as an image.
    os.symlink("..", root / "checked" / "loop")
    os.symlink("b.png", root / "other" / "a.png")
    os.symlink("a.png", root / "other" / "b.png")
    os.symlink("selfloop", root / "selfloop")
    result = _train(root, tmp_path / "run", cache)
    assert result.rc == 0, result.err[-3000:]
    assert _split_sizes(result.out) == 24 + len(ODD)
    assert (tmp_path / "run" / "checkpoints" / "best" / "model.pt").is_file()


def _layout(kind: str, good_root: Path, root: Path) -> str:
    """Builds a broken layout under `root`; returns what the error line must say."""
    if kind == "images directly in the root":
        root.mkdir()
        for file in good_root.glob("*/*.png"):
            shutil.copy(file, root / file.name)
        return "no class folders"
    if kind == "one class folder":
        shutil.copytree(good_root / "checked", root / "checked")
        return "found one class ('checked'); need at least 2"
    if kind == "an empty class folder":
        _copy(good_root, root)
        (root / "indeterminate").mkdir()
        return "class folder 'indeterminate' has no images"
    if kind == "a val class missing from train":
        for cls in ("checked", "other"):
            shutil.copytree(good_root / cls, root / "train" / cls)
        for cls in ("checked", "other", "unchecked"):
            shutil.copytree(good_root / cls, root / "val" / cls)
        return "class 'unchecked' is in val but has no train folder"
    if kind == "data.root is a file":
        root.write_text("not a folder")
        return "data.root: folder not found"
    if kind == "data.root does not exist":
        return "data.root: folder not found"
    raise AssertionError(kind)


LAYOUTS = ["images directly in the root", "one class folder", "an empty class folder",
           "a val class missing from train", "data.root is a file", "data.root does not exist"]


@pytest.mark.parametrize("kind", LAYOUTS)
def test_a_broken_folder_layout_is_one_error_line(kind: str, tmp_path: Path, good_root: Path, cache: Path):
    root = tmp_path / "data"
    expected = _layout(kind, good_root, root)
    line = one_line_error(_train(root, tmp_path / "run", cache))
    assert expected in line, line
    assert not (tmp_path / "run").exists()  # failed before its first step: no run folder left behind


def test_a_failing_run_keeps_a_folder_it_did_not_create_and_logs_why(tmp_path: Path, good_root: Path, cache: Path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("the user's")
    line = one_line_error(_train(tmp_path / "missing", run_dir, cache))
    assert "folder not found" in line, line
    assert (run_dir / "notes.txt").read_text() == "the user's"
    assert line in (run_dir / "log.txt").read_text()


def test_a_class_missing_from_val_trains_and_says_so(tmp_path: Path, good_root: Path, cache: Path):
    root = tmp_path / "data"
    for cls in ("checked", "other", "unchecked"):
        shutil.copytree(good_root / cls, root / "train" / cls)
    for cls in ("checked", "other"):
        shutil.copytree(good_root / cls, root / "val" / cls)
    result = _train(root, tmp_path / "run", cache)
    assert result.rc == 0, result.err[-3000:]
    notes = [line for line in result.out.splitlines() if "no val images" in line]
    assert len(notes) == 1 and "'unchecked'" in notes[0], result.out
    assert (tmp_path / "run" / "checkpoints" / "best" / "model.pt").is_file()
