"""Deterministic synthetic UI-widget crops: the package's embedded default dataset.

    checkbox-dist synth --out data/synth --n 3000 --seed 0 --workers 2
    python -c "from checkbox_dist.synth import generate; generate('data/synth', 3000)"

Writes OUT/<class>/<class>_<index:06d>.png (RGBA) for the three classes of the real data:
  checked    checkboxes (7 styles: filled+tick, outline+tick, cross, filled cross, inner square, round tick,
             solid accent box; tick shapes randomised), radios with a dot, toggles with the knob RIGHT on an
             accent track;
  unchecked  the same controls empty / knob LEFT on a grey track (some greyed "disabled" ones);
  other      buttons, icons (14 glyphs, bare or in circles/rounded squares), text, text inputs with caret,
             dropdowns, open menus, badges, sliders, progress bars, star/heart ratings, icon+label menu rows,
             tabs, avatars. Sliders, ratings, icons in boxes and icon+label rows are hard negatives:
             widget-shaped, but not checkboxes. (No indeterminate dash: it is ambiguous.)
About 72% of controls carry a label (random words, Pillow's bundled Aileron font), so most crops are wide
(real median 178x72 px, aspect 2.4); the rest are the control alone. Light (62%), dark (34%) and tinted
(4%) themes with brand accents. Everything is drawn 2-4x supersampled, then LANCZOS-downsampled; ~10%
each get a slight blur, pixel noise or a JPEG round trip.

Backgrounds: the real training crops are RGBA but every pixel has alpha 255 (opaque white / navy panels),
whatever their README says. We still make ~55% transparent (alpha 0 off the element: light themes only)
so a loader's compositing is exercised; dark-theme samples are always opaque, because light-on-clear
composited over white looks like nothing real.

Speed (median of 500, 2 CPU cores shared with other work, Pillow 13): render_sample ~2.9 ms (p90 ~7 ms,
the wide 2x-supersampled crops), ~3.6 ms with the PNG encode;
generate() wrote 150 images/s with 1 worker, 180 with 2 (the 2 cores were busy with other work).
`python -m checkbox_dist.synth 500` re-measures. Each index has its own RNG (SeedSequence([seed, index])),
so any sample can be rendered alone, in any order, in any process.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from checkbox_dist import synth_widgets as W
from checkbox_dist.errors import UserError
from checkbox_dist.synth_widgets import logu, pick

CLASSES = ("checked", "other", "unchecked")
VERSION = 1  # bump whenever the drawing changes: cached datasets (SYNTH.json) are then regenerated
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
    left_label = bool(label) and rng.random() < 0.1
    w = px0 + cw + (gap + tw if label else 0) + px1
    if label and not left_label and rng.random() < 0.12:  # crop cuts the label mid-word, as many real crops do
        w = px0 + cw + gap + tw * rng.uniform(0.3, 0.8)
    h = max(s, fs * 1.25 if label else 0) + 2 * py
    halo = kind != "toggle" and rng.random() < 0.08

    def draw(d, u, page):
        cx = px0 + (tw + gap if left_label else 0)
        cy = (h - s) / 2
        if halo:
            c = (cx + cw / 2, h / 2)
            r = min(s * rng.uniform(0.8, 1.05), c[0] - 1, h / 2 - 1, w - c[0] - 1)  # stays inside the crop
            d.ellipse(((c[0] - r) * u, (c[1] - r) * u, (c[0] + r) * u, (c[1] + r) * u),
                      fill=th.glow(th.accent if checked else th.fg, 0.12))
        if kind == "toggle":
            room = min(h / 2, cx + s / 2, w - cx - cw + s / 2) - 1  # knob-centred halo stays inside
            W.toggle(d, cx * u, cy * u, cw * u, s * u, th, rng, checked, u, room * u)
        else:
            getattr(W, kind)(d, cx * u, cy * u, s * u, th, rng, checked, u)
        if label:
            tx = px0 if left_label else cx + cw + gap
            W.text(d, (tx * u, h / 2 * u), label, fs * u, th.fg)

    return w, h, draw, {"kind": kind, "knob_right": checked if kind == "toggle" else None}


def _plan_other(rng, th: W.Theme):
    kind = pick(rng, ["button", "icon", "text", "input", "dropdown", "badge", "slider", "progress",
                      "icon_text", "tabs", "avatar", "rating", "menu"],
                [0.16, 0.13, 0.12, 0.09, 0.06, 0.07, 0.07, 0.05, 0.09, 0.04, 0.04, 0.04, 0.04])
    fs = logu(rng, 12, 36)  # font px; with margins this puts crop sizes near the real median 178x72
    m = [fs * rng.uniform(0.1, 1.2) + 2 for _ in range(4)]  # outer margins: left, top, right, bottom
    lw = max(1.0, fs * rng.uniform(0.06, 0.12))  # icon/outline stroke, output px
    g = W.GLYPHS[int(rng.integers(len(W.GLYPHS)))]
    ink = th.accent if rng.random() < 0.5 else th.fg
    txt = W.words(rng, 1, 2)
    if kind in ("button", "badge"):
        if kind == "button" and rng.random() < 0.3:
            txt = txt.upper()
        if kind == "badge":
            fs = fs * 0.75
            txt = str(int(rng.integers(1, 120))) if rng.random() < 0.4 else txt
        icon = kind == "button" and rng.random() < 0.25
        ipx, ipy = fs * rng.uniform(0.5 if kind == "badge" else 0.8, 2.0), fs * rng.uniform(0.3, 0.9)
        bw = W.text_width(txt, fs) + 2 * ipx + (fs * 1.4 if icon else 0)
        bh = fs * 1.2 + 2 * ipy
        rad = bh * (0.5 if kind == "badge" else pick(rng, [0.0, 0.1, 0.2, 0.5], [0.1, 0.45, 0.3, 0.15]))
        style = pick(rng, ["filled", "outline", "soft"], [0.6, 0.25, 0.15])
        fill = {"filled": th.accent, "outline": None, "soft": th.tint(th.accent, 0.18)}[style]
        tcol = th.on_accent if style == "filled" else th.accent
        shadow = style == "filled" and rng.random() < 0.35  # Material-style raised button / FAB
        if shadow:  # widen the margins by the shadow's reach so clear corners stay clear
            m[0], m[2], m[3] = m[0] + fs * 0.1, m[2] + fs * 0.1, m[3] + fs * 0.25

        def draw(d, u, page):
            box = (m[0] * u, m[1] * u, (m[0] + bw) * u, (m[1] + bh) * u)
            if shadow:
                e, dy = fs * 0.08 * u, fs * 0.14 * u
                d.rounded_rectangle((box[0] - e, box[1] + dy - e, box[2] + e, box[3] + dy + e), rad * u + e,
                                    fill=th.glow((0, 0, 0), 0.16))
            d.rounded_rectangle(box, rad * u, fill=fill, outline=th.accent if style == "outline" else None,
                                width=int(lw * u))
            x = m[0] + ipx
            if icon:
                W.glyph(d, g, (x * u, (m[1] + bh / 2 - fs * 0.5) * u, (x + fs) * u, (m[1] + bh / 2 + fs * 0.5) * u),
                        tcol, int(lw * u), fill or page)
                x += fs * 1.4
            W.text(d, (x * u, (m[1] + bh / 2) * u), txt, fs * u, tcol)

        return m[0] + bw + m[2], m[1] + bh + m[3], draw, {"kind": kind}
    if kind in ("icon", "avatar"):
        s = logu(rng, 14, 96)
        conts = ["none", "circle", "square", "outline"]
        cont = "circle" if kind == "avatar" else pick(rng, conts, [0.4, 0.2, 0.25, 0.15])
        initials = "".join(c for c in W.words(rng, 2, 2).title() if c.isupper())[:2]
        col = W.pick(rng, W.ACCENTS) if kind == "avatar" else th.accent

        def draw(d, u, page):
            box = (m[0] * u, m[1] * u, (m[0] + s) * u, (m[1] + s) * u)
            gi, gcol = 0.0, ink
            if cont == "circle":
                d.ellipse(box, fill=col)
                gi, gcol = 0.22, th.on_accent
            elif cont in ("square", "outline"):
                d.rounded_rectangle(box, s * rng.uniform(0.1, 0.3), fill=col if cont == "square" else None,
                                    outline=th.border if cont == "outline" else None, width=int(max(1, s * 0.05) * u))
                gi, gcol = 0.22, th.on_accent if cont == "square" else ink
            if kind == "avatar":
                W.text(d, ((m[0] + s / 2) * u, (m[1] + s / 2) * u), initials, s * 0.42 * u, (255, 255, 255), "mm")
                return
            b = (box[0] + gi * s * u, box[1] + gi * s * u, box[2] - gi * s * u, box[3] - gi * s * u)
            hole = col if cont in ("circle", "square") else page
            W.glyph(d, g, b, gcol, int(max(1.0, s * (1 - 2 * gi) * 0.1) * u), hole)

        return m[0] + s + m[2], m[1] + s + m[3], draw, {"kind": kind}
    if kind == "text":
        lines = [W.words(rng, 1, 5) for _ in range(1 if rng.random() < 0.8 else 2)]
        link = rng.random() < 0.25
        tcol = th.accent if link else pick(rng, [th.fg, th.muted])
        tw = max(W.text_width(t, fs) for t in lines)
        th_ = fs * 1.35 * len(lines)

        def draw(d, u, page):
            for k, t in enumerate(lines):
                y = m[1] + fs * 1.35 * (k + 0.5)
                W.text(d, (m[0] * u, y * u), t, fs * u, tcol)
                if link:
                    yy = (y + fs * 0.55) * u
                    d.line((m[0] * u, yy, (m[0] + W.text_width(t, fs)) * u, yy), fill=tcol,
                           width=max(u, int(fs * 0.07 * u)))

        return m[0] + tw + m[2], m[1] + th_ + m[3], draw, {"kind": kind}
    if kind in ("input", "dropdown"):
        iw, ih = fs * rng.uniform(6, 18), fs * rng.uniform(1.8, 2.6)
        if kind == "dropdown":  # the chevron needs the room; inputs may clip their text like real ones
            iw = max(iw, W.text_width(txt, fs) + fs * 2.8)
        rad = ih * pick(rng, [0.0, 0.12, 0.25, 0.5], [0.2, 0.45, 0.25, 0.1])
        placeholder = rng.random() < 0.7
        caret = kind == "input" and rng.random() < 0.4
        focus = rng.random() < 0.2

        def draw(d, u, page):
            box = (m[0] * u, m[1] * u, (m[0] + iw) * u, (m[1] + ih) * u)
            d.rounded_rectangle(box, rad * u, fill=th.surface, outline=th.accent if focus else th.border,
                                width=int(lw * (1.5 if focus else 1) * u))
            tx, cy = m[0] + fs * 0.7, m[1] + ih / 2
            W.text(d, (tx * u, cy * u), txt, fs * u, th.muted if placeholder else th.fg)
            if caret:
                x = (tx + (0 if placeholder else W.text_width(txt, fs)) + 2) * u
                d.line((x, (cy - fs * 0.6) * u, x, (cy + fs * 0.6) * u), fill=th.fg, width=max(u, int(fs * 0.06 * u)))
            if kind == "dropdown":
                gx = m[0] + iw - fs * 1.6
                W.glyph(d, "chevron", (gx * u, (cy - fs * 0.45) * u, (gx + fs * 0.9) * u, (cy + fs * 0.45) * u),
                        th.fg, int(lw * u))

        return m[0] + iw + m[2], m[1] + ih + m[3], draw, {"kind": kind}
    if kind in ("slider", "progress"):
        sw = logu(rng, 90, 420)
        kd = fs * rng.uniform(0.9, 1.6) if kind == "slider" else 0.0
        tk = fs * rng.uniform(0.2, 0.45) if kind == "slider" else fs * rng.uniform(0.3, 0.9)
        frac = rng.uniform(0.15, 0.85)  # never at an end: an end-stop knob would be a toggle
        hh = max(kd, tk)

        def draw(d, u, page):
            x0, cy = m[0] + kd / 2, m[1] + hh / 2
            x1 = m[0] + sw - kd / 2
            d.rounded_rectangle((x0 * u, (cy - tk / 2) * u, x1 * u, (cy + tk / 2) * u), tk / 2 * u,
                                fill=th.tint(th.border, 0.5))
            xf = x0 + (x1 - x0) * frac
            d.rounded_rectangle((x0 * u, (cy - tk / 2) * u, xf * u, (cy + tk / 2) * u), tk / 2 * u, fill=th.accent)
            if kind == "slider":
                d.ellipse(((xf - kd / 2) * u, (cy - kd / 2) * u, (xf + kd / 2) * u, (cy + kd / 2) * u),
                          fill=th.accent if rng.random() < 0.6 else th.tint(th.border, 0.9))

        return m[0] + sw + m[2], m[1] + hh + m[3], draw, {"kind": kind}
    if kind == "icon_text":  # menu row: icon then label, laid out exactly like a checkbox + label
        s = fs * rng.uniform(0.9, 1.4)
        gap = s * rng.uniform(0.4, 1.0)
        tw = W.text_width(txt, fs)

        def draw(d, u, page):
            cy = m[1] + max(s, fs * 1.25) / 2
            W.glyph(d, g, (m[0] * u, (cy - s / 2) * u, (m[0] + s) * u, (cy + s / 2) * u), ink, int(lw * u), page)
            W.text(d, ((m[0] + s + gap) * u, cy * u), txt, fs * u, th.fg)

        return m[0] + s + gap + tw + m[2], m[1] + max(s, fs * 1.25) + m[3], draw, {"kind": kind}
    if kind == "rating":  # 5 stars / hearts, k filled: filled-vs-empty shapes that are not checkboxes
        s, k, sp = fs * rng.uniform(1.0, 1.8), int(rng.integers(1, 5)), fs * rng.uniform(0.1, 0.5)
        on, off = pick(rng, [th.accent, (255, 193, 7), (239, 83, 80)]), th.tint(th.border, rng.uniform(0.3, 0.7))
        shape = "star" if rng.random() < 0.75 else "heart"

        def draw(d, u, page):
            for j in range(5):
                x = m[0] + j * (s + sp)
                W.glyph(d, shape, (x * u, m[1] * u, (x + s) * u, (m[1] + s) * u), on if j < k else off, u)

        return m[0] + 5 * s + 4 * sp + m[2], m[1] + s + m[3], draw, {"kind": kind}
    if kind == "menu":  # open dropdown list: a panel of 3-5 rows, one highlighted
        rows = [W.words(rng, 1, 3) for _ in range(int(rng.integers(3, 6)))]
        rh, hi = fs * rng.uniform(1.6, 2.2), int(rng.integers(-1, len(rows)))
        mw = max(W.text_width(t, fs) for t in rows) + fs * rng.uniform(1.5, 4)
        panel = th.surface if rng.random() < 0.6 else th.tint(th.fg, 0.1)

        def draw(d, u, page):
            d.rounded_rectangle((m[0] * u, m[1] * u, (m[0] + mw) * u, (m[1] + rh * len(rows)) * u), fs * 0.3 * u,
                                fill=panel, outline=th.tint(th.border, 0.6), width=u)
            for j, t in enumerate(rows):
                y = m[1] + rh * j
                if j == hi:
                    d.rectangle(((m[0] + 1) * u, y * u, (m[0] + mw - 1) * u, (y + rh) * u), fill=th.accent)
                W.text(d, ((m[0] + fs * 0.75) * u, (y + rh / 2) * u), t, fs * u, th.on_accent if j == hi else th.fg)

        return m[0] + mw + m[2], m[1] + rh * len(rows) + m[3], draw, {"kind": kind}
    # tabs: 2-4 labels, one selected (accent text + underline)
    labels = [W.words(rng, 1, 1) for _ in range(int(rng.integers(2, 5)))]
    sel = int(rng.integers(len(labels)))
    sp = fs * rng.uniform(1.0, 2.0)
    widths = [W.text_width(t, fs) for t in labels]

    def draw(d, u, page):
        x, cy = m[0], m[1] + fs * 0.8
        for k, (t, tw) in enumerate(zip(labels, widths)):
            W.text(d, (x * u, cy * u), t, fs * u, th.accent if k == sel else th.muted)
            if k == sel:
                d.rectangle((x * u, (cy + fs * 0.8) * u, (x + tw) * u, (cy + fs * 0.8 + lw * 1.5) * u), fill=th.accent)
            x += tw + sp

    return m[0] + sum(widths) + sp * (len(labels) - 1) + m[2], m[1] + fs * 1.8 + m[3], draw, {"kind": "tabs"}


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
        w, h, draw, meta = _plan_other(rng, th)
    else:
        w, h, draw, meta = _plan_control(rng, th, label == "checked")
    w = int(np.clip(round(w), MIN_SIDE, MAX_SIDE))
    h = int(np.clip(round(h), MIN_SIDE, MAX_SIDE))
    # 4x for small crops, 2x for big ones: LANCZOS cost grows with canvas area (~3.5 ms at 640x264).
    u = 4 if max(w, h) <= 64 else 3 if max(w, h) <= 128 else 2
    page = (*th.bg, 0 if th.transparent else 255)
    canvas = Image.new("RGBA", (w * u, h * u), page)
    draw(ImageDraw.Draw(canvas), u, page)
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


def _write_one(job: tuple[str, int, int]) -> str:
    out, seed, index = job
    img, label = render_index(seed, index)
    path = Path(out) / label / f"{label}_{index:06d}.png"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    img.save(tmp, format="PNG", compress_level=3)  # level 3: ~same size as 6, ~2x faster
    os.replace(tmp, path)  # an interrupted run leaves whole PNGs or a hidden .tmp, never a truncated .png
    return label


def _writer_alive(tmp_name: str) -> bool:
    """Is the process that owns `.<name>.<pid>.tmp` still running? Two runs generating the same cache
    at once (two Slurm jobs, say) must not delete each other's files in flight."""
    try:
        os.kill(int(tmp_name.rsplit(".", 2)[1]), 0)
        return True
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:  # alive, owned by another user
        return True


