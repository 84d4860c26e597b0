"""The `other` class of `checkbox_dist.synth`: UI crops that are not checkboxes, radios or toggles.

    checkbox-dist synth --out /tmp/synth --n 300      # every third image, other/other_*.png, is one of these

plan_other(rng, theme) -> (width, height, draw(d, u, page), meta), the same contract as synth._plan_control;
the draws every kind shares are made first, then one _<kind> planner per kind (_PLANS) does the rest.
Hard negatives get most of the care: sliders, star ratings, icons in circles or boxes, icon+label rows,
chips with a delete cross, spinners, photo avatars and app tiles are shaped like controls; they are what
the ResNet50s of 2026-11-30 called `checked` or `unchecked` (13 + 10 of the 55 out-of-fold errors).
"""

from __future__ import annotations

import numpy as np

from checkbox_dist import synth_widgets as W
from checkbox_dist.synth_widgets import logu, pick


def plan_other(rng, th: W.Theme):
    kind = pick(rng, ["button", "icon", "text", "input", "dropdown", "badge", "slider", "progress",
                      "icon_text", "tabs", "avatar", "rating", "menu", "chip", "spinner", "photo", "dots"],
                [0.13, 0.12, 0.10, 0.08, 0.05, 0.06, 0.07, 0.04, 0.08, 0.03, 0.04, 0.03, 0.03, 0.05, 0.03, 0.04,
                 0.02])
    fs = logu(rng, 12, 36)  # font px; with margins this puts crop sizes near the real median 178x72
    m = [fs * rng.uniform(0.1, 1.2) + 2 for _ in range(4)]  # outer margins: left, top, right, bottom
    lw = max(1.0, fs * rng.uniform(0.06, 0.12))  # icon/outline stroke, output px
    g = W.GLYPHS[int(rng.integers(len(W.GLYPHS)))]
    ink = th.accent if rng.random() < 0.5 else th.fg
    txt = W.words(rng, 1, 2)
    return _PLANS[kind](rng, th, kind, fs, m, lw, g, ink, txt)


def _button_or_badge(rng, th: W.Theme, kind, fs, m, lw, g, ink, txt):
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


def _icon_or_avatar(rng, th: W.Theme, kind, fs, m, lw, g, ink, txt):
    s = logu(rng, 14, 96)
    conts = ["none", "circle", "square", "outline", "ring"]
    cont = "circle" if kind == "avatar" else pick(rng, conts, [0.35, 0.2, 0.2, 0.1, 0.15])
    if g == "close" and cont in ("square", "outline"):  # an X in a box is the 'cross' checkbox style
        cont = "ring"
    initials = "".join(c for c in W.words(rng, 2, 2, cjk=0).title() if c.isupper())[:2]
    col = W.pick(rng, W.ACCENTS) if kind == "avatar" else th.accent

    def draw(d, u, page):
        box = (m[0] * u, m[1] * u, (m[0] + s) * u, (m[1] + s) * u)
        gi, gcol = 0.0, ink
        if cont == "circle":
            d.ellipse(box, fill=col)
            gi, gcol = 0.22, th.on_accent
        elif cont == "ring":  # outlined circle around the icon (close, help, clock-like buttons)
            d.ellipse(box, outline=pick(rng, [th.border, ink]), width=int(max(1, s * 0.05) * u))
            gi = 0.25
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


def _text(rng, th: W.Theme, kind, fs, m, lw, g, ink, txt):
    n_lines = pick(rng, [1, 2, 3, 4, 5, 6], [0.7, 0.15, 0.05, 0.04, 0.03, 0.03])
    if n_lines > 2:  # a paragraph or card body: small print
        fs = fs * 0.6
    lines = [W.words(rng, 1, 5 if n_lines < 3 else 8) for _ in range(n_lines)]
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


def _input_or_dropdown(rng, th: W.Theme, kind, fs, m, lw, g, ink, txt):
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


def _slider_or_progress(rng, th: W.Theme, kind, fs, m, lw, g, ink, txt):
    kd = fs * rng.uniform(0.9, 1.6) if kind == "slider" else 0.0
    sw = max(logu(rng, 50, 420), 3 * kd)  # a track at least 3 knobs long (a shorter one reads as a toggle)
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


