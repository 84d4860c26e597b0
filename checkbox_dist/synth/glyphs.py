"""Icons and pseudo-CJK characters for `checkbox_dist.synth`, drawn with Pillow's ImageDraw primitives.

    python -c "from checkbox_dist.synth import render_sample; import numpy as np; render_sample(np.random.default_rng(1), 'other')[0].show()"

`glyph` draws one of GLYPHS (a small drawing function per name, _DRAW) into a square box; `cjk_glyph` draws
a pseudo-CJK character cell. Geometry is in canvas pixels of the supersampled canvas (see widgets.py). No icon
font is bundled with Pillow and none may be assumed on a user's machine, so every glyph is a few lines of
geometry: the same pixels on every machine, which keeps `checkbox-dist synth` byte-identical across runs and hosts.
"""

from __future__ import annotations

import numpy as np
from PIL import ImageDraw


def polyline(d: ImageDraw.ImageDraw, pts, w: int, fill, round_caps: bool = True) -> None:
    d.line(pts, fill=fill, width=w, joint="curve")
    if round_caps:
        r = w / 2
        for x, y in (pts[0], pts[-1]):
            d.ellipse((x - r, y - r, x + r, y + r), fill=fill)


GLYPHS = ("star", "arrow", "hamburger", "magnifier", "plus", "chevron", "heart", "home", "envelope", "play",
          "user", "download", "gear", "bell", "close", "pencil", "question", "scissors", "sun", "moon", "people")


def _star(d, P, col, w, hole):
    ang = np.linspace(-np.pi / 2, 1.5 * np.pi, 11)[:-1]
    rad = np.where(np.arange(10) % 2 == 0, 0.5, 0.2)
    d.polygon([P(0.5 + r * np.cos(a), 0.52 + r * np.sin(a)) for r, a in zip(rad, ang)], fill=col)


def _arrow(d, P, col, w, hole):
    polyline(d, [P(0.15, 0.5), P(0.85, 0.5)], w, col)
    polyline(d, [P(0.55, 0.2), P(0.85, 0.5), P(0.55, 0.8)], w, col)


def _hamburger(d, P, col, w, hole):
    for b in (0.25, 0.5, 0.75):
        polyline(d, [P(0.15, b), P(0.85, b)], w, col)


def _magnifier(d, P, col, w, hole):
    d.ellipse((*P(0.12, 0.12), *P(0.65, 0.65)), outline=col, width=w)
    polyline(d, [P(0.6, 0.6), P(0.88, 0.88)], int(w * 1.3), col)


def _plus(d, P, col, w, hole):
    polyline(d, [P(0.5, 0.15), P(0.5, 0.85)], w, col)
    polyline(d, [P(0.15, 0.5), P(0.85, 0.5)], w, col)


def _chevron(d, P, col, w, hole):
    polyline(d, [P(0.2, 0.35), P(0.5, 0.65), P(0.8, 0.35)], w, col)


def _heart(d, P, col, w, hole):
    d.ellipse((*P(0.08, 0.15), *P(0.52, 0.57)), fill=col)
    d.ellipse((*P(0.48, 0.15), *P(0.92, 0.57)), fill=col)
    d.polygon([P(0.11, 0.45), P(0.89, 0.45), P(0.5, 0.88)], fill=col)


def _home(d, P, col, w, hole):
    d.polygon([P(0.5, 0.1), P(0.9, 0.48), P(0.1, 0.48)], fill=col)
    d.rectangle((*P(0.22, 0.45), *P(0.78, 0.9)), fill=col)


def _envelope(d, P, col, w, hole):
    d.rectangle((*P(0.1, 0.22), *P(0.9, 0.78)), outline=col, width=w)
    d.line([P(0.1, 0.22), P(0.5, 0.55), P(0.9, 0.22)], fill=col, width=w, joint="curve")


def _play(d, P, col, w, hole):
    d.polygon([P(0.25, 0.15), P(0.85, 0.5), P(0.25, 0.85)], fill=col)


def _user(d, P, col, w, hole):
    d.ellipse((*P(0.32, 0.08), *P(0.68, 0.44)), fill=col)
    d.chord((*P(0.12, 0.52), *P(0.88, 1.28)), 180, 360, fill=col)


def _download(d, P, col, w, hole):
    polyline(d, [P(0.5, 0.1), P(0.5, 0.65)], w, col)
    polyline(d, [P(0.25, 0.42), P(0.5, 0.67), P(0.75, 0.42)], w, col)
    polyline(d, [P(0.15, 0.88), P(0.85, 0.88)], w, col)


