"""Decode any image file into the fixed-size uint8 tensor the model sees, the same way everywhere.

Training, evaluation, `predict` and `serve` all call `decode(source, spec)`; the spec travels inside
every checkpoint, so inference always preprocesses exactly as training did.

Why it is not `Image.open(p).convert("RGB")`: crops are often RGBA, and `convert("RGB")` keeps whatever
colour transparent pixels hold (often black), so a dark-on-clear tick turns into black-on-black. We
composite over `background`. (The 411 checkbox_state_v2 training PNGs are RGBA but, measured, every
pixel has alpha 255; the synthetic data and users' crops do use transparency.) Crops run from 24 px to 1804 px and up
to ~10:1 wide; `letterbox` keeps their shape (pads with the background), `stretch` is the seed's resize.
"""

from __future__ import annotations

import os

import contextlib
import functools
import io
import struct
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageColor, ImageFile, ImageSequence, UnidentifiedImageError

from checkbox_dist.core.errors import UserError

# 64 Mpx (8k x 8k) is ~40x the largest real crop (1804 px); a bigger file is a decompression bomb.
MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a half-grey image

# Decode memory (data/images.py decode_cost): by default whatever the pixel cap lets through (64 Mpx RGBA);
# `serve` sets a lower limit (--max-decode-mb) and shares a DecodeBudget between its decodes.
MAX_DECODE_BYTES = MAX_PIXELS * 8
# Above this many pixels an image is shrunk while it decodes (draft/reduce); below, decoded whole as before.
PREREDUCE_PIXELS = 4_000_000
# Bytes a pixel as Pillow stores a decoded image (others: 4).
STORAGE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class BadImageError(UserError):
    """A file that is not a readable image; the message starts with its path."""


# What Pillow's plugins raise on hostile bytes besides OSError: mutated GIFs raise IndexError while counting
# frames, mutated TIFFs TypeError/KeyError, others struct.error, EOFError, ZeroDivisionError, OverflowError,
# RecursionError ... Every one of them, during open/load/convert, is a bad image (tests/data/test_hostile_images.py).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, TypeError, LookupError, ArithmeticError, EOFError, struct.error,
                 AttributeError, RuntimeError, AssertionError)


