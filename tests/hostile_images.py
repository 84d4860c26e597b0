"""Hostile image bytes shared by the decoder, `predict` and `serve` tests (tests/data, tests/infer, tests/serve).

CRAFTED: files found by a seeded byte-mutation search over tiny Pillow-written GIF/TIFF files, each of
which made Pillow raise something other than OSError/ValueError/SyntaxError while opening or loading
(Pillow 13): the decoder must still call them bad images.
"""

from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image

CRAFTED = {
    # IndexError inside GifImagePlugin while counting frames (n_frames)
    "frames.gif": bytes.fromhex("474946383761060011008000000000000000002c000000000600140000080c00f3081c48b0a0c183"
                                "0203020021"),
    # TypeError "Missing dimensions" from TiffImagePlugin._setup (a mutated ImageWidth tag)
    "dims.tif": bytes.fromhex(
        "49492a00080000000a000001040001000000060000000101040001000000050000000201030003000000860000000301030001"
        "000000010000000601030001000000020000ea11010400010000008c00000015010300010000000300000016010400010000"
        "000500000017010400010000005a0000001c0103000100000001000000ce00000008000800080001020301020301020301"
        "0203010203010203010203010203010203010203010203010203010203a2020301020301020301020301020301020301020301"
        "0203010203010203010203010203010203010203010203010203010203"),
}


def png16(side: int = 7999) -> bytes:
    """A side x side 16-bit greyscale PNG of zeros: ~100 KB on disk, 2 bytes a pixel decoded."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((side, side), dtype=np.uint16)).save(buffer, "PNG")  # mode I;16
    return buffer.getvalue()


def seeds() -> dict[str, bytes]:
    """Small valid PNG, GIF (animated), TIFF and WebP files: what the fuzz tests mutate."""
    out = {}
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8), "RGB")
    for name, fmt, kwargs in [("a.png", "PNG", {}), ("a.tif", "TIFF", {}), ("b.tif", "TIFF", {"compression": "tiff_lzw"}),
                              ("a.webp", "WEBP", {"lossless": True})]:
        buffer = io.BytesIO()
        rgb.save(buffer, fmt, **kwargs)
        out[name] = buffer.getvalue()
    frames = [Image.new("P", (6, 5), i) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    out["a.gif"] = buffer.getvalue()
    return out


def mutants(n: int, seed: int) -> list[tuple[str, bytes]]:
    """`n` byte-mutated (1-4 random bytes changed, sometimes truncated) copies of the seeds, reproducible by seed."""
    rng = random.Random(seed)
    base = list(seeds().items())
    out = []
    for i in range(n):
        name, data = base[i % len(base)]
        data = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            data = data[:rng.randrange(1, len(data))]
        out.append((f"m{i}-{name}", bytes(data)))
    return out


def fuzz_seeds() -> list[int]:
    """The fixed seed, plus a rotating one (FUZZ_SEED to replay it): tests print the seed of a failing file."""
    import os
    import time

    return [0, int(os.environ.get("FUZZ_SEED", int(time.time()) % 100_000))]
