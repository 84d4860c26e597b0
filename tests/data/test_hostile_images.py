"""The decoder (data/images.py) on hostile bytes: crafted files are one BadImageError, never another exception."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from checkbox_dist.data.images import BadImageError, PreprocessSpec, decode
from hostile_images import CRAFTED, png16


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_files_are_bad_images(name):
    with pytest.raises(BadImageError) as caught:
        decode(CRAFTED[name], PreprocessSpec(image_size=32), name)
    message = str(caught.value)
    assert message.startswith(f"{name}: ") and "\n" not in message, message


def test_decode_refuses_by_decoded_bytes_before_decoding():
    from checkbox_dist.data.images import decode_cost

    data = png16(7999)  # ~100 KB file, 64 Mpx of 16-bit pixels: under the pixel cap
    assert len(data) < 200_000
    cost = decode_cost("I;16", (7999, 7999))
    assert cost >= 7999 * 7999 * 2  # at least bit depth x channels x pixels
    with pytest.raises(BadImageError, match=r"^big.png: 7999x7999 I;16 needs \d+ MiB to decode, over the 100 MiB"):
        decode(data, PreprocessSpec(image_size=32), "big.png", max_bytes=100 * 2**20)


def test_a_16_bit_image_decodes_within_its_stated_cost(tmp_path):
    """Peak RSS growth of one decode (a fresh process, VmHWM) stays under decode_cost: no float64 copies."""
    from checkbox_dist.data.images import decode_cost

    path = tmp_path / "big16.png"
    path.write_bytes(png16(7999))
    script = ("import sys; from checkbox_dist.data.images import PreprocessSpec, decode\n"
              "def hwm(): return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) * 1024\n"
              "data = open(sys.argv[1], 'rb').read(); before = hwm()\n"
              "t = decode(data, PreprocessSpec(image_size=32, image_width=48), 'big16.png')\n"
              "assert tuple(t.shape) == (3, 32, 48), t.shape\n"
              "print(hwm() - before)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    growth = int(proc.stdout.split()[-1])
    assert growth <= decode_cost("I;16", (7999, 7999)), f"peak grew {growth / 2**20:.0f} MiB"


def test_fuzz_corpus_through_the_decoder():
    """300 byte-mutated PNG/GIF/TIFF/WebP files per seed: each decodes to the model's input or is one
    BadImageError naming it; nothing else escapes."""
    from hostile_images import fuzz_seeds, mutants

    spec = PreprocessSpec(image_size=32, image_width=48)
    for seed in fuzz_seeds():
        bad = 0
        for name, data in mutants(300, seed):
            try:
                tensor = decode(data, spec, name)
            except BadImageError as err:
                assert str(err).startswith(f"{name}: ") and "\n" not in str(err), (seed, name, err)
                bad += 1
                continue
            except Exception as err:  # noqa: BLE001 - the point of the test
                pytest.fail(f"FUZZ_SEED={seed} {name}: {type(err).__name__}: {err} (bytes {data.hex()})")
            assert tuple(tensor.shape) == (3, 32, 48), (seed, name)
        assert 0 < bad < 300, (seed, bad)  # the corpus holds both kinds