@dataclass
class PreprocessSpec:
    """Everything needed to turn a file into model input; saved in each checkpoint as a plain dict."""

    image_size: int = 224  # height
    image_width: int = 0  # 0 = image_size (square)
    resize: str = "letterbox"
    background: str = "#ffffff"
    alpha_channel: bool = False
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])

    @property
    def height_width(self) -> tuple[int, int]:
        return self.image_size, self.image_width or self.image_size

    @property
    def size_text(self) -> str:
        """'64px' when square, '64x160px' (height x width) when not."""
        height, width = self.height_width
        return f"{height}px" if height == width else f"{height}x{width}px"

    @property
    def channels(self) -> int:
        return 4 if self.alpha_channel else 3

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (mean, std) of the model input; the alpha channel maps [0, 1] to [-1, 1]."""
        extra = (0.5,) if self.alpha_channel else ()
        return tuple(self.mean) + extra, tuple(self.std) + extra

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessSpec":
        return cls(**data)

    @classmethod
    def from_data_config(cls, data_cfg) -> "PreprocessSpec":
        imagenet = data_cfg.normalize == "imagenet"  # custom: data.mean/std, e.g. from `checkbox-dist stats`
        return cls(image_size=data_cfg.image_size, image_width=data_cfg.image_width, resize=data_cfg.resize, background=data_cfg.background,
                   alpha_channel=data_cfg.alpha_channel,
                   mean=[0.485, 0.456, 0.406] if imagenet else list(data_cfg.mean),
                   std=[0.229, 0.224, 0.225] if imagenet else list(data_cfg.std))


def parse_color(text: str) -> tuple[int, int, int]:
    try:
        return ImageColor.getrgb(text)[:3]
    except ValueError:
        raise UserError(f"data.background: {text!r} is not a colour (use a name or #rrggbb)") from None


def open_image(source, name: str | None = None, *, target: PreprocessSpec | None = None,
               max_bytes: int = MAX_DECODE_BYTES, budget: DecodeBudget | None = None) -> Image.Image:
    """Open and fully decode `source` (a path, bytes, or a data/sources.py Ref) as 8-bit RGBA; any failure is
    one `BadImageError` naming the file.

    Before any pixel is decoded, the header's size and mode give `decode_cost` (bytes this decode may hold at
    once): over `max_bytes` is a BadImageError, and `budget` (shared by concurrent decodes) is held for that
    many bytes until the RGBA image exists. With `target`, an image over PREREDUCE_PIXELS is decoded small:
    JPEG through `draft` (DCT scaling), the rest through `reduce` before any conversion, to no less than 3x
    the target's size per axis (what the final resize would reduce to anyway); smaller images are decoded whole.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    try:
        if hasattr(source, "encoded"):  # a data/sources.py Ref: its file, or its bytes (a tar member, a row)
            source = source.encoded()
        with _image_handle(source, label) as handle, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(handle) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise BadImageError(f"{label}: {width}x{height} is over the {MAX_PIXELS:,} pixel limit")
                factors = _reduce_factors(img.size, target)
                if img.format == "JPEG" and factors != (1, 1):
                    img.draft(img.mode, (width // factors[0], height // factors[1]))
                    factors = _reduce_factors(img.size, target)
                cost = decode_cost(img.mode, img.size)
                if cost > max_bytes:
                    raise BadImageError(f"{label}: {img.size[0]}x{img.size[1]} {img.mode} needs {_mib(cost)} MiB to "
                                        f"decode, over the {_mib(max_bytes)} MiB limit")
                with budget.hold(cost, label) if budget is not None else contextlib.nullcontext():
                    if getattr(img, "n_frames", 1) > 1:  # animated GIF/WebP/APNG: the first frame
                        img = next(iter(ImageSequence.Iterator(img)))
                    return _to_rgba(img, factors)
    except BadImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        kind = "not an image" if isinstance(err, UnidentifiedImageError) else "decompression bomb"
        raise BadImageError(f"{label}: {kind}") from None
    except DECODE_ERRORS as err:  # truncated/corrupt/crafted data raise these in PIL
        raise BadImageError(f"{label}: unreadable image ({_reason(err)})") from None


@contextlib.contextmanager
def _image_handle(source: str | Path | bytes, label: str):
    if isinstance(source, bytes):
        if not source:
            raise BadImageError(f"{label}: empty file")
        yield io.BytesIO(source)
        return
    path = Path(source)
    if path.stat().st_size == 0:
        raise BadImageError(f"{label}: empty file (0 bytes)")
    with path.open("rb") as handle:
        yield handle


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f}"


def decode_cost(mode: str, size: tuple[int, int]) -> int:
    """Bytes one decode of a `mode` image of `size` may hold at once, known from the header alone: the decoded
    pixels as Pillow stores them (bit depth x channels, padded: 1, 2 or 4 bytes a pixel) plus one full-size
    4-byte copy (the RGBA conversion, or the 16-bit to 8-bit rescale)."""
    return size[0] * size[1] * (STORAGE_BYTES.get(mode, 4) + 4)


class DecodeBusy(Exception):
    """No decode memory came free in time (the server answers 503: retry later)."""


class DecodeBudget:
    """At most `max_bytes` of `decode_cost` in flight across threads; a decode waits up to `timeout_s` for room.

    The bound on a server's decode memory: concurrent decodes together never hold more than max_bytes
    (plus the small images they produce), whatever the number of requests or threads."""

    def __init__(self, max_bytes: int, timeout_s: float = 30.0):
        self.max_bytes, self.timeout_s = max_bytes, timeout_s
        self.in_flight = 0
        self._free = threading.Condition()

    @contextlib.contextmanager
    def hold(self, cost: int, label: str):
        if cost > self.max_bytes:
            raise BadImageError(f"{label}: needs {_mib(cost)} MiB to decode, over the {_mib(self.max_bytes)} MiB "
                                f"decode memory")
        with self._free:
            if not self._free.wait_for(lambda: self.in_flight + cost <= self.max_bytes, self.timeout_s):
                raise DecodeBusy(f"{label}: no decode memory came free within {self.timeout_s:g} s")
            self.in_flight += cost
        try:
            yield
        finally:
            with self._free:
                self.in_flight -= cost
                self._free.notify_all()


def _reduce_factors(size: tuple[int, int], target: PreprocessSpec | None) -> tuple[int, int]:
    """Integer (x, y) shrink factors that leave at least 3x the target's size (the final resize's reducing gap)."""
    if target is None or size[0] * size[1] <= PREREDUCE_PIXELS:
        return 1, 1
    height, width = target.height_width
    if target.resize == "letterbox":
        scale = min(width / size[0], height / size[1])
        out = (size[0] * scale, size[1] * scale)
    else:
        out = (width, height)
    return tuple(max(1, int(n / max(o, 1) / 3.0)) for n, o in zip(size, out))


def _reason(err: BaseException) -> str:
    """Pillow's message for a decode failure, on one short line (its type name when it has none)."""
    text = " ".join(str(err).split())[:120]
    return text or type(err).__name__


def _to_rgba(img: Image.Image, factors: tuple[int, int] = (1, 1)) -> Image.Image:
    """Any PIL mode to 8-bit RGBA, keeping transparency (palette tRNS, LA) and scaling 16-bit data; shrunk by
    `factors` (box average, alpha premultiplied) as early as the mode allows."""
    img.load()
    shrink = factors != (1, 1)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        if shrink and img.mode in ("I", "F"):
            img = img.reduce(factors)
        img = _rescale_to_l(img)
    elif img.mode in ("P", "PA", "1"):
        img = img.convert("RGBA" if img.mode != "1" else "L")
    elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    if shrink and img.size != (1, 1):
        if img.mode in ("RGBA", "LA"):  # reduce premultiplied, as resize does, so clear pixels do not bleed
            premultiplied = {"RGBA": "RGBa", "LA": "La"}[img.mode]
            img = img.convert(premultiplied).reduce(factors).convert(img.mode)
        elif img.mode in ("L", "RGB", "RGBX"):
            img = img.reduce(factors)
    return img.convert("RGBA")


def _rescale_to_l(img: Image.Image, rows: int = 256) -> Image.Image:
    """16-bit / 32-bit / float greyscale to 8-bit "L" (PIL's convert("L") clips at 255), one block of rows at
    a time, so no full-size copy but the 8-bit result is made, whatever the image size."""
    low, high = img.getextrema()
    if img.mode == "F":
        span = max(float(high) - float(low), 1e-12)
        scale = 255.0 / span
    else:
        low = 0.0
        top = 65535.0 if img.mode.startswith("I;16") or high > 255 else 255.0
        scale = 255.0 / top
    width, height = img.size
    out = np.empty((height, width), dtype=np.uint8)
    for start in range(0, height, rows):
        block = (np.asarray(img.crop((0, start, width, min(height, start + rows)))).astype(np.float64) - low) * scale
        out[start:start + rows] = np.clip(block, 0, 255) if img.mode != "F" else block
    return Image.fromarray(out, "L")


def to_uint8_tensor(rgba: Image.Image, spec: PreprocessSpec) -> torch.Tensor:
    """RGBA image -> (C, H, W) uint8 tensor: alpha composited over the background, resized per spec."""
    height, width = spec.height_width
    background = parse_color(spec.background)
    if spec.resize == "letterbox":
        scale = min(width / rgba.width, height / rgba.height)
        new_size = (max(1, round(rgba.width * scale)), max(1, round(rgba.height * scale)))
        resized = rgba.resize(new_size, Image.Resampling.BILINEAR, reducing_gap=3.0)
        canvas = Image.new("RGBA", (width, height), (*background, 0))
        canvas.paste(resized, ((width - new_size[0]) // 2, (height - new_size[1]) // 2))
        rgba = canvas
    else:
        rgba = rgba.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
    array = np.asarray(rgba, dtype=np.float32)
    alpha = array[..., 3:4] / 255.0
    rgb = array[..., :3] * alpha + np.asarray(background, dtype=np.float32) * (1.0 - alpha)
    channels = [rgb, array[..., 3:4]] if spec.alpha_channel else [rgb]
    out = np.concatenate(channels, axis=-1).round().clip(0, 255).astype(np.uint8)
    return torch.from_numpy(out).permute(2, 0, 1).contiguous()


def decode(source, spec: PreprocessSpec, name: str | None = None, *,
           max_bytes: int = MAX_DECODE_BYTES, budget: DecodeBudget | None = None) -> torch.Tensor:
    """`source` as the model's uint8 input (see open_image for the memory limits and the early shrink)."""
    return to_uint8_tensor(open_image(source, name, target=spec, max_bytes=max_bytes, budget=budget), spec)


@functools.lru_cache(maxsize=64)
def device_constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(1, C, 1, 1) per-channel constant."""
    # Built once per device: a fresh torch.tensor(..., device="cuda") each step is a pageable copy,
    # which waits for the GPU stream to drain -- a host sync in the hot loop.
    return torch.tensor(values, dtype=dtype).view(1, -1, 1, 1).to(device)


def normalize(batch: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 or [0,1] float (N, C, H, W) -> normalised float; the alpha channel maps to [-1, 1]."""
    x = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch
    return standardize(x, *spec.normalization)


def standardize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(x - mean) / std per channel, with the constants cached on x's device."""
    return (x - device_constant(mean, x.device, x.dtype)) / device_constant(std, x.device, x.dtype)


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted; symlinked folders are not followed (no loops)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames) if is_image_file(Path(dirpath) / f)]
    return found
