"""Pictorial `other` crops for `checkbox_dist.synth.other`: icons (bare, in containers, with a count badge),
avatars, icon + label rows, photo avatars and app tiles, coloured dots.

    python -c "import numpy as np; from checkbox_dist.synth import render_sample; render_sample(np.random.default_rng(2), 'other')[0].show()"

Each planner has other.py's contract: planner(rng, theme, kind, fs, m, lw, g, ink, txt) -> (width, height,
draw(d, u, page), meta). These are the hardest negatives: a filled disc or tile with a label beside it is laid out
like a checkbox row, so the drawing rules here (no X in a square, no tick glyph) keep them out of 'checked'.
"""

from __future__ import annotations

import numpy as np

import checkbox_dist.synth.widgets as W
from checkbox_dist.synth.widgets import logu, pick


def icon_or_avatar(rng, th: W.Theme, kind, fs, m, lw, g, ink, txt):
    s = logu(rng, 14, 96)
    conts = ["none", "circle", "square", "outline", "ring"]
    cont = "circle" if kind == "avatar" else pick(rng, conts, [0.35, 0.2, 0.2, 0.1, 0.15])
    if g == "close" and cont in ("square", "outline"):  # an X in a box is the 'cross' checkbox style
        cont = "ring"
    initials = "".join(c for c in W.words(rng, 2, 2, cjk=0).title() if c.isupper())[:2]
    col = W.pick(rng, W.ACCENTS) if kind == "avatar" else th.accent
    # a notification count on 20 % of icons (a bell with a "3" must not look `checked`)
    badge = kind == "icon" and rng.random() < 0.2
    badge_col, count = pick(rng, [(220, 53, 69), (244, 67, 54), th.accent, (13, 110, 253)]), str(int(rng.integers(1, 10)))

    def draw(d, u, page):
        box = (m[0] * u, m[1] * u, (m[0] + s) * u, (m[1] + s) * u)
        draw_icon(d, u, page, box)
        if badge:  # over the icon; its disc stays inside the icon's box, so inside the canvas
            r = s * 0.22 * u
            d.ellipse((box[2] - 2 * r, box[1], box[2], box[1] + 2 * r), fill=badge_col)
            W.text(d, (box[2] - r, box[1] + r), count, r * 1.3, W.on_ink(badge_col), "mm")

    def draw_icon(d, u, page, box):
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

    return m[0] + s + m[2], m[1] + s + m[3], draw, {"kind": kind, "badge": badge}


def icon_text(rng, th: W.Theme, kind, fs, m, lw, g, ink, txt):
    """Menu row: icon then label, laid out exactly like a checkbox + label. 45 % of the icons sit in a filled
    disc or tile (people / space rows, app launchers; 30 % of those show letters, "Ai" + "Illustrator"): a
    coloured square or disc left of a label is what a checkbox row looks like, so these are hard negatives."""
    s = fs * rng.uniform(0.9, 1.4)
    tile = rng.random() < 0.45
    if tile:
        s = fs * rng.uniform(1.3, 2.4)
    gap = s * rng.uniform(0.4, 1.0)
    tw = W.text_width(txt, fs)
    tile_draw = plan_tile(rng, th, g)  # planned for bare icons too: the RNG stream must not depend on `tile`

    def draw(d, u, page):
        cy = m[1] + max(s, fs * 1.25) / 2
        box = (m[0] * u, (cy - s / 2) * u, (m[0] + s) * u, (cy + s / 2) * u)
        if tile:
            tile_draw(d, box, u)
        else:
            W.glyph(d, g, box, ink, int(lw * u), page)
        W.text(d, ((m[0] + s + gap) * u, cy * u), txt, fs * u, th.fg)

    return m[0] + s + gap + tw + m[2], m[1] + max(s, fs * 1.25) + m[3], draw, {"kind": kind, "tile": tile}


# Tile colours beyond the theme's accent: the yellows, greens and oranges of app and avatar tiles.
TILE_COLOURS = W.ACCENTS + [(240, 196, 80), (90, 200, 120), (250, 130, 60), (230, 60, 140), (40, 44, 52)]


def plan_tile(rng, th: W.Theme, g):
    """A glyph or two letters in a filled disc / rounded square, or letters in an outlined dark tile (Adobe-style);
    returns draw(d, box, u) for a square canvas box."""
    shape = pick(rng, ["circle", "square"], [0.45, 0.55])
    if g == "close":  # an X in a filled square is the 'filled_cross' checkbox style
        shape = "circle"
    col = pick(rng, TILE_COLOURS) if rng.random() < 0.6 else th.accent
    outlined = rng.random() < 0.15
    word = W.words(rng, 1, 1, cjk=0)
    letters = (word[0].upper() + word[1:2].lower()) if rng.random() < 0.3 else ""
    rad = rng.uniform(0.15, 0.3)

    def draw(d, box, u):
        s = box[2] - box[0]
        fill = W.mix(col, (0, 0, 0), 0.8) if outlined else col
        width = max(u, int(s * 0.06)) if outlined else 0
        if shape == "circle":
            d.ellipse(box, fill=fill, outline=col if outlined else None, width=width)
        else:
            d.rounded_rectangle(box, s * rad, fill=fill, outline=col if outlined else None, width=width)
        ink = col if outlined else W.on_ink(col)
        if letters:
            W.text(d, ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), letters, s * 0.42, ink, "mm")
        else:
            i = s * 0.24
            W.glyph(d, g, (box[0] + i, box[1] + i, box[2] - i, box[3] - i), ink, max(u, int(s * 0.07)), fill)

    return draw


def photo(rng, th: W.Theme, kind, fs, m, lw, g, ink, txt):
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


def dots(rng, th: W.Theme, kind, fs, m, lw, g, ink, txt):
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