def _icon_text(rng, th: W.Theme, kind, fs, m, lw, g, ink, txt):
    """Menu row: icon then label, laid out exactly like a checkbox + label."""
    s = fs * rng.uniform(0.9, 1.4)
    gap = s * rng.uniform(0.4, 1.0)
    tw = W.text_width(txt, fs)

    def draw(d, u, page):
        cy = m[1] + max(s, fs * 1.25) / 2
        W.glyph(d, g, (m[0] * u, (cy - s / 2) * u, (m[0] + s) * u, (cy + s / 2) * u), ink, int(lw * u), page)
        W.text(d, ((m[0] + s + gap) * u, cy * u), txt, fs * u, th.fg)

    return m[0] + s + gap + tw + m[2], m[1] + max(s, fs * 1.25) + m[3], draw, {"kind": kind}


def _rating(rng, th: W.Theme, kind, fs, m, lw, g, ink, txt):
    """5 stars / hearts, k filled: filled-vs-empty shapes that are not checkboxes."""
    s, k, sp = fs * rng.uniform(1.0, 1.8), int(rng.integers(1, 5)), fs * rng.uniform(0.1, 0.5)
    on, off = pick(rng, [th.accent, (255, 193, 7), (239, 83, 80)]), th.tint(th.border, rng.uniform(0.3, 0.7))
    shape = "star" if rng.random() < 0.75 else "heart"

    def draw(d, u, page):
        for j in range(5):
            x = m[0] + j * (s + sp)
            W.glyph(d, shape, (x * u, m[1] * u, (x + s) * u, (m[1] + s) * u), on if j < k else off, u)

    return m[0] + 5 * s + 4 * sp + m[2], m[1] + s + m[3], draw, {"kind": kind}


def _menu(rng, th: W.Theme, kind, fs, m, lw, g, ink, txt):
    """Open dropdown list: a panel of 3-5 rows, one highlighted."""
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


def _chip(rng, th: W.Theme, kind, fs, m, lw, g, ink, txt):
    """Pill with a label, maybe a leading avatar dot and a trailing delete cross."""
    lead, delete = rng.random() < 0.3, rng.random() < 0.5
    ch, pad = fs * rng.uniform(1.8, 2.4), fs * rng.uniform(0.6, 1.0)
    cw = W.text_width(txt, fs) + 2 * pad + (ch * 0.8 if lead else 0) + (ch * 0.75 if delete else 0)
    outline = rng.random() < 0.4
    fill = None if outline else th.tint(th.fg, rng.uniform(0.08, 0.2))

    def draw(d, u, page):
        x0, y0 = m[0], m[1]
        d.rounded_rectangle((x0 * u, y0 * u, (x0 + cw) * u, (y0 + ch) * u), ch / 2 * u, fill=fill,
                            outline=th.border if outline else None, width=int(lw * u))
        x = x0 + pad * 0.6
        if lead:
            r = ch * 0.36
            d.ellipse(((x - pad * 0.3) * u, (y0 + ch / 2 - r) * u, (x - pad * 0.3 + 2 * r) * u,
                       (y0 + ch / 2 + r) * u), fill=th.accent)
            x += ch * 0.8
        W.text(d, (x * u, (y0 + ch / 2) * u), txt, fs * u, th.fg)
        if delete:
            r = ch * 0.3
            cx = x0 + cw - pad * 0.5 - r
            box = ((cx - r) * u, (y0 + ch / 2 - r) * u, (cx + r) * u, (y0 + ch / 2 + r) * u)
            d.ellipse(box, fill=th.muted)
            i = r * 0.45 * u
            W.glyph(d, "close", (box[0] + i, box[1] + i, box[2] - i, box[3] - i), fill or page, int(lw * u))

    return m[0] + cw + m[2], m[1] + ch + m[3], draw, {"kind": kind}


def _spinner(rng, th: W.Theme, kind, fs, m, lw, g, ink, txt):
    """Loading arc, maybe over a faint full ring."""
    s = logu(rng, 16, 96)
    start, extent = rng.uniform(0, 360), rng.uniform(60, 300)
    sw_ = max(1.0, s * rng.uniform(0.06, 0.14))
    track = rng.random() < 0.4

    def draw(d, u, page):
        box = (m[0] * u, m[1] * u, (m[0] + s) * u, (m[1] + s) * u)
        if track:
            d.ellipse(box, outline=th.tint(th.border, 0.5), width=int(sw_ * u))
        d.arc(box, start, start + extent, fill=pick(rng, [th.accent, th.fg]), width=int(sw_ * u))

    return m[0] + s + m[2], m[1] + s + m[3], draw, {"kind": kind}


