"""`checkbox-dist export` paths with no other test: the parity check refusing an export (one line, no file left),
an exporter that crashes (one line, for ONNX and TorchScript), a 4-channel (alpha) model to ONNX, and an
ensemble folder to TorchScript. The command runs in this process (conftest.run_main: the same `main(argv)`);
checkpoints are made directly (checkpoint.build_payload + save), not trained: these tests check the export,
not the training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import run_main

pytest.importorskip("onnxruntime")


def _one_line_error(code: int, stderr: str, text: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], (code, stderr)
    assert "Traceback" not in stderr
    return lines[0]


def _make_checkpoint(folder: Path, seed: int, classes: list[str], alpha: bool = False, temperature: float = 1.0):
    """A test_resnet checkpoint with seeded random weights (32 x 40, letterbox on a dark background)."""
    from checkbox_dist.core.config import ModelConfig
    from checkbox_dist.data.images import PreprocessSpec
    from checkbox_dist.model import checkpoint
    from checkbox_dist.model.build import build_model

    torch.manual_seed(seed)
    model = build_model(ModelConfig(name="test_resnet"), len(classes), in_chans=4 if alpha else 3)
    spec = PreprocessSpec(image_size=32, image_width=40, background="#202020", alpha_channel=alpha)
    payload = checkpoint.build_payload(model.state_dict(), classes, "test_resnet", spec.to_dict(),
                                       {"train": {"seed": seed}}, {}, epoch=1, global_step=1, temperature=temperature)
    checkpoint.save(folder, payload, None)
    return folder


@pytest.fixture
def ckpt(infer_checkpoint, tmp_path) -> Path:
    """A copy of the session's trained checkpoint, so files an export leaves behind can be listed."""
    folder = tmp_path / "ckpt"
    shutil.copytree(infer_checkpoint, folder, ignore=shutil.ignore_patterns("*.onnx", "*.torchscript.pt"))
    return folder


def test_an_export_the_parity_check_refuses_is_one_line_and_leaves_no_file(ckpt, monkeypatch):
    """ONNX Runtime disagreeing with PyTorch by 1e-3 (the check's own figure, shifted): refused, nothing kept."""
    from checkbox_dist.infer import export

    real = export.parity
    monkeypatch.setattr(export, "parity", lambda *a, **k: dict(real(*a, **k), max_abs_diff=1e-3))
    before = sorted(p.name for p in ckpt.iterdir())
    code, stdout, stderr = run_main("export", "--checkpoint", str(ckpt), "--format", "onnx")
    line = _one_line_error(code, stderr, "ONNX export does not match PyTorch: max |p_onnx - p_torch| = 1.00e-03")
    assert f"{ckpt / 'model.onnx'} not written" in line and "wrote" not in stdout
    assert sorted(p.name for p in ckpt.iterdir()) == before  # no model.onnx, no temporary file
    monkeypatch.setattr(export, "parity", real)  # control: the real check passes and the file is kept
    code, stdout, _ = run_main("export", "--checkpoint", str(ckpt), "--format", "onnx", "--onnx-exporter", "legacy")
    assert code == 0 and (ckpt / "model.onnx").is_file()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_exporter_crash_is_one_line_and_leaves_no_file(ckpt, monkeypatch, fmt):
    def crash(*args, **kwargs):
        raise RuntimeError("Unsupported operator aten::weird_op\n  full internal trace, line 2\n  line 3")

    monkeypatch.setattr(torch.onnx, "export", crash)
    monkeypatch.setattr(torch.jit, "trace", crash)
    before = sorted(p.name for p in ckpt.iterdir())
    code, _, stderr = run_main("export", "--checkpoint", str(ckpt), "--format", fmt)
    line = _one_line_error(code, stderr, "export of test_resnet failed (Unsupported operator aten::weird_op)")
    assert "line 2" not in line
    assert sorted(p.name for p in ckpt.iterdir()) == before


