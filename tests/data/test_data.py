"""Data: layouts, the split tool, mean/std, image decoding of every mode, letterbox/stretch, augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from checkbox_dist.data import augment
from checkbox_dist.core.config import AugmentConfig
from checkbox_dist.data.split import build_split, stratified_split
from checkbox_dist.core.errors import UserError
from checkbox_dist.data.images import BadImageError, PreprocessSpec, decode, open_image
from conftest import run_cli


def _png(path: Path, img: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def test_alpha_is_composited_over_the_background_not_dropped(tmp_path: Path):
    # A fully transparent pixel whose RGB is black: convert("RGB") would give black.
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0, 255))
    file = _png(tmp_path / "a.png", img)
    white = decode(file, PreprocessSpec(image_size=4, resize="stretch", background="#ffffff"))
    navy = decode(file, PreprocessSpec(image_size=4, resize="stretch", background="#0e1929"))
    assert white[:, 3, 3].tolist() == [255, 255, 255]
    assert navy[:, 3, 3].tolist() == [14, 25, 41]
    with_alpha = decode(file, PreprocessSpec(image_size=4, resize="stretch", alpha_channel=True))
    assert with_alpha.shape == (4, 4, 4) and with_alpha[3, 3, 3] == 0 and with_alpha[3, 0, 0] == 255


def test_letterbox_keeps_the_aspect_and_stretch_fills(tmp_path: Path):
    file = _png(tmp_path / "wide.png", Image.new("RGBA", (200, 50), (0, 0, 0, 255)))
    box = decode(file, PreprocessSpec(image_size=40, resize="letterbox", background="#ffffff"))
    assert box.shape == (3, 40, 40)
    dark_rows = (box[0] < 128).any(dim=1)
    assert dark_rows.sum() == 10  # 200x50 -> 40x10, centred, white bars above and below
    assert dark_rows[15:25].all() and not dark_rows[:15].any()
    stretch = decode(file, PreprocessSpec(image_size=40, resize="stretch"))
    assert (stretch < 128).all()
    # A wide input (data.image_width): 200x50 into 40 tall x 80 wide -> 80x20, twice the height of the square box.
    wide = decode(file, PreprocessSpec(image_size=40, image_width=80, resize="letterbox"))
    assert wide.shape == (3, 40, 80)
    dark = wide[0] < 128
    assert dark.any(dim=1).sum() == 20 and dark[10:30].all() and not dark[:10].any() and not dark[30:].any()
    assert (decode(file, PreprocessSpec(image_size=40, image_width=80, resize="stretch")) < 128).all()


@pytest.mark.parametrize("mode", ["L", "LA", "P", "I;16", "RGB", "CMYK", "1"])
def test_every_mode_loads(tmp_path: Path, mode: str):
    base = Image.new("RGB", (30, 12), (40, 120, 200))
    if mode == "I;16":
        img = Image.fromarray(np.full((12, 30), 40000, dtype=np.uint16))
    elif mode == "P":
        img = base.convert("P")
        img.info["transparency"] = 0
    else:
        img = base.convert(mode)
    suffix = ".jpg" if mode == "CMYK" else ".png"
    file = tmp_path / f"img{suffix}"
    img.save(file)
    out = decode(file, PreprocessSpec(image_size=16))
    assert out.dtype == torch.uint8 and out.shape == (3, 16, 16)
    if mode == "I;16":  # 40000/65535 of full scale, not clipped to 255
        assert 150 <= int(out[0, 8, 8]) <= 160


def test_tiny_and_animated_images_load(tmp_path: Path):
    tiny = _png(tmp_path / "one.png", Image.new("RGBA", (1, 1), (0, 0, 0, 255)))
    assert decode(tiny, PreprocessSpec(image_size=8)).shape == (3, 8, 8)
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 255, 0))]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    first = decode(gif, PreprocessSpec(image_size=10, resize="stretch"))
    assert first[0, 5, 5] > 200 and first[1, 5, 5] < 50  # the first (red) frame


@pytest.mark.parametrize("content, expected", [
    (b"", "empty file"),
    (b"this is not an image", "not an image"),
    ("truncated", "unreadable image"),
])
def test_bad_files_raise_one_clear_error(tmp_path: Path, content, expected: str):
    file = tmp_path / "bad.png"
    if content == "truncated":  # a real PNG cut in half
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(file)
        content = file.read_bytes()[: file.stat().st_size // 2]
    file.write_bytes(content)
    with pytest.raises(BadImageError) as err:
        open_image(file)
    assert str(err.value).startswith(str(file)) and expected in str(err.value)


def test_two_layouts_and_class_names_from_folders(tmp_path: Path):
    for cls in ("checked", "other", "unchecked"):
        for i in range(5):
            _png(tmp_path / "flat" / cls / f"{i}.png", Image.new("RGB", (8, 8)))
            _png(tmp_path / "split" / ("val" if i == 0 else "train") / cls / f"{i}.png", Image.new("RGB", (8, 8)))
    flat = build_split(tmp_path / "flat", val_fraction=0.2, seed=1)
    assert flat.classes == ["checked", "other", "unchecked"]
    assert len(flat.train) == 12 and len(flat.val) == 3
    pre = build_split(tmp_path / "split")
    assert len(pre.train) == 12 and len(pre.val) == 3 and all("val" in str(p) for p, _ in pre.val)


def test_empty_class_folder_is_an_error(tmp_path: Path):
    _png(tmp_path / "a" / "1.png", Image.new("RGB", (8, 8)))
    (tmp_path / "b").mkdir()
    with pytest.raises(UserError, match="class folder 'b' has no images"):
        build_split(tmp_path)


def test_stratified_split_is_seeded_and_stratified():
    labels = [0] * 177 + [1] * 110 + [2] * 124
    train, val = stratified_split(labels, 0.2, seed=42)
    assert sorted(train + val) == list(range(len(labels))) and not set(train) & set(val)
    assert [sum(1 for i in val if labels[i] == c) for c in range(3)] == [35, 22, 25]
    assert stratified_split(labels, 0.2, seed=42) == (train, val)
    assert stratified_split(labels, 0.2, seed=43) != (train, val)


def test_split_cli_writes_an_index_that_training_uses(synth_root: Path, tmp_path: Path):
    out = tmp_path / "split.json"
    proc = run_cli("split", "--data", str(synth_root), "--out", str(out), "--val-fraction", "0.25", "--seed", "7")
    index = json.loads(out.read_text())
    assert index["classes"] == ["checked", "other", "unchecked"]
    assert len(index["val"]) == 15 and len(index["train"]) == 45
    assert "val: 15 images" in proc.stdout
    again = build_split(synth_root, split_file=str(out))
    assert {p.name for p, _ in again.val} == {Path(r).name for r, _ in index["val"]}
    # Nothing was copied: the index holds relative paths into the data folder.
    assert all((synth_root / rel).is_file() for rel, _ in index["train"])


def test_stats_cli_prints_mean_and_std(synth_root: Path):
    proc = run_cli("stats", "--data", str(synth_root), "--image-size", "32")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("data.mean="))
    mean = json.loads(line.split("data.mean=")[1].split(" data.std=")[0])
    std = json.loads(line.split("data.std=")[1])
    assert len(mean) == 3 and all(0.3 < m < 1.0 for m in mean) and all(0.05 < s < 0.5 for s in std)


def test_augmentation_is_deterministic_and_identity_when_off():
    batch = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    off = AugmentConfig()
    params = augment.sample_params(4, off, augment.batch_generator(1, 1, 0, 0))
    assert torch.equal(augment.apply(batch, params, (255, 255, 255), off), batch.float() / 255)
    on = AugmentConfig(degrees=10, translate=0.1, scale=[0.8, 1.2], brightness=0.3, contrast=0.3, saturation=0.3,
                       hue=0.05, invert=0.5, grayscale=0.2, hflip=0.5)
    run = lambda seed, step: augment.apply(batch, augment.sample_params(4, on, augment.batch_generator(seed, 1, step, 0)),  # noqa: E731
                                           (255, 255, 255), on)
    assert torch.equal(run(1, 0), run(1, 0))
    assert not torch.equal(run(1, 0), run(1, 1))
    out = run(1, 0)
    assert out.min() >= 0 and out.max() <= 1 and out.shape == (4, 3, 16, 16)


def _reference_augment(batch, p, background, cfg):
    """The augmentation written op by op, as in torchvision (float64), with one clamp at the end."""
    import math

    import torch.nn.functional as F

    n = len(batch)
    x = batch.double() / 255
    fill = torch.tensor(tuple(background) + (0,) * (batch.shape[1] - 3), dtype=torch.float64).view(1, -1, 1, 1) / 255
    x = torch.where(p["hflip"].view(n, 1, 1, 1), x.flip(-1), x)
    x = torch.where(p["vflip"].view(n, 1, 1, 1), x.flip(-2), x)
    cos, sin, inv = p["angle"].double().cos(), p["angle"].double().sin(), 1 / p["scale"].double()
    theta = torch.stack([torch.stack([cos * inv, -sin * inv, -p["tx"].double()], 1),
                         torch.stack([sin * inv, cos * inv, -p["ty"].double()], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    rgb, rest = x[:, :3], x[:, 3:]
    v = lambda name: p[name].double().view(n, 1, 1, 1)  # noqa: E731
    gray = lambda y: 0.299 * y[:, 0:1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:3]  # noqa: E731
    rgb = rgb * v("brightness")
    mean = gray(rgb).mean(dim=(1, 2, 3), keepdim=True)
    rgb = (rgb - mean) * v("contrast") + mean
    rgb = (rgb - gray(rgb)) * v("saturation") + gray(rgb)
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)
    out = []
    for i in range(n):  # hue: rotate the I/Q chroma plane of each image by its own angle
        t = float(p["hue"][i]) * 2 * math.pi
        rot = torch.tensor([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]], dtype=torch.float64)
        out.append(torch.einsum("ij,jhw->ihw", torch.linalg.inv(yiq) @ rot @ yiq, rgb[i]))
    rgb = torch.stack(out)
    rgb = torch.where(p["invert"].view(n, 1, 1, 1), 1 - rgb, rgb)
    rgb = torch.where(p["grayscale"].view(n, 1, 1, 1), gray(rgb).expand_as(rgb), rgb)
    return torch.cat([rgb, rest], 1).clamp(0, 1)


@pytest.mark.parametrize("channels", [3, 4])
def test_fused_augmentation_equals_the_op_by_op_chain(channels):
    # apply() composes every colour op (and the normalisation) into one 3x3 map per image and folds the flips
    # into the affine grid; it must be the same function as the op-by-op chain, on every image.
    batch = torch.randint(0, 256, (16, channels, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    cfg = AugmentConfig(hflip=0.5, vflip=0.5, degrees=10, translate=0.1, scale=[0.8, 1.2], brightness=0.4,
                        contrast=0.4, saturation=0.4, hue=0.1, invert=0.5, grayscale=0.3)
    params = augment.sample_params(16, cfg, augment.batch_generator(0, 2, 5, 0))
    assert params["invert"].any() and not params["invert"].all() and params["hflip"].any()
    want = _reference_augment(batch, params, (250, 240, 200), cfg).float()
    got = augment.apply(batch, params, (250, 240, 200), cfg)
    assert torch.allclose(got, want, atol=2e-5), (got - want).abs().max()
    # Normalisation folded in, channels_last output: (x - mean) / std of the same values, in that layout.
    spec = PreprocessSpec(alpha_channel=channels == 4)
    mean, std = spec.normalization
    z = augment.apply(batch, params, (250, 240, 200), cfg, mean, std, channels_last=True)
    assert z.is_contiguous(memory_format=torch.channels_last)
    expect = (want - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    assert torch.allclose(z, expect, atol=1e-4), (z - expect).abs().max()


def test_compiled_augmentation_equals_eager():
    # train.compile=true runs the device half of apply() through torch.compile (inductor, C++ on the CPU): it
    # must be the same function, in both layouts (~15 s of compiling per layout on 2 cores; float sums in another
    # order differ by ~3e-5 in normalised units).
    batch = torch.randint(0, 256, (8, 4, 20, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    mean, std = PreprocessSpec(alpha_channel=True).normalization
    full = AugmentConfig(degrees=10, translate=0.1, scale=[0.8, 1.2], brightness=0.4, contrast=0.4, invert=0.5)
    params = augment.sample_params(8, full, augment.batch_generator(1, 1, 2, 0))
    for channels_last in (False, True):
        eager = augment.apply(batch, params, (250, 240, 200), full, mean, std, channels_last=channels_last)
        fused = augment.apply(batch, params, (250, 240, 200), full, mean, std, channels_last=channels_last,
                              compiled=True)
        assert fused.shape == eager.shape and fused.dtype == torch.float32
        assert fused.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert torch.allclose(fused, eager, atol=2e-4), (fused - eager).abs().max()
        assert eager.std() > 0.1  # a real image came out, not a constant


def test_each_colour_op_alone_matches_its_definition():
    batch = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    x = batch.double() / 255
    for name, kwargs in [("brightness", {"brightness": 0.5}), ("saturation", {"saturation": 0.9}),
                         ("invert", {"invert": 0.5}), ("grayscale", {"grayscale": 0.5})]:
        cfg = AugmentConfig(**kwargs)
        params = augment.sample_params(6, cfg, augment.batch_generator(4, 1, 0, 0))
        got = augment.apply(batch, params, (255, 255, 255), cfg).double()
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
        value = params[name].double().view(6, 1, 1, 1)
        want = {"brightness": (x * value).clamp(0, 1), "saturation": ((x - gray) * value + gray).clamp(0, 1),
                "invert": torch.where(value > 0, 1 - x, x), "grayscale": torch.where(value > 0, gray, x)}[name]
        assert torch.allclose(got, want, atol=1e-5), name


def test_rotation_turns_a_non_square_image_in_pixels():
    # Grid units are half the width across and half the height down; on a 32x64 image a 90 degree turn done
    # in grid units would move a dot 8 px right of centre to 4 px above it (a shear), not 8 px.
    batch = torch.zeros((1, 3, 32, 64), dtype=torch.uint8)
    batch[0, :, 15:17, 39:41] = 255  # centre (15.5, 31.5); the dot at (15.5, 39.5): 8 px right
    cfg = AugmentConfig(degrees=90)
    params = augment.sample_params(1, cfg, augment.batch_generator(0, 0, 0, 0))
    params["angle"][:] = torch.pi / 2
    bright = (augment.apply(batch, params, (0, 0, 0), cfg)[0, 0] > 0.5).nonzero().float()
    assert len(bright) == 4 and bright.mean(0).tolist() == pytest.approx([7.5, 31.5], abs=0.01)


def test_affine_padding_is_the_background():
    batch = torch.zeros((1, 3, 16, 16), dtype=torch.uint8)  # black image
    cfg = AugmentConfig(scale=[0.5, 0.5])  # zoom out: borders come from outside the image
    params = augment.sample_params(1, cfg, augment.batch_generator(0, 0, 0, 0))
    out = augment.apply(batch, params, (255, 255, 255), cfg)
    assert out[0, :, 0, 0].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert out[0, :, 8, 8].tolist() == pytest.approx([0.0, 0.0, 0.0])


def test_cutmix_pastes_one_box_from_the_partner_and_weights_labels_by_its_area():
    # Image i is the constant i, so every output pixel says which image it came from.
    n, classes = 8, 3
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 24, 40).contiguous()
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    shares = []
    for step in range(40):
        out, target = augment.mix(x.clone(), labels, classes, 0.0, 1.0, augment.batch_generator(0, 1, step, 0))
        assert torch.allclose(target.sum(1), torch.ones(n))
        for i in range(n):
            src = out[i, 0].long()
            assert (out[i] == out[i, 0:1]).all()  # the box covers every channel alike
            partner = src[src != i].unique().tolist()
            assert len(partner) <= 1  # one box, one partner per image
            own = (src == i).float().mean().item()
            if partner:  # the box is a rectangle: its rows and columns form a solid block
                rows, cols = (src != i).any(1).nonzero(), (src != i).any(0).nonzero()
                assert (src != i).sum() == len(rows) * len(cols) and rows.max() - rows.min() + 1 == len(rows)
                shares.append(own)
            # The image's own label carries exactly the share of pixels it kept (clipping included).
            want = torch.zeros(classes)
            want[labels[i]] += own
            want[labels[partner[0]] if partner else labels[i]] += 1 - own
            assert torch.allclose(target[i], want, atol=1e-6), (step, i)
    # Beta(1, 1): the nominal box is 0-100 % of the image; clipped at the edges, the kept share averages more
    # than 1/2 (~0.7 over these 40 batches) and still spans most of (0, 1).
    assert 0.5 < float(np.mean(shares)) < 0.85 and min(shares) < 0.35 and max(shares) > 0.9, shares


def test_mixup_and_cutmix_together_take_one_of_the_two_per_batch():
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    kinds = set()
    for step in range(20):
        gen = lambda: augment.batch_generator(3, 0, step, 0)  # noqa: E731 - the same draw, twice
        out, _ = augment.mix(x.clone(), labels, 3, 0.4, 1.0, gen())
        again, _ = augment.mix(x.clone(), labels, 3, 0.4, 1.0, gen())
        assert torch.equal(out, again)  # a function of (seed, epoch, step, rank): a resumed run mixes alike
        # CutMix keeps part of an image exactly; mixup all of it (paired with itself) or none
        kept = (out == x).flatten(1).float().mean(1)
        kinds.add("cutmix" if ((kept > 0) & (kept < 1)).any() else "mixup" if (kept == 0).any() else "none")
    assert kinds == {"cutmix", "mixup"}


@pytest.mark.parametrize("shape", [(16, 3, 24, 24), (6, 4, 20, 52)])
def test_warp_equals_grid_sample(shape):
    # augment.warp replaces F.grid_sample (a CPU fallback under torch_xla, issue 38): the same bilinear function,
    # zeros outside, on square and wide images, under rotation, zoom in and out, shift and flips.
    gen = torch.Generator().manual_seed(7)
    n = shape[0]
    x = torch.rand(shape, generator=gen) * 255 - 128  # pixel minus background, as apply() samples it
    angle, inv = (torch.rand(n, generator=gen) - 0.5) * 1.2, 1 / (0.6 + 0.8 * torch.rand(n, generator=gen))
    flip = torch.where(torch.rand(n, 2, generator=gen) < 0.5, -1.0, 1.0)
    shift = (torch.rand(n, 2, generator=gen) - 0.5) * 0.6
    theta = torch.stack([torch.stack([angle.cos() * inv, -angle.sin() * inv, shift[:, 0]], 1),
                         torch.stack([angle.sin() * inv, angle.cos() * inv, shift[:, 1]], 1)], 1) * flip[:, :, None]
    grid = torch.nn.functional.affine_grid(theta, list(shape), align_corners=False)
    want = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    got = augment.warp(x, theta)
    assert (want == 0).float().mean() > 0.05  # some pixels come from outside the image
    assert torch.allclose(got, want, atol=0.02, rtol=0), (got - want).abs().max()  # 0..255 units: float32 rounding