def _photo(rng, th: W.Theme, kind, fs, m, lw, g, ink, txt):
    """Photo avatar (circle) or app tile (rounded square), maybe glowing, maybe labelled."""
    s = logu(rng, 20, 96)
    tile = rng.random() < 0.4
    cols = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(4)]
    # soft "photo" content: blobs placed wholly inside the shape (centre within 0.5 - radius of the middle)
    blobs = []
    for _ in range(3):
        br = rng.uniform(0.1, 0.3)
        a, rr = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.48 - br)
        blobs.append((0.5 + rr * np.cos(a) - br, 0.5 + rr * np.sin(a) - br, 2 * br))
    glow, label = rng.random() < 0.25, rng.random() < 0.35
    gl = s * 0.15 if glow else 0.0
    tw = W.text_width(txt, fs) + fs if label else 0.0

    def draw(d, u, page):
        x0, y0 = m[0] + gl, m[1] + gl
        box = (x0 * u, y0 * u, (x0 + s) * u, (y0 + s) * u)
        shape = (lambda b, **k: d.rounded_rectangle(b, s * 0.22 * u, **k)) if tile else d.ellipse
        if glow:
            e = gl * u
            shape((box[0] - e, box[1] - e, box[2] + e, box[3] + e), fill=th.glow(cols[1], 0.35))
        shape(box, fill=cols[0])
        for (bx, by, bd), c in zip(blobs, cols[1:]):
            d.ellipse(((x0 + bx * s) * u, (y0 + by * s) * u, (x0 + (bx + bd) * s) * u, (y0 + (by + bd) * s) * u),
                      fill=c)
        if tile:
            i = s * 0.25 * u
            W.glyph(d, pick(rng, W.GLYPHS), (box[0] + i, box[1] + i, box[2] - i, box[3] - i), (255, 255, 255),
                    int(s * 0.08 * u), cols[0])
        if label:
            W.text(d, ((x0 + s + fs) * u, (y0 + s / 2) * u), txt, fs * u, th.fg)

    return m[0] + s + 2 * gl + tw + m[2], m[1] + s + 2 * gl + m[3], draw, {"kind": kind}


def _dots(rng, th: W.Theme, kind, fs, m, lw, g, ink, txt):
    """Window-control dots, colour swatches, or a status dot before a label."""
    n = 1 if rng.random() < 0.5 else int(rng.integers(2, 5))
    r, sp = fs * rng.uniform(0.25, 0.6), fs * rng.uniform(0.3, 1.0)
    cols = [pick(rng, W.ACCENTS + [(255, 95, 87), (254, 188, 46), (40, 200, 64)]) for _ in range(n)]
    tw = W.text_width(txt, fs) + sp if n == 1 else 0.0
    hh = max(2 * r, fs * 1.25 if n == 1 else 0)

    def draw(d, u, page):
        cy = m[1] + hh / 2
        for j, c in enumerate(cols):
            x = m[0] + j * (2 * r + sp)
            d.ellipse((x * u, (cy - r) * u, (x + 2 * r) * u, (cy + r) * u), fill=c)
        if n == 1:
            W.text(d, ((m[0] + 2 * r + sp) * u, cy * u), txt, fs * u, th.fg)

    return m[0] + n * 2 * r + (n - 1) * sp + tw + m[2], m[1] + hh + m[3], draw, {"kind": kind}


def _tabs(rng, th: W.Theme, kind, fs, m, lw, g, ink, txt):
    """Tabs: 2-4 labels, one selected (accent text + underline)."""
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


# kind -> its planner; every planner returns (width, height, draw(d, u, page), meta)
_PLANS = {"button": _button_or_badge, "badge": _button_or_badge, "icon": _icon_or_avatar, "avatar": _icon_or_avatar,
          "text": _text, "input": _input_or_dropdown, "dropdown": _input_or_dropdown, "slider": _slider_or_progress,
          "progress": _slider_or_progress, "icon_text": _icon_text, "rating": _rating, "menu": _menu, "chip": _chip,
          "spinner": _spinner, "photo": _photo, "dots": _dots, "tabs": _tabs}