def _gear(d, P, col, w, hole):
    ang = np.linspace(0, 2 * np.pi, 33)[:-1]  # 8 teeth, 2 vertices each
    rad = np.where((np.arange(32) // 2) % 2 == 0, 0.48, 0.37)
    d.polygon([P(0.5 + r * np.cos(a), 0.5 + r * np.sin(a)) for r, a in zip(rad, ang)], fill=col)
    if hole is not None:
        d.ellipse((*P(0.36, 0.36), *P(0.64, 0.64)), fill=hole)


def _close(d, P, col, w, hole):  # thin X: in a circle or bare; never in a square box (that is a checked style)
    for a, b in (((0.28, 0.28), (0.72, 0.72)), ((0.72, 0.28), (0.28, 0.72))):
        polyline(d, [P(*a), P(*b)], w, col)


def _pencil(d, P, col, w, hole):
    polyline(d, [P(0.22, 0.78), P(0.72, 0.28)], int(w * 1.8), col, round_caps=False)
    d.polygon([P(0.14, 0.86), P(0.18, 0.68), P(0.32, 0.82)], fill=col)


def _question(d, P, col, w, hole):
    d.arc((*P(0.3, 0.12), *P(0.7, 0.5)), 180, 90, fill=col, width=w)
    polyline(d, [P(0.5, 0.5), P(0.5, 0.64)], w, col)
    d.ellipse((*P(0.44, 0.76), *P(0.56, 0.88)), fill=col)


def _scissors(d, P, col, w, hole):
    d.ellipse((*P(0.1, 0.6), *P(0.36, 0.86)), outline=col, width=w)
    d.ellipse((*P(0.1, 0.14), *P(0.36, 0.4)), outline=col, width=w)
    polyline(d, [P(0.33, 0.38), P(0.9, 0.78)], w, col)
    polyline(d, [P(0.33, 0.62), P(0.9, 0.22)], w, col)


def _sun(d, P, col, w, hole):
    d.ellipse((*P(0.3, 0.3), *P(0.7, 0.7)), fill=col)
    for a in np.linspace(0, 2 * np.pi, 9)[:-1]:
        polyline(d, [P(0.5 + 0.3 * np.cos(a), 0.5 + 0.3 * np.sin(a)),
                     P(0.5 + 0.46 * np.cos(a), 0.5 + 0.46 * np.sin(a))], max(1, w // 2), col)


def _moon(d, P, col, w, hole):
    d.ellipse((*P(0.12, 0.12), *P(0.88, 0.88)), fill=col)
    d.ellipse((*P(0.34, 0.02), *P(1.0, 0.68)), fill=hole if hole is not None else (0, 0, 0, 0))


def _people(d, P, col, w, hole):  # two heads and shoulders (groups, "collaboration" icons)
    for cx in (0.32, 0.68):
        d.ellipse((*P(cx - 0.13, 0.2), *P(cx + 0.13, 0.46)), fill=col)
        d.chord((*P(cx - 0.22, 0.52), *P(cx + 0.22, 1.0)), 180, 360, fill=col)


def _bell(d, P, col, w, hole):
    d.chord((*P(0.2, 0.12), *P(0.8, 0.9)), 180, 360, fill=col)
    d.rectangle((*P(0.2, 0.5), *P(0.8, 0.75)), fill=col)
    d.ellipse((*P(0.42, 0.75), *P(0.58, 0.92)), fill=col)


# glyph name -> draw(d, P, col, w, hole), P(a, b) mapping unit coordinates into the glyph's box
_DRAW = {"star": _star, "arrow": _arrow, "hamburger": _hamburger, "magnifier": _magnifier, "plus": _plus,
         "chevron": _chevron, "heart": _heart, "home": _home, "envelope": _envelope, "play": _play, "user": _user,
         "download": _download, "gear": _gear, "bell": _bell, "close": _close, "pencil": _pencil,
         "question": _question, "scissors": _scissors, "sun": _sun, "moon": _moon, "people": _people}
assert set(_DRAW) == set(GLYPHS)


def glyph(d, kind: str, box, col, w: int, hole=None) -> None:
    """Simple icons that are neither ticks nor crosses (those would be 'checked' look-alikes). An unknown
    `kind` draws the bell. `hole` is the colour under the icon, used to punch the gear's and moon's centre."""
    x0, y0, x1, y1 = box
    s = x1 - x0

    def P(a, b):
        return (x0 + a * s, y0 + b * s)

    _DRAW.get(kind, _bell)(d, P, col, w, hole)


def cjk_glyph(d, x: float, y: float, px: float, cp: int, fill) -> None:
    """A square character cell of strokes (bars, posts, sweeps, a small box) seeded by the code point:
    at 64-128 px input what matters is the texture of a CJK label, which some real crops carry."""
    r = np.random.default_rng(cp)
    w = max(1.0, px * 0.075)
    m, s = px * 0.1, px * 0.8

    def P(a, b):
        return (x + m + a * s, y + m + b * s)

    for _ in range(int(r.integers(4, 9))):
        k = r.random()
        if k < 0.35:
            b, a0, a1 = r.uniform(0, 1), r.uniform(0, 0.4), r.uniform(0.6, 1)
            d.line((P(a0, b), P(a1, b)), fill=fill, width=int(w))
        elif k < 0.6:
            a, b0, b1 = r.uniform(0.1, 0.9), r.uniform(0, 0.4), r.uniform(0.6, 1)
            d.line((P(a, b0), P(a, b1)), fill=fill, width=int(w))
        elif k < 0.85:
            a, b = r.uniform(0.2, 0.8), r.uniform(0.0, 0.5)
            d.line((P(a, b), P(a + r.choice([-0.4, 0.4]), b + 0.5)), fill=fill, width=int(w))
        else:
            a, b = r.uniform(0, 0.5), r.uniform(0, 0.5)
            d.rectangle((P(a, b), P(a + 0.45, b + 0.45)), outline=fill, width=int(w))
