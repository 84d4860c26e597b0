"""`checkbox-dist export`: a checkpoint as ONNX (optionally int8), TorchScript or safetensors."""

from __future__ import annotations

from checkbox_dist.commands import add_command

FORMATS = ("onnx", "torchscript", "safetensors", "timm")  # infer.export writes each (tests/test_cli.py checks)
EXAMPLES = """examples:
  checkbox-dist export --checkpoint runs/quickstart-<time> --format onnx     # -> .../best/model.onnx
  checkbox-dist export --checkpoint RUN --format onnx --int8                 # + model.int8.onnx (CPU)
  checkbox-dist export --checkpoint RUN --format torchscript                 # -> model.torchscript.pt
  checkbox-dist export --checkpoint RUN --format safetensors                 # -> model.safetensors
  checkbox-dist export --checkpoint RUN --format timm                        # -> timm/: loads with timm alone
  checkbox-dist predict --checkpoint RUN --backend onnx crop.png"""
DETAILS = """ONNX and TorchScript files hold the whole inference graph: uint8 images (N, C, H, W), already resized /
letterboxed / composited, go in; `logits` and `probabilities` (softmax of logits / temperature) come out,
with the normalisation inside, and the batch axis is dynamic. Their metadata (classes, preprocessing,
temperature, model name, source checkpoint + sha256, metrics, versions) travels inside the file.
safetensors holds the timm weights only (no graph). Every ONNX export is checked against PyTorch before
it is kept; files are written to a temporary name and renamed. ONNX needs `pip install 'checkbox_dist[export]'`."""


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "export", "a checkpoint as ONNX (+ int8), TorchScript or safetensors",
                    EXAMPLES, DETAILS)
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint folder, run folder (-> checkpoints/best), timm folder or Hub id hf-hub:ORG/NAME")
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument("--out", "--output", dest="out", default="",
                   help="output file, or folder for timm (default: next to model.pt in the checkpoint folder; "
                        "timm: its timm/ subfolder)")
    p.add_argument("--int8", action="store_true", help="onnx: also write an int8-quantized model for CPU")
    p.add_argument("--int8-mode", choices=["static", "dynamic"], default="static",
                   help="static: int8 activations calibrated on images (default); dynamic: int8 weights only")
    p.add_argument("--calib-data", default="", help="images for static calibration (default: the training data)")
    p.add_argument("--calib-n", type=int, default=128, help="calibration images (default 128)")
    p.add_argument("--onnx-exporter", choices=["dynamo", "legacy"], default="dynamo",
                   help="torch.onnx exporter (legacy = TorchScript-based, deprecated but faster)")
    p.add_argument("--cv-summary", default="", help="timm: a cv_summary.json of this recipe, for the model card")
    p.add_argument("--license", default="other", help="timm: the model card's license id")
    p.set_defaults(handler=run)


def run(args) -> int:
    from checkbox_dist.infer import export

    return export.run(args)
