"""Drawing primitives for `checkbox_dist.synth`: themes, checkboxes, radios, toggles, glyphs, text.

    python -c "import numpy as np; from checkbox_dist.synth import render_sample; render_sample(np.random.default_rng(0), 'checked')[0].show()"

Every function draws on a supersampled RGBA canvas. Geometry arrives in canvas pixels; `u` is the
supersampling factor (canvas pixels per output pixel), used so that a "1 px" border stays >= 1 output
pixel after the LANCZOS downsample. Colours are RGB tuples; `Theme.tint` pre-blends a colour with the
page background so translucent-looking things (halos, disabled fills) need no alpha blending, which
ImageDraw does not do on RGBA canvases.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageFilter, ImageFont

from checkbox_dist.synth.glyphs import GLYPHS, cjk_glyph, glyph, polyline  # noqa: F401 (W.GLYPHS, W.glyph)

Color = tuple[int, int, int]

# Page backgrounds seen in the real crops: mostly white, some light greys, a navy dark theme (14,25,41)
# and other near-black dark themes; white is listed 4x so it wins ~40% of light samples.
LIGHT_BGS: list[Color] = [(255, 255, 255)] * 4 + [(248, 249, 250), (241, 243, 245), (229, 231, 235),
                                                  (250, 250, 250), (236, 239, 244), (252, 253, 254)]
DARK_BGS: list[Color] = [(14, 25, 41), (14, 25, 41), (18, 18, 18), (33, 37, 41), (30, 30, 30),
                         (13, 17, 23), (38, 50, 56), (22, 27, 34)]
ODD_BGS: list[Color] = [(82, 150, 214), (100, 131, 165), (255, 248, 220), (225, 229, 235)]  # rare tinted panels
# Brand accents: Bootstrap/MUI/Tailwind blues, greens, purples, reds, oranges, plus black (native-ish).
ACCENTS: list[Color] = [(13, 110, 253), (25, 118, 210), (33, 150, 243), (37, 99, 235), (59, 130, 246),
                        (25, 135, 84), (76, 175, 80), (0, 150, 136), (156, 39, 176), (103, 58, 183),
                        (99, 102, 241), (220, 53, 69), (233, 30, 99), (255, 152, 0), (0, 0, 0),
                        (51, 51, 51), (0, 120, 212), (16, 185, 129)]
# Dark themes mostly use pastel accents (MUI dark: #90caf9), which need a dark tick on top.
DARK_ACCENTS: list[Color] = [(144, 202, 249), (165, 214, 255), (102, 187, 106), (206, 147, 216),
                             (187, 134, 252), (100, 181, 246), (77, 171, 247), (13, 110, 253)]

WORDS = ("Remember me Agree Subscribe Default Disabled Checked Option Label Send me updates Accept terms "
         "Newsletter Yellow Red Green Blue Monday Friday First Second Third Auto fill form Draft Info Bug "
         "Success Warning Parent Child Gardening Reading Music Sports Email SMS Notifications Dark mode "
         "Wi-Fi Bluetooth Location Public Private Show password Keep me signed in Select all Apples "
         "Oranges Small Medium Large Enabled Active Android iOS Web Favorite Outline Primary Secondary "
         "Item One Two Three Four Five Settings Profile Search Submit Cancel Save Delete Edit Next Back "
         "Continue Login Sign up Download Upload Share Inbox Home Help About Contact Filter Sort").split()


def lum(c: Color) -> float:
    """Relative luminance in 0..1 (Rec. 601 weights are plenty for picking white vs dark ink)."""
    return (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]) / 255.0


def mix(a: Color, b: Color, t: float) -> Color:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def logu(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Log-uniform: sizes are spread by ratio (12 px to 24 px matters as much as 24 to 48)."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def pick(rng: np.random.Generator, items, p=None):
    """rng.choice that returns the item itself (rng.choice turns tuples into arrays)."""
    return items[int(rng.choice(len(items), p=p))]


@dataclass
class Theme:
    bg: Color
    fg: Color  # label text
    muted: Color  # placeholder / secondary text
    border: Color  # empty-control outline
    surface: Color  # input / empty-box fill
    accent: Color
    on_accent: Color  # tick / knob / text on an accent fill
    dark: bool
    transparent: bool = False  # canvas is clear (alpha 0) off the element

    def tint(self, c: Color, t: float) -> Color:
        return mix(self.bg, c, t)

    def glow(self, c: Color, t: float):
        """A halo colour: pre-blended on an opaque page, real alpha on a clear one (drawn first, so the
        non-blending RGBA draw is still right)."""
        return (*c, int(255 * t)) if self.transparent else self.tint(c, t)


def make_theme(rng: np.random.Generator) -> Theme:
    r = rng.random()
    if r < 0.62:
        bg, dark = pick(rng, LIGHT_BGS), False
    elif r < 0.96:
        bg, dark = pick(rng, DARK_BGS), True
    else:
        bg = pick(rng, ODD_BGS)
        dark = lum(bg) < 0.55
    if dark:
        fg = pick(rng, [(255, 255, 255), (224, 224, 224), (201, 209, 217), (230, 237, 243)])
        border = pick(rng, [(139, 148, 158), (95, 107, 122), (117, 117, 117), (173, 181, 189)])
        accent = pick(rng, DARK_ACCENTS) if rng.random() < 0.7 else pick(rng, ACCENTS)
    else:
        fg = pick(rng, [(33, 37, 41), (51, 51, 51), (73, 80, 87), (0, 0, 0), (55, 65, 81), (31, 41, 55)])
        border = pick(rng, [(173, 181, 189), (118, 118, 118), (206, 212, 218), (0, 0, 0), (134, 142, 150),
                            (156, 163, 175)])
        accent = pick(rng, ACCENTS)
    if rng.random() < 0.12:  # an off-palette brand colour now and then
        accent = tuple(int(v) for v in rng.integers(0, 256, 3))
    surface = bg if rng.random() < 0.7 else mix(bg, fg, 0.06)
    return Theme(bg, fg, mix(bg, fg, 0.45), border, surface, accent, _on_accent(accent, bg, dark), dark)


def _on_accent(accent: Color, bg: Color, dark: bool) -> Color:
    return (255, 255, 255) if lum(accent) < 0.62 else mix(bg, (0, 0, 0), 0.5 if not dark else 0.0)


def untied(th: Theme, rng: np.random.Generator, checked: bool) -> Theme:
    """The theme one checkbox or radio is drawn with; its colour may disagree with its state, as a switch's
    may: 20 % of 'on' ones get a grey or text-coloured mark, 15 % of 'off' ones an accent outline. Real crops
    have grey 'on' boxes and radios (disabled, monochrome designs: a grey ring and dot, a grey square in a
    grey box) and accent-outlined 'off' ones (focus, brand borders)."""
    if checked and rng.random() < 0.2:
        ink = pick(rng, [th.border, th.fg, th.muted])
        return replace(th, accent=ink, on_accent=_on_accent(ink, th.bg, th.dark))
    if not checked and rng.random() < 0.15:
        return replace(th, border=th.accent)
    return th


@functools.lru_cache(maxsize=512)
def font(px: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled Aileron at `px` pixels; cached, as loading a font is not free."""
    return ImageFont.load_default(size=max(4, int(px)))  # type: ignore[return-value]


