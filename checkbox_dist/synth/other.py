"""The `other` class of `checkbox_dist.synth`: UI crops that are not checkboxes, radios or toggles.

    checkbox-dist synth --out /tmp/synth --n 300      # every third image, other/other_*.png, is one of these

plan_other(rng, theme) -> (width, height, draw(d, u, page), meta), the same contract as
generator._plan_control; the draws every kind shares are made first, then one planner per kind (_PLANS) does
the rest; the pictorial ones (icons, avatars, icon + label rows, photos and app tiles, dots) are in pictures.py.
Hard negatives get most of the care: sliders, star ratings, icons in circles or boxes, icon+label rows,
chips with a delete cross, spinners, photo avatars and app tiles are shaped like controls.
"""

from __future__ import annotations

import checkbox_dist.synth.widgets as W
from checkbox_dist.synth.pictures import dots, icon_or_avatar, icon_text, photo
from checkbox_dist.synth.widgets import logu, pick


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
    # "neutral": a pale grey or white pill in the text colour, often raised (Material's extended FAB,
    # "NAVIGATE" with an arrow).
    style = pick(rng, ["filled", "outline", "soft", "neutral"], [0.52, 0.22, 0.13, 0.13])
    fill = {"filled": th.accent, "outline": None, "soft": th.tint(th.accent, 0.18),
            "neutral": th.tint(th.fg, rng.uniform(0.04, 0.14))}[style]
    tcol = {"filled": th.on_accent, "neutral": th.fg}.get(style, th.accent)
    shadow = style in ("filled", "neutral") and rng.random() < (0.35 if style == "filled" else 0.6)  # raised / FAB
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

    return m[0] + bw + m[2], m[1] + bh + m[3], draw, {"kind": kind, "style": style}


def _text(rng, th: W.Theme, kind, fs, m, lw, g, ink, txt):
    n_lines = pick(rng, [1, 2, 3, 4, 5, 6], [0.7, 0.15, 0.05, 0.04, 0.03, 0.03])
    if n_lines > 2:  # a paragraph or card body: small print
        fs = fs * 0.6
    # 25 % CJK lines (7 % in control labels): CJK text alone must not look like a control
    lines = [W.words(rng, 1, 5 if n_lines < 3 else 8, cjk=0.25) for _ in range(n_lines)]
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
    # 20 % of inputs are empty (no placeholder), some of them textarea-tall. At least 3x wider than tall: an
    # empty square is an unchecked box.
    empty = kind == "input" and rng.random() < 0.2
    if empty:
        txt, ih = "", fs * rng.uniform(1.8, 5.0)
        iw = max(iw, 3 * ih)
    rad = ih * pick(rng, [0.0, 0.12, 0.25, 0.5], [0.2, 0.45, 0.25, 0.1])
    placeholder = rng.random() < 0.7
    caret = kind == "input" and rng.random() < 0.4
    focus = rng.random() < 0.2

    def draw(d, u, page):
        box = (m[0] * u, m[1] * u, (m[0] + iw) * u, (m[1] + ih) * u)
        d.rounded_rectangle(box, rad * u, fill=th.surface, outline=th.accent if focus else th.border,
                            width=int(lw * (1.5 if focus else 1) * u))
        tx, cy = m[0] + fs * 0.7, m[1] + (min(ih / 2, fs * 1.1) if empty else ih / 2)  # a textarea's caret: top line
        W.text(d, (tx * u, cy * u), txt, fs * u, th.muted if placeholder else th.fg)
        if caret:
            x = (tx + (0 if placeholder else W.text_width(txt, fs)) + 2) * u
            d.line((x, (cy - fs * 0.6) * u, x, (cy + fs * 0.6) * u), fill=th.fg, width=max(u, int(fs * 0.06 * u)))
        if kind == "dropdown":
            gx = m[0] + iw - fs * 1.6
            W.glyph(d, "chevron", (gx * u, (cy - fs * 0.45) * u, (gx + fs * 0.9) * u, (cy + fs * 0.45) * u),
                    th.fg, int(lw * u))

    return m[0] + iw + m[2], m[1] + ih + m[3], draw, {"kind": kind, "empty": empty}


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
_PLANS = {"button": _button_or_badge, "badge": _button_or_badge, "icon": icon_or_avatar, "avatar": icon_or_avatar,
          "text": _text, "input": _input_or_dropdown, "dropdown": _input_or_dropdown, "slider": _slider_or_progress,
          "progress": _slider_or_progress, "icon_text": icon_text, "rating": _rating, "menu": _menu, "chip": _chip,
          "spinner": _spinner, "photo": photo, "dots": dots, "tabs": _tabs}
