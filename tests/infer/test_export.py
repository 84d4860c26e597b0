"""`checkbox-dist export` through the real CLI: ONNX parity with PyTorch (real images when present), the
dynamic batch axis, metadata, int8, TorchScript, safetensors, `predict --backend onnx`, no half-written
files, and a smoke run of `bench-infer` (no timing asserted: benchmarks are commands).

~30 s on 2 cores (alone), most of it the one ONNX export (dynamo exporter) + int8 calibration.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_main

PARITY = 1e-4


def _parity_images(predictor, real_root: Path | None, synth_root: Path, n: int = 48) -> torch.Tensor:
    """uint8 images preprocessed as the checkpoint says: from real_root, or synthetic ones when it is None."""
    from checkbox_dist.infer.predict import list_images

    files = list_images(real_root if real_root is not None else synth_root)
    files = files[:: max(1, len(files) // n)][:n]  # spread over every class folder
    return torch.stack([predictor.decode(f)[0] for f in files])


@pytest.fixture(params=["synthetic", "real"])
def real_root(request):
    """None (synthetic crops), or the real crops: a visible skip where they are not present."""
    from conftest import REAL_DATA

    if request.param == "synthetic":
        return None
    if not REAL_DATA.is_dir():
        pytest.skip(f"real crops not present at {REAL_DATA}: ONNX parity checked on synthetic crops only")
    return REAL_DATA


def test_onnx_matches_pytorch_with_dynamic_batch_and_metadata(infer_exported, real_root, synth_root):
    import onnx

    from checkbox_dist.infer.predictor import OnnxMember, Predictor

    onnx_path = infer_exported / "model.onnx"
    model = onnx.load(str(onnx_path))
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic: any batch size
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    meta = json.loads({p.key: p.value for p in model.metadata_props}["checkbox_dist"])
    payload = torch.load(infer_exported / "model.pt", map_location="cpu", weights_only=True)
    assert meta["classes"] == payload["classes"] and meta["preprocess"] == payload["preprocess"]
    assert meta["temperature"] == pytest.approx(payload["temperature"]) and meta["temperature"] != 1.0
    assert meta["checkpoint_sha256"] == json.loads((infer_exported / "meta.json").read_text())["files"]["model.pt"]

    eager = Predictor([infer_exported], device="cpu")
    onnx_member = OnnxMember(onnx_path)
    images = _parity_images(eager, real_root, synth_root)
    for batch in (images[:1], images[:7], images):  # several batch sizes through the one graph
        reference = eager.predict_tensors([batch])
        got = onnx_member.probs(batch, tta=False)
        assert got.shape == reference.shape
        assert float((got - reference).abs().max()) < PARITY
    assert torch.allclose(onnx_member.probs(images, False).sum(1), torch.ones(len(images)), atol=1e-5)


def test_predict_backend_onnx_and_int8(infer_exported, synth_root):
    folder = str(synth_root / "checked")
    runs = {}
    for name, args in {"torch": ["--checkpoint", str(infer_exported)],
                       "onnx": ["--checkpoint", str(infer_exported.parent.parent), "--backend", "onnx"],
                       "int8": ["--checkpoint", str(infer_exported / "model.int8.onnx")]}.items():
        code, stdout, _ = run_main("predict", *args, folder, "--format", "jsonl")
        assert code == 0
        runs[name] = [json.loads(line) for line in stdout.splitlines()]
    assert len(runs["torch"]) == len(runs["onnx"]) == len(runs["int8"]) == 20
    for t, o, q in zip(runs["torch"], runs["onnx"], runs["int8"]):
        assert t["input"] == o["input"] == q["input"]
        for c in t["confidence"]:
            assert abs(t["confidence"][c] - o["confidence"][c]) < PARITY
            assert abs(t["confidence"][c] - q["confidence"][c]) < 0.1  # int8: close, not equal
        assert sum(q["confidence"].values()) == pytest.approx(1, abs=1e-4)

    from checkbox_dist.infer.onnx_meta import read_metadata

    quant = read_metadata(infer_exported / "model.int8.onnx")["quantization"]
    assert quant["mode"] == "static" and "calibration" in quant


@pytest.fixture(scope="module")
def confident(tmp_path_factory, cache_dir) -> tuple[Path, list[Path], list[str]]:
    """A checkpoint that is sure of itself, exported with --int8: test_resnet trained on an easy set (reddish,
    greenish, bluish noise, 20 per class, no augmentation) to val top-1 1.0; (best, image files, their classes)."""
    import numpy as np
    from PIL import Image

    from conftest import run_cli, tiny_train_args

    root = tmp_path_factory.mktemp("easy")
    rng = np.random.default_rng(0)
    files, labels = [], []
    for name, rgb in {"checked": (200, 40, 40), "other": (40, 200, 40), "unchecked": (40, 40, 200)}.items():
        (root / "data" / name).mkdir(parents=True)
        for i in range(20):
            files.append(root / "data" / name / f"{i:02d}.png")
            labels.append(name)
            Image.fromarray(np.clip(rng.normal(rgb, 25, (32, 32, 3)), 0, 255).astype(np.uint8)).save(files[-1])
    run = root / "run"
    run_cli(*tiny_train_args(run, cache_dir, "train.epochs=4", "data.batch_size=16", "train.label_smoothing=0.0",
                             "data.augment.translate=0.0", "data.augment.scale=[1.0, 1.0]",
                             "data.augment.brightness=0.0", "data.augment.contrast=0.0", "data.augment.invert=0.0",
                             "eval.confusion_every_epochs=1000", data_root=root / "data"))
    best = run / "checkpoints" / "best"
    # the legacy exporter: faster to run; the int8 step after it is the same (the dynamo one: infer_exported)
    proc = run_cli("export", "--checkpoint", str(best), "--format", "onnx", "--int8", "--onnx-exporter", "legacy")
    assert "top-1 agrees with float32 on 100.0%" in proc.stdout, proc.stdout
    return best, files, labels


def test_int8_keeps_the_top1_of_a_confident_model(confident):
    """On a model that knows its classes, int8 must keep every decision and the probabilities: a graph that
    answers a constant, or one whose quantized activations lost the signal, fails here."""
    best, files, labels = confident
    runs = {}
    for name, source in {"torch": best, "int8": best / "model.int8.onnx"}.items():
        code, stdout, stderr = run_main("predict", "--checkpoint", str(source), *map(str, files), "--format", "jsonl")
        assert code == 0, stderr
        runs[name] = [json.loads(line) for line in stdout.splitlines()]
    assert [r["class"] for r in runs["torch"]] == labels  # the float32 model is right on every image ...
    assert min(r["score"] for r in runs["torch"]) > 0.9  # ... and sure of it
    assert [r["class"] for r in runs["int8"]] == [r["class"] for r in runs["torch"]]  # top-1 agreement: all
    worst = max(abs(t["confidence"][c] - q["confidence"][c]) for t, q in zip(runs["torch"], runs["int8"])
                for c in t["confidence"])
    assert worst < 0.02, worst


def test_torchscript_and_safetensors_reproduce_the_checkpoint(infer_checkpoint, tmp_path, synth_root):
    import timm
    from safetensors import safe_open
    from safetensors.torch import load_file

    from checkbox_dist.data.images import normalize
    from checkbox_dist.infer.predictor import Predictor

    eager = Predictor([infer_checkpoint], device="cpu")
    images = _parity_images(eager, None, synth_root, n=6)
    reference = eager.predict_tensors([images])

    ts = tmp_path / "m.pt"
    code, stdout, _ = run_main("export", "--checkpoint", str(infer_checkpoint), "--format", "torchscript",
                               "--out", str(ts))
    assert code == 0 and f"wrote {ts}" in stdout
    extra = {"checkbox_dist.json": ""}
    scripted = torch.jit.load(str(ts), _extra_files=extra)
    with torch.no_grad():
        logits, probs = scripted(images)
    assert float((probs - reference).abs().max()) < 1e-5
    assert json.loads(extra["checkbox_dist.json"])["classes"] == eager.classes

    st = tmp_path / "w.safetensors"
    code, _, _ = run_main("export", "--checkpoint", str(infer_checkpoint), "--format", "safetensors", "--out", str(st))
    assert code == 0
    with safe_open(str(st), "pt") as handle:
        meta = json.loads(handle.metadata()["checkbox_dist"])
    model = timm.create_model(meta["model_name"], num_classes=len(meta["classes"])).eval()
    model.load_state_dict(load_file(str(st)))
    with torch.no_grad():
        assert torch.allclose(model(normalize(images, eager.spec)), logits, atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "MISSING", "--format", "onnx"], "checkpoint not found"),
    (["--checkpoint", "CKPT", "--format", "torchscript", "--int8"], "--int8 applies to"),
], ids=["checkpoint not found", "int8 with torchscript"])
def test_export_usage_errors_are_one_line(infer_checkpoint, tmp_path, args, message):
    args = [{"MISSING": str(tmp_path / "nope"), "CKPT": str(infer_checkpoint)}.get(a, a) for a in args]
    code, _, stderr = run_main("export", *args)
    assert code == 2 and stderr.startswith("error: ") and message in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_a_failed_export_is_one_line_and_leaves_no_file(infer_checkpoint, tmp_path):
    from reliability_harness import cli, one_line_error

    # A real export that dies while writing: a 512 KiB file-size limit (`ulimit -f`) on the export process, the
    # graph is ~1.6 MB. One line, exit 2, and nothing left in the output folder (no partial or temporary file).
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    failed = cli(["export", "--checkpoint", str(infer_checkpoint), "--format", "onnx", "--out", str(out)],
                 max_file_bytes=512 << 10)
    line = one_line_error(failed)
    assert "File too large" in line, line
    assert list(out.parent.iterdir()) == []


def test_bench_infer_runs_and_prints_ratios(infer_exported):
    # A smoke run of the command (tiny counts); the figures themselves are quoted in docs/INFERENCE.md.
    code, stdout, _ = run_main("bench-infer", "--checkpoint", str(infer_exported), "--n", "12", "--repeats", "1",
                               "--iters", "4", "--batch", "8", "--threads", "2")
    assert code == 0
    lines = stdout.splitlines()
    rows = {line[:22].strip(): line[22:].split() for line in lines[2:6]}
    assert list(rows) == ["model(x) loop", "eager Predictor", "ONNX Runtime", "ONNX int8 static"], stdout
    assert rows["model(x) loop"][:3] == ["1.00x", "1.00x", "1.00x"]
    assert all(value.endswith("x") for row in rows.values() for value in row[:3])
    assert rows["ONNX Runtime"][4] == "100.0%"  # same top-1 as the eager Predictor on every image


def test_legacy_exporter_and_dynamic_int8(infer_checkpoint, tmp_path, synth_root):
    from checkbox_dist.infer.predictor import OnnxMember, Predictor
    from checkbox_dist.infer.onnx_meta import read_metadata

    out = tmp_path / "legacy" / "m.onnx"
    code, stdout, stderr = run_main("export", "--checkpoint", str(infer_checkpoint), "--format", "onnx", "--out",
                                    str(out), "--onnx-exporter", "legacy", "--int8", "--int8-mode", "dynamic")
    assert code == 0, stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.int8.onnx", "m.onnx"]  # no temporary files left
    assert read_metadata(out.parent / "m.int8.onnx")["quantization"]["mode"] == "dynamic"
    eager = Predictor([infer_checkpoint], device="cpu")
    images = _parity_images(eager, None, synth_root, n=9)
    assert float((OnnxMember(out).probs(images, False) - eager.predict_tensors([images])).abs().max()) < PARITY
    dynamic = OnnxMember(out.parent / "m.int8.onnx").probs(images, False)
    assert torch.allclose(dynamic.sum(1), torch.ones(len(images)), atol=1e-5)