def test_a_4_channel_alpha_model_exports_to_onnx_and_matches_pytorch(tmp_path):
    """An RGBA model: the ONNX graph takes (N, 4, H, W) uint8, alpha is an input (the same pixels with another
    alpha give other probabilities), and ONNX Runtime matches the Predictor on decoded RGBA files."""
    import onnxruntime as ort

    from checkbox_dist.infer.predictor import Predictor

    folder = _make_checkpoint(tmp_path / "alpha", 0, ["checked", "other", "unchecked"], alpha=True, temperature=0.5)
    out = tmp_path / "alpha.onnx"
    code, stdout, stderr = run_main("export", "--checkpoint", str(folder), "--format", "onnx", "--out", str(out))
    assert code == 0 and "ONNX Runtime matches PyTorch" in stdout, stderr
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [4, 32, 40]
    meta = json.loads(session.get_modelmeta().custom_metadata_map["checkbox_dist"])
    assert meta["preprocess"]["alpha_channel"] is True and "(N, 4, 32, 40), RGBA" in meta["input"]
    files = []
    for i, opacity in enumerate((255, 128, 0)):
        image = Image.new("RGBA", (60, 30), (200, 40 * i, 90, opacity))
        image.paste((10, 250, 10, 255), (20, 10, 40, 20))
        files.append(tmp_path / f"rgba{i}.png")
        image.save(files[-1])
    predictor = Predictor([folder], device="cpu")
    decoded = torch.stack([predictor.decode(path)[0] for path in files])
    assert decoded.shape[1] == 4 and decoded[:, 3].float().std() > 0
    expected = predictor.predict_tensors([decoded])
    logits, probs = session.run(["logits", "probabilities"], {"image": decoded.numpy()})
    assert float((torch.from_numpy(probs) - expected).abs().max()) < 1e-4
    opaque = decoded.clone()
    opaque[:, 3] = 255
    assert float(abs(session.run(["logits"], {"image": opaque.numpy()})[0] - logits).max()) > 1e-4


def test_an_ensemble_exports_to_one_torchscript_graph_that_matches_the_predictor(tmp_path, synth_root):
    """Two members (other weights, other temperatures) -> one TorchScript file: the mean of the members'
    calibrated probabilities, as the Predictor computes it, and each member alone differs from it."""
    from checkbox_dist.infer.predictor import Predictor
    from checkbox_dist.model import ensemble

    classes = ["checked", "other", "unchecked"]
    members = [_make_checkpoint(tmp_path / f"m{i}", seed, classes, temperature=t)
               for i, (seed, t) in enumerate(((1, 0.7), (2, 1.6)))]
    folder = ensemble.write(tmp_path / "ensemble", members, {"seeds": [1, 2]})
    out = tmp_path / "ensemble.torchscript.pt"
    code, stdout, stderr = run_main("export", "--checkpoint", str(folder), "--format", "torchscript", "--out", str(out))
    assert code == 0 and f"wrote {out}" in stdout, stderr
    extra = {"checkbox_dist.json": ""}
    scripted = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["checkbox_dist.json"])
    assert meta["ensemble"]["members"] == 2 and meta["ensemble"]["temperatures"] == [0.7, 1.6]
    assert meta["temperature"] == 1.0  # the members' temperatures are inside the graph
    predictor = Predictor([folder], device="cpu")
    files = sorted(synth_root.glob("*/*.png"))[::7]
    images = torch.stack([predictor.decode(path)[0] for path in files])
    expected = predictor.predict_tensors([images, images])
    with torch.no_grad():
        logits, probs = scripted(images)
    assert float((probs - expected).abs().max()) < 1e-5
    assert torch.allclose(logits.exp(), probs, atol=1e-6)  # logits: the log of the mean probability
    for member in members:  # not one member's answer
        alone = Predictor([member], device="cpu").predict_tensors([images])
        assert float((alone - expected).abs().max()) > 1e-3