def generate(out_dir: str | Path, n: int, seed: int = 0, workers: int = 1) -> dict[str, int]:
    """Write n samples to out_dir/<class>/<class>_<index:06d>.png; returns counts per class.

    Cached: if out_dir/SYNTH.json (written last) matches n, seed and VERSION, nothing is redone."""
    return _generate(out_dir, n, seed, workers)[0]


def _generate(out_dir: str | Path, n: int, seed: int = 0, workers: int = 1) -> tuple[dict[str, int], bool]:
    if int(n) < 1:
        raise UserError(f"synth: --n must be at least 1, got {n}")
    if int(workers) < 1:
        raise UserError(f"synth: --workers must be at least 1, got {workers}")
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"synth: output path {out} exists and is not a directory")
    stamp_path, want = out / "SYNTH.json", {"n": int(n), "seed": int(seed), "version": VERSION}
    try:
        stamp = json.loads(stamp_path.read_text())
        if {k: stamp.get(k) for k in want} == want and isinstance(stamp.get("counts"), dict):
            return stamp["counts"], True
    except (OSError, ValueError):
        pass
    try:
        stamp_path.unlink(missing_ok=True)  # an interrupted regeneration must not look cached
        for c in CLASSES:
            (out / c).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"synth: cannot write to {out}: {e.strerror or e}") from None
    jobs = [(str(out), int(seed), i) for i in range(int(n))]
    if workers == 1:
        labels = [_write_one(j) for j in jobs]
    else:
        import multiprocessing

        # spawn, not Linux's default fork: `train` calls this with torch loaded (its thread pools and locks
        # do not survive a fork), e.g. for the pretrain stage; a spawned worker imports only this module.
        with multiprocessing.get_context("spawn").Pool(int(workers)) as pool:
            labels = list(pool.imap(_write_one, jobs, chunksize=64))
    for c in CLASSES:  # drop leftovers of an earlier, larger n and .tmp files of interrupted runs
        for p in (out / c).iterdir():
            mt = _NAME.match(p.name)
            stale_tmp = p.name.startswith(f".{c}_") and p.name.endswith(".tmp") and not _writer_alive(p.name)
            if (mt and int(mt.group(2)) >= n) or stale_tmp:
                p.unlink(missing_ok=True)
    counts = {c: labels.count(c) for c in CLASSES}
    tmp = stamp_path.with_name(".SYNTH.json.tmp")
    tmp.write_text(json.dumps({**want, "counts": counts}, indent=1) + "\n")
    os.replace(tmp, stamp_path)
    return counts, False


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


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `synth` on an argparse subparsers object; dispatch to run(args)."""
    p = subparsers.add_parser("synth", help="write the synthetic checkbox dataset to a folder",
                              description="Render N synthetic UI crops into OUT/<class>/ (cached by N, seed).")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--n", type=int, default=3000, help="number of images, classes balanced (default 3000)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    return p


def run(args) -> int:
    t0 = time.perf_counter()
    counts, cached = _generate(args.out, args.n, args.seed, args.workers)
    per = " ".join(f"{c}={counts[c]}" for c in CLASSES)
    verb = "already there (cached)" if cached else "written"
    print(f"synth: {sum(counts.values())} images {verb}: {per} -> {args.out} ({time.perf_counter() - t0:.1f}s)")
    return 0


if __name__ == "__main__":  # timing: python -m checkbox_dist.synth [samples]
    import sys

    rng, ts = np.random.default_rng(0), []
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 500):
        t = time.perf_counter()
        render_sample(rng)
        ts.append(time.perf_counter() - t)
    print(f"render_sample: median {np.median(ts) * 1e3:.2f} ms, p90 {np.percentile(ts, 90) * 1e3:.2f} ms, n={len(ts)}")