def stroke(rng: np.random.Generator, s: float, u: int, lo=0.06, hi=0.11) -> int:
    """Border width for a control of canvas size s: 6-11% of it (1-2 px on a 16-24 px box), >= 1 px."""
    return max(u, int(round(s * rng.uniform(lo, hi))))


def tick(d, box, w: int, fill, rng: np.random.Generator) -> None:
    """A check mark with randomised start, elbow and end: classic, low-elbow and long-tail ticks."""
    x0, y0, x1, y1 = box
    s = x1 - x0
    p = [(rng.uniform(0.18, 0.30), rng.uniform(0.44, 0.58)), (rng.uniform(0.36, 0.47), rng.uniform(0.64, 0.78)),
         (rng.uniform(0.70, 0.85), rng.uniform(0.20, 0.36))]
    polyline(d, [(x0 + a * s, y0 + b * s) for a, b in p], w, fill, round_caps=rng.random() < 0.7)


def cross(d, box, w: int, fill, rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = box
    s, i = x1 - x0, rng.uniform(0.22, 0.32)
    for a, b in (((i, i), (1 - i, 1 - i)), ((1 - i, i), (i, 1 - i))):
        polyline(d, [(x0 + a[0] * s, y0 + a[1] * s), (x0 + b[0] * s, y0 + b[1] * s)], w, fill)


def checkbox(d, x: float, y: float, s: float, th: Theme, rng, checked: bool, u: int) -> None:
    box, th = (x, y, x + s, y + s), untied(th, rng, checked)
    sw = stroke(rng, s, u)
    r = s * pick(rng, [0.0, 0.08, 0.14, 0.2, 0.3], [0.15, 0.3, 0.3, 0.15, 0.1])
    fill = th.surface if rng.random() < 0.5 else None
    if not checked:
        if rng.random() < 0.12:  # greyed "disabled" box, filled, no tick
            d.rounded_rectangle(box, r, fill=th.tint(th.border, rng.uniform(0.25, 0.6)))
        else:
            d.rounded_rectangle(box, r, fill=fill, outline=th.border, width=sw)
        return
    style = pick(rng, ["filled_tick", "outline_tick", "cross", "filled_cross", "inner_square", "circle_tick",
                       "filled_plain", "bare_tick"], [0.40, 0.18, 0.09, 0.05, 0.11, 0.08, 0.03, 0.06])
    if style == "filled_plain":  # a solid accent box, no mark (real 'checked' has a few; grey = unchecked)
        d.rounded_rectangle(box, r, fill=th.accent)
        return
    tw = max(u, int(round(s * rng.uniform(0.09, 0.16))))
    if style == "bare_tick":  # a tick with no box (menus, list pickers): real 'checked' has some
        tick(d, box, tw, th.accent if rng.random() < 0.5 else th.fg, rng)
        return
    if style in ("filled_tick", "filled_cross"):
        d.rounded_rectangle(box, r, fill=th.accent)
        (tick if style == "filled_tick" else cross)(d, box, tw, th.on_accent, rng)
    elif style in ("outline_tick", "cross"):
        ink = th.accent if rng.random() < 0.6 else th.fg
        d.rounded_rectangle(box, r, fill=fill, outline=th.border if rng.random() < 0.6 else ink, width=sw)
        (tick if style == "outline_tick" else cross)(d, box, tw, ink, rng)
    elif style == "inner_square":  # box with a filled square inside (older / custom designs)
        d.rounded_rectangle(box, r, fill=fill, outline=th.border if rng.random() < 0.5 else th.accent, width=sw)
        i = s * rng.uniform(0.2, 0.3)
        d.rounded_rectangle((x + i, y + i, x + s - i, y + s - i), r * 0.5, fill=th.accent)
    else:  # round check: filled disc with tick, or ring with tick
        if rng.random() < 0.5:
            d.ellipse(box, fill=th.accent)
            tick(d, box, tw, th.on_accent, rng)
        else:
            d.ellipse(box, outline=th.fg if rng.random() < 0.5 else th.accent, width=sw)
            tick(d, box, tw, th.fg, rng)


def radio(d, x: float, y: float, s: float, th: Theme, rng, checked: bool, u: int) -> None:
    box, th = (x, y, x + s, y + s), untied(th, rng, checked)
    sw = stroke(rng, s, u)
    if not checked:
        if rng.random() < 0.12:
            d.ellipse(box, fill=th.tint(th.border, rng.uniform(0.25, 0.5)))
        else:
            d.ellipse(box, fill=th.surface if rng.random() < 0.5 else None, outline=th.border, width=sw)
        return
    c = s / 2
    if rng.random() < 0.55:  # ring + dot (MUI / native)
        d.ellipse(box, outline=th.accent, width=sw)
        rr = s * rng.uniform(0.2, 0.3)
        d.ellipse((x + c - rr, y + c - rr, x + c + rr, y + c + rr), fill=th.accent)
    else:  # filled disc with a light centre (Bootstrap)
        d.ellipse(box, fill=th.accent)
        rr = s * rng.uniform(0.12, 0.22)
        d.ellipse((x + c - rr, y + c - rr, x + c + rr, y + c + rr), fill=th.on_accent)


def toggle(d, x: float, y: float, w: float, h: float, th: Theme, rng, checked: bool, u: int,
           room: float = 1e9) -> None:
    """Switch: 'on' = knob RIGHT, 'off' = knob LEFT: the knob position is the class signal.

    Colour usually agrees (accent track when on, grey when off) but not always: real crops have 'on'
    switches with grey or dark tracks and 'off' ones with an accent knob (MUI dark mode).
    `room`: the largest halo radius that stays inside the canvas (keeps clear corners clear)."""
    style = pick(rng, ["ios", "material", "outline"], [0.5, 0.35, 0.15])
    off_track = th.tint(th.border, rng.uniform(0.45, 0.9))
    light_knob = (255, 255, 255) if not th.dark else pick(rng, [(224, 224, 224), (189, 189, 189), (255, 255, 255)])
    if checked and rng.random() < 0.22:  # 'on' with a neutral track: grey, or the text colour faded
        on_track = off_track if rng.random() < 0.5 else th.tint(th.fg, rng.uniform(0.3, 0.6))
    else:
        on_track = th.accent
    if not checked and rng.random() < 0.1:  # 'off' with a pale accent track
        off_track = th.tint(th.accent, rng.uniform(0.25, 0.45))
    if style == "material":  # knob (diameter h) overhangs a thinner track
        th_h = h * rng.uniform(0.5, 0.65)
        track = (x, y + (h - th_h) / 2, x + w, y + (h + th_h) / 2)
        tcol = th.tint(on_track, rng.uniform(0.4, 0.6)) if checked else off_track
        accent_knob = checked if rng.random() < 0.85 else not checked
        kd, kcol = h, th.accent if accent_knob else light_knob
    else:
        track, inset = (x, y, x + w, y + h), h * rng.uniform(0.08, 0.16)
        kd = h - 2 * inset
        tcol = on_track if checked else off_track
        kcol = th.on_accent if checked and on_track == th.accent else light_knob
        if style == "outline":
            # knob 65-100 % of the track's inner height: real 'off' outlined switches may have a near-full knob
            tcol, kd = None, min(h - 2 * u, kd * rng.uniform(0.65, 1.15))
            kcol = pick(rng, [th.accent, th.fg]) if checked else th.border
    kx = x + w - h / 2 if checked else x + h / 2
    ky = y + h / 2
    if rng.random() < 0.15:  # focus / hover halo around the knob
        hr = min(h * rng.uniform(0.8, 1.0), room)
        d.ellipse((kx - hr, ky - hr, kx + hr, ky + hr), fill=th.glow(kcol, rng.uniform(0.12, 0.22)))
    rad = (track[3] - track[1]) / 2
    if tcol is None:
        d.rounded_rectangle(track, rad, outline=th.border, width=stroke(rng, h, u, 0.06, 0.1))
    else:
        d.rounded_rectangle(track, rad, fill=tcol)
    if style == "material" and rng.random() < 0.5:  # soft drop shadow under the knob
        o = kd * 0.06
        d.ellipse((kx - kd / 2, ky - kd / 2 + o, kx + kd / 2, ky + kd / 2 + o), fill=th.tint((0, 0, 0), 0.25))
    d.ellipse((kx - kd / 2, ky - kd / 2, kx + kd / 2, ky + kd / 2), fill=kcol)
    if rng.random() < 0.1:  # a sun / moon icon in the knob (dark-mode switches)
        i = kd * 0.22
        glyph(d, "sun" if rng.random() < 0.5 else "moon", (kx - kd / 2 + i, ky - kd / 2 + i, kx + kd / 2 - i,
              ky + kd / 2 - i), on_ink(kcol), max(u, int(kd * 0.08)), kcol)


def on_ink(c: Color) -> Color:
    """White or near-black, whichever reads on c."""
    return (255, 255, 255) if lum(c) < 0.6 else (33, 33, 33)


CJK_LO, CJK_HI = 0x4E00, 0x9FFF  # labels from this range are drawn as pseudo-CJK (no CJK font is bundled)


def _is_cjk(s: str) -> bool:
    return bool(s) and all(CJK_LO <= ord(c) <= CJK_HI for c in s)


def text(d, xy, s: str, px: float, fill, anchor: str = "lm") -> None:
    if not _is_cjk(s):
        d.text(xy, s, font=font(int(round(px))), fill=fill, anchor=anchor)
        return
    x, y = xy[0] - (text_width(s, px) / 2 if anchor[0] == "m" else 0), xy[1] - px / 2
    for k, c in enumerate(s):
        cjk_glyph(d, x + k * px, y, px, ord(c), fill)


def text_width(s: str, px: float) -> float:
    return len(s) * px if _is_cjk(s) else font(int(round(px))).getlength(s)


def words(rng: np.random.Generator, lo: int = 1, hi: int = 3, cjk: float = 0.07) -> str:
    """1-3 English UI words; with probability `cjk` a 2-8 character pseudo-CJK label instead (some real
    crops have Japanese and Chinese labels)."""
    if rng.random() < cjk:
        return "".join(chr(int(c)) for c in rng.integers(CJK_LO, CJK_HI + 1, int(rng.integers(2, 9))))
    n = int(rng.integers(lo, hi + 1))
    w = " ".join(WORDS[int(i)] for i in rng.integers(0, len(WORDS), n))
    return w[0].upper() + w[1:] if rng.random() < 0.85 else w.lower()


def capture_effects(img: Image.Image, rng) -> Image.Image:
    """Capture artefacts, each on ~10% of samples: slight blur, sensor-ish noise, JPEG round trip."""
    if rng.random() < 0.12:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    if rng.random() < 0.1:
        a = np.asarray(img).astype(np.int16)
        a[..., :3] += rng.normal(0, rng.uniform(2, 6), a[..., :3].shape).astype(np.int16)
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGBA")
    if rng.random() < 0.1:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=int(rng.integers(35, 80)))
        rgb = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        img = Image.merge("RGBA", (*rgb.split(), img.getchannel("A")))
    return img
