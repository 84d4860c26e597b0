"""Deterministic synthetic UI-widget crops: the package's embedded default dataset.

    checkbox-dist synth --out data/synth --n 3000 --seed 0 --workers 2
    python -c "from checkbox_dist.synth import generate; generate('data/synth', 3000)"

Writes OUT/<class>/<class>_<index:06d>.png (RGBA) for the three classes of the real data:
  checked    checkboxes (8 styles: filled+tick, outline+tick, cross, filled cross, inner square, round tick,
             solid accent box, bare tick; tick shapes randomised), radios with a dot, toggles with the knob
             RIGHT (usually on an accent track; ~22% on a grey or dark one);
  unchecked  the same controls empty / knob LEFT (usually on a grey track; some greyed "disabled" ones);
  other      buttons, icons (21 glyphs, bare or in circles, rings, rounded squares), text and paragraphs,
             text inputs with caret, dropdowns, open menus, badges, chips with a delete cross, sliders,
             progress bars, spinners, star/heart ratings, icon+label menu rows, tabs, avatars (initials or
             "photo"), app tiles, coloured dots, icon rows with a filled tile or letters ("Ai"), icons with a
             count badge, empty fields and textareas, pale "neutral" buttons (other.py, pictures.py). Most are
             hard negatives: widget-shaped, but not checkboxes. (No indeterminate dash: it is ambiguous.)
About 72% of controls carry a label (random words in Pillow's bundled Aileron font; 7% pseudo-CJK strokes,
as real crops carry Japanese and Chinese labels), right of the control, left of it (10%) or as a caption
above it (6%), so most crops are wide (real median 178x72 px, aspect 2.4); the rest are the control alone.
20% of checkboxes and radios sit in a focus/hover halo whose colour ignores the class, and the colour of a
control may disagree with its state (grey 'on' marks and tracks, accent 'off' outlines).
Light (62%), dark (34%) and tinted (4%) themes with brand accents. Everything is drawn 2-4x supersampled,
then LANCZOS-downsampled; ~10% each get a slight blur, pixel noise or a JPEG round trip.
`--labels kind` writes OUT/<class>-<kind>/ instead (23 folders: checked-radio, other-slider, ...), the same
images, for a stage one that learns what was drawn (pretrain.labels).

Backgrounds: the real training crops are RGBA but every pixel has alpha 255 (opaque white / navy panels).
We still make ~55% transparent (alpha 0 off the element: light themes only) so a loader's compositing is
exercised; dark-theme samples are always opaque, because light-on-clear composited over white looks like
nothing real.

Determinism: each index has its own RNG (SeedSequence([seed, index])), so any sample can be rendered alone,
in any order, in any process, and a dataset is byte-identical across runs and hosts. Files are written
atomically (checkbox_dist.core.files): an interrupted run leaves whole PNGs or hidden `.NAME.PID.tmp` files,
which a later run deletes unless their writer is still alive. VERSION changes whenever the drawing does.
`python -m checkbox_dist.synth 500` times render_sample. Why it draws what it draws: docs/SYNTH.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from checkbox_dist.core.errors import UserError
from checkbox_dist.core.files import TMP_SUFFIX, atomic_path, atomic_write_text, writer_alive
import checkbox_dist.synth.widgets as W
from checkbox_dist.synth.other import plan_other
from checkbox_dist.synth.widgets import logu, pick

CLASSES = ("checked", "other", "unchecked")
LABELS = ("class", "kind")  # what a sub-folder of a written dataset stands for (folder_of)
VERSION = 4  # bump whenever the drawing changes: cached datasets (SYNTH.json) are then regenerated
MIN_SIDE, MAX_SIDE = 16, 600  # real crops run 24-1804 px; beyond 600 px a 128-224 px model sees no more
_NAME = re.compile(r"^(checked|other|unchecked)_(\d{6})\.png$")


def _plan_control(rng, th: W.Theme, checked: bool):
    """Checkbox / radio / toggle, alone or with a label to its right (sometimes left, sometimes cropped)."""
    kind = pick(rng, ["checkbox", "radio", "toggle"], [0.55, 0.25, 0.2])
    s = logu(rng, 14, 52)  # control height; real ones are ~14-50 px (2x-DPR screenshots of 16-24 px boxes)
    cw = s * rng.uniform(1.6, 2.3) if kind == "toggle" else s
    label = W.words(rng) if rng.random() < 0.72 else ""
    fs = s * rng.uniform(0.75, 1.3)
    gap = s * rng.uniform(0.3, 0.9)
    tw = W.text_width(label, fs) if label else 0.0
    big = rng.random() < 0.1  # a control floating in a large panel (seen in both classes)
    px0, px1 = (s * rng.uniform(0.1, 1.2) + 2 for _ in range(2))
    py = s * rng.uniform(0.1, 0.9) + 2
    if big:
        px0, px1, py = px0 + s * rng.uniform(0.5, 2.5), px1 + s * rng.uniform(0.5, 2.5), py + s * rng.uniform(0.5, 2)
    layout = pick(rng, ["right", "left", "above"], [0.84, 0.1, 0.06]) if label else "alone"
    w = px0 + cw + (gap + tw if label else 0) + px1
    if layout == "right" and rng.random() < 0.12:  # crop cuts the label mid-word, as many real crops do
        w = px0 + cw + gap + tw * rng.uniform(0.3, 0.8)
    h = max(s, fs * 1.25 if label else 0) + 2 * py
    if layout == "above":  # a caption line over the control ("Top" / settings rows), control left-aligned
        w, h = px0 + max(cw, tw) + px1, py + fs * 1.25 + gap + s + py
    # Halos (focus ripple, hover, MUI's 40 px touch target) surround 'on' and 'off' controls alike, so their
    # colour must not follow the class.
    halo = kind != "toggle" and rng.random() < 0.2
    halo_col = pick(rng, [th.accent, th.fg, th.border])
    halo_a, halo_r = rng.uniform(0.08, 0.25), s * rng.uniform(0.8, 1.3)

    def draw(d, u, page):
        cx = px0 + (tw + gap if layout == "left" else 0)
        cy = (h - s) / 2 if layout != "above" else h - py - s
        if halo:
            c = (cx + cw / 2, cy + s / 2)
            r = halo_r if not th.transparent else min(halo_r, c[0] - 1, c[1] - 1, h - c[1] - 1, w - c[0] - 1)
            d.ellipse(((c[0] - r) * u, (c[1] - r) * u, (c[0] + r) * u, (c[1] + r) * u), fill=th.glow(halo_col, halo_a))
        if kind == "toggle":
            room = min(cy + s / 2, h - cy - s / 2, cx + s / 2, w - cx - cw + s / 2) - 1  # knob halo stays inside
            W.toggle(d, cx * u, cy * u, cw * u, s * u, th, rng, checked, u, room * u)
        else:
            getattr(W, kind)(d, cx * u, cy * u, s * u, th, rng, checked, u)
        if layout == "above":
            W.text(d, (px0 * u, (py + fs * 0.62) * u), label, fs * u, th.fg)
        elif label:
            tx = px0 if layout == "left" else cx + cw + gap
            W.text(d, (tx * u, h / 2 * u), label, fs * u, th.fg)

    return w, h, draw, {"kind": kind, "knob_right": checked if kind == "toggle" else None, "layout": layout,
                        "halo": halo}


class _Draw(ImageDraw.ImageDraw):
    """ImageDraw whose rounded rectangles always draw. Pillow raises "x1 must be greater than or equal to x0" for
    some boxes whose radius is (almost) half a side, after its own rounding; such a box is drawn with the radius
    1 px short of half its shorter side instead. Every box Pillow draws is drawn as before, so the samples of
    a (seed, index) that rendered stay bit-identical."""

    def rounded_rectangle(self, xy, radius=0, fill=None, outline=None, width=1, **kwargs):
        try:
            return super().rounded_rectangle(xy, radius, fill, outline, width, **kwargs)
        except ValueError:
            (x0, y0), (x1, y1) = (xy[0], xy[1]) if isinstance(xy[0], (tuple, list)) else (xy[:2], xy[2:])
            short = min(abs(x1 - x0), abs(y1 - y0))
            return super().rounded_rectangle(xy, max(0.0, short / 2 - 1), fill, outline, width, **kwargs)


def render_sample_meta(rng: np.random.Generator, label: str | None = None) -> tuple[Image.Image, str, dict]:
    """Like render_sample, plus what was drawn: kind, transparent, dark, knob_right (toggles)."""
    if label is None:
        label = CLASSES[int(rng.integers(3))]
    if label not in CLASSES:
        raise ValueError(f"label must be one of {CLASSES}, got {label!r}")
    th = W.make_theme(rng)
    # Clear backgrounds for 85% of light themes (~55% overall) and never for dark ones: light-on-clear
    # composited over white (what the loaders do) is a near-invisible widget, unlike any real crop.
    th.transparent = bool(not th.dark and rng.random() < 0.85)
    if label == "other":
        w, h, draw, meta = plan_other(rng, th)
    else:
        w, h, draw, meta = _plan_control(rng, th, label == "checked")
    w = int(np.clip(round(w), MIN_SIDE, MAX_SIDE))
    h = int(np.clip(round(h), MIN_SIDE, MAX_SIDE))
    # 4x for small crops, 2x for big ones: LANCZOS cost grows with canvas area.
    u = 4 if max(w, h) <= 64 else 3 if max(w, h) <= 128 else 2
    page = (*th.bg, 0 if th.transparent else 255)
    canvas = Image.new("RGBA", (w * u, h * u), page)
    draw(_Draw(canvas), u, page)
    img = W.capture_effects(canvas.resize((w, h), Image.Resampling.LANCZOS), rng)
    meta.update(transparent=th.transparent, dark=th.dark, size=(w, h))
    return img, label, meta


def render_sample(rng: np.random.Generator, label: str | None = None) -> tuple[Image.Image, str]:
    """One RGBA crop and its class name; the class is uniform over CLASSES when label is None."""
    img, label, _ = render_sample_meta(rng, label)
    return img, label


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def render_index(seed: int, index: int) -> tuple[Image.Image, str]:
    """Sample `index` of dataset `seed`: its own RNG, class CLASSES[index % 3] (balanced)."""
    return render_sample(_rng(seed, index), CLASSES[index % 3])


def folder_of(label: str, meta: dict, labels: str) -> str:
    """The sub-folder a sample is written to: its class, or with labels="kind" its class and what was drawn
    ("checked-radio", "other-slider"): 6 control folders + 17 other kinds, for a finer-grained stage one."""
    return label if labels == "class" else f"{label}-{meta['kind']}"


class RenderError(UserError):
    """A sample the generator could not draw; names its seed and index."""


def _write_one(job: tuple[str, int, int, str]) -> str:
    out, seed, index, labels = job
    try:
        img, label, meta = render_sample_meta(_rng(seed, index), CLASSES[index % 3])  # = render_index(seed, index)
    except Exception as e:  # a drawing bug must name the sample that shows it, in one line
        raise RenderError(f"synth: sample {index} of seed {seed} could not be drawn "
                          f"({type(e).__name__}: {e})") from None
    folder = Path(out) / folder_of(label, meta, labels)
    with atomic_path(folder / f"{label}_{index:06d}.png") as tmp:  # never a truncated .png
        img.save(tmp, format="PNG", compress_level=3)  # level 3: about the size of 6, faster
    return folder.name


def all_cores(cap: int = 8) -> int:
    """Workers for a generation the caller waits on (stage one, the rehearsal mix): every core, at most cap."""
    return max(1, min(cap, os.cpu_count() or 1))


def generate(out_dir: str | Path, n: int, seed: int = 0, workers: int = 1, labels: str = "class") -> dict[str, int]:
    """Write n samples to out_dir/<class>/<class>_<index:06d>.png; returns counts per folder. labels="kind"
    writes the same images to out_dir/<class>-<kind>/ instead (folder_of).

    Cached: if out_dir/SYNTH.json (written last) matches n, seed, labels and VERSION, nothing is redone."""
    return _generate(out_dir, n, seed, workers, labels)[0]


def _generate(out_dir: str | Path, n: int, seed: int = 0, workers: int = 1,
              labels: str = "class") -> tuple[dict[str, int], bool]:
    if int(n) < 1:
        raise UserError(f"synth: --n must be at least 1, got {n}")
    if int(workers) < 1:
        raise UserError(f"synth: --workers must be at least 1, got {workers}")
    if labels not in LABELS:
        raise UserError(f"synth: --labels must be one of {', '.join(LABELS)}, got {labels!r}")
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"synth: output path {out} exists and is not a directory")
    stamp_path, want = out / "SYNTH.json", {"n": int(n), "seed": int(seed), "version": VERSION, "labels": labels}
    try:
        stamp = json.loads(stamp_path.read_text())
        have = {"labels": "class", **stamp}  # stamps from before `labels` existed are class-labelled
        if {k: have.get(k) for k in want} == want and isinstance(stamp.get("counts"), dict):
            return stamp["counts"], True
    except (OSError, ValueError):
        pass
    created = not out.exists()
    try:
        stamp_path.unlink(missing_ok=True)  # an interrupted regeneration must not look cached
        out.mkdir(parents=True, exist_ok=True)
        for c in CLASSES if labels == "class" else ():  # every class folder, even one that n < 3 leaves empty
            (out / c).mkdir(exist_ok=True)
    except OSError as e:
        raise UserError(f"synth: cannot write to {out}: {e.strerror or e}") from None
    try:
        labels_written = _write_all(out, int(n), int(seed), int(workers), labels)
    except RenderError:
        if created:  # nothing half-written stays behind; a folder that held a dataset keeps no stamp (above)
            shutil.rmtree(out, ignore_errors=True)
        raise
    names = CLASSES if labels == "class" else sorted(set(labels_written))
    for folder in (p for p in out.iterdir() if p.is_dir()):  # drop leftovers: of an earlier, larger n or other
        stale_folder = folder.name not in names                 # labels, and .tmp files of interrupted runs
        for p in folder.iterdir():
            mt = _NAME.match(p.name)
            # a dead writer's `.NAME.PID.tmp`; a live one's (another run on this cache) is left alone
            stale_tmp = p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and not writer_alive(p.name)
            if (mt and (stale_folder or int(mt.group(2)) >= n)) or stale_tmp:
                p.unlink(missing_ok=True)
        if stale_folder and not any(folder.iterdir()):
            folder.rmdir()
    counts = {c: labels_written.count(c) for c in names}
    atomic_write_text(stamp_path, json.dumps({**want, "counts": counts}, indent=1) + "\n")
    return counts, False


def _write_all(out: Path, n: int, seed: int, workers: int, labels: str) -> list[str]:
    jobs = [(str(out), seed, i, labels) for i in range(n)]
    if workers == 1:
        return [_write_one(j) for j in jobs]
    import multiprocessing

    # spawn, not Linux's default fork: `train` calls this with torch loaded (its thread pools and locks
    # do not survive a fork), e.g. for the pretrain stage; a spawned worker imports only this module.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return list(pool.imap(_write_one, jobs, chunksize=64))


def _make_dataset_class():
    from torch.utils.data import Dataset  # torch is imported only when SynthDataset is first used

    class SynthDataset(Dataset):
        """n synthetic samples rendered on the fly (no disk): item i = render_index(seed, i)."""

        def __init__(self, n: int, seed: int = 0, transform=None):
            if int(n) < 1:
                raise UserError(f"synth: n must be at least 1, got {n}")
            self.n, self.seed, self.transform = int(n), int(seed), transform

        def __len__(self) -> int:
            return self.n

        def __getitem__(self, i: int):
            if not -self.n <= i < self.n:
                raise IndexError(f"index {i} out of range for {self.n} samples")
            i %= self.n
            img, label = render_index(self.seed, i)
            return (self.transform(img) if self.transform else img), CLASSES.index(label)

    SynthDataset.__module__ = __name__
    return SynthDataset


def __getattr__(name: str):  # lazy SynthDataset keeps `import checkbox_dist.synth` (and the CLI) torch-free
    if name == "SynthDataset":
        cls = _make_dataset_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(args) -> int:
    t0 = time.perf_counter()
    counts, cached = _generate(args.out, args.n, args.seed, args.workers, args.labels)
    per = " ".join(f"{c}={k}" for c, k in counts.items())
    verb = "already there (cached)" if cached else "written"
    print(f"synth: {sum(counts.values())} images {verb}: {per} -> {args.out} ({time.perf_counter() - t0:.1f}s)")
    return 0
