"""int8 for CPU: ONNX Runtime quantization of an exported model (`checkbox-dist export --format onnx --int8`).

    checkbox-dist export --checkpoint RUN --format onnx --int8                  # static, default
    checkbox-dist export --checkpoint RUN --format onnx --int8 --int8-mode dynamic
    checkbox-dist bench-infer --checkpoint RUN --data DIR                      # accuracy + speed

static:  weights int8 per output channel with 7-bit range (reduce_range), activations uint8 with
         ranges calibrated on `--calib-n` images (99.999th percentile), QDQ format (ONNX Runtime fuses
         it into int8 Conv kernels).
dynamic: weights int8, activation ranges computed per batch at run time (no calibration data). For a
         CNN it is slower than float32 (ONNX Runtime's ConvInteger); it is there for comparison.

Why reduce_range: on x86 CPUs without VNNI (AVX2 only), uint8 x int8 products saturate in int16.
docs/INFERENCE.md has the measurements behind these choices.

The classifier head and everything after it (logits -> / temperature -> softmax) stay float32: the
head is 3 outputs wide (nothing to gain), and uint8 probabilities would move in steps of 1/255, which
would undo the temperature calibration. Calibration images default to the checkpoint's own training
data (its `data.root`, or the synthetic set it was trained on, regenerated identically if missing).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from checkbox_dist.core.errors import UserError
from checkbox_dist.data.images import BadImageError, PreprocessSpec, decode, list_images
from checkbox_dist.core.files import atomic_path
from checkbox_dist.data.synthetic import synthetic_set
from checkbox_dist.infer.onnx_meta import quiet, set_metadata

# One image per calibration step: the percentile calibrator stacks every step's activations into one
# array, so all steps must have the same batch size (a short last batch fails inside onnxruntime).
CALIB_BATCH = 1


def calibration_files(payload: dict, calib_data: str, n: int) -> tuple[list[Path], Path]:
    """`n` image files spread evenly over the sorted list (so every class folder contributes), and a label."""
    if calib_data:
        root = Path(calib_data).expanduser()
    else:
        data = payload.get("config", {}).get("data", {})
        if data.get("root"):
            root = Path(data["root"]).expanduser()
            if not root.is_dir():
                raise UserError(f"the checkpoint was trained on {root}, which is not here: pass --calib-data DIR")
        else:
            root = synthetic_set(data.get("cache_dir", "~/.cache/checkbox_dist"), data.get("synth_n", 600),
                                 data.get("synth_seed", 0), data.get("synth_labels", "class"))
    if not root.is_dir():
        raise UserError(f"--calib-data: folder not found: {root}")
    files = list_images(root)
    if not files:
        raise UserError(f"{root}: no images for int8 calibration")
    step = max(1, len(files) // max(1, n))
    return files[::step][:n], root


def calibration_batches(files: list[Path], spec: PreprocessSpec) -> list[torch.Tensor]:
    images = []
    for f in files:
        try:
            images.append(decode(f, spec))
        except BadImageError:
            continue  # one unreadable file should not stop calibration; the count is reported
    if not images:
        raise UserError("no readable calibration images")
    stacked = torch.stack(images)
    return list(stacked.split(CALIB_BATCH))


def _float_tail(model_path: Path) -> list[str]:
    """Names of the node producing `logits` and of every node downstream of it (temperature, softmax)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    tail, frontier = [], {"logits"}
    for node in graph.node:
        if frontier & set(node.output) or frontier & set(node.input):
            tail.append(node.name)
            frontier |= set(node.output)
    return tail


def quantize_onnx(fp32: Path, out: Path, payload: dict, meta: dict, mode: str = "static",
                  calib_data: str = "", calib_n: int = 128) -> dict:
    """Writes the int8 model to `out` (atomically, with metadata); returns what was done and how it compares."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    spec = PreprocessSpec.from_dict(payload["preprocess"])
    files, root = calibration_files(payload, calib_data, calib_n)
    batches = calibration_batches(files, spec)
    quant = {"mode": mode, "weights": "int8 per-channel, 7-bit range" if mode == "static" else "int8",
             "activations": "uint8, percentile-calibrated" if mode == "static" else "uint8, per batch at run time",
             "float32": "classifier head, temperature, softmax", "tool": "onnxruntime.quantization"}
    with tempfile.TemporaryDirectory() as tmp_dir, atomic_path(out) as tmp:
        prepared = Path(tmp_dir) / "prepared.onnx"
        try:  # shape inference + graph cleanup: what ORT recommends before quantizing
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=False)
        except Exception:  # noqa: BLE001 - optional step; quantization works without it, slightly less fused
            prepared = fp32
        exclude = _float_tail(prepared)
        if mode == "static":
            class Reader(CalibrationDataReader):
                def __init__(self):
                    self.batches = iter(batches)

                def get_next(self):
                    batch = next(self.batches, None)
                    return None if batch is None else {"image": batch.numpy()}

            with quiet():  # the percentile calibrator prints its progress
                quantize_static(str(prepared), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                reduce_range=True, calibrate_method=CalibrationMethod.Percentile,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                nodes_to_exclude=exclude)
            quant["calibration"] = f"{len(files)} images from {root}"
        else:
            quantize_dynamic(str(prepared), str(tmp), weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
        model = onnx.load(str(tmp))
        set_metadata(model, dict(meta, quantization=quant))
        onnx.save(model, str(tmp))
        report = agreement(fp32, tmp, torch.cat(batches))
    report["summary"] = (f"on {len(files)} images from {root}, top-1 agrees with float32 on "
                         f"{100 * report['top1_agreement']:.1f}%, max |dp| = {report['max_abs_diff']:.3f}")
    return dict(report, quantization=quant)


def agreement(fp32: Path, int8: Path, images: torch.Tensor) -> dict:
    """How far the int8 model's probabilities are from the float32 model's on `images`."""
    import onnxruntime as ort

    probs = []
    for path in (fp32, int8):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        probs.append(torch.cat([torch.from_numpy(session.run(["probabilities"], {"image": b.numpy()})[0])
                                for b in images.split(64)]))
    same = (probs[0].argmax(1) == probs[1].argmax(1)).float().mean()
    return {"top1_agreement": float(same), "max_abs_diff": float((probs[0] - probs[1]).abs().max()),
            "n": len(images)}
