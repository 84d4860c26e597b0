"""`checkbox-dist bench-infer`: CPU inference speed and accuracy of eager PyTorch, ONNX Runtime and int8."""

from __future__ import annotations

from checkbox_dist.commands import add_command

EXAMPLES = """examples:
  checkbox-dist bench-infer --checkpoint runs/quickstart-<time>             # synthetic held-out images
  checkbox-dist bench-infer --checkpoint RUN --data DIR --json bench.json"""
DETAILS = """Every variant sees the same preprocessed uint8 tensors, in the same process, alternated, and the figure
is the median over repeats, printed as a ratio to a plain `model(normalized x)` loop measured in the
same run. Rows:

  model(x) loop     the reference: eager PyTorch forward on already-normalised tensors
  eager Predictor   what `predict` runs: uint8 -> normalise -> model -> softmax(logits / T)
  ONNX Runtime      model.onnx (same graph as the Predictor: normalisation + temperature inside)
  ONNX int8 static  model.int8.onnx (`export --int8`); --extra-onnx adds rows (e.g. int8 dynamic)

Latency: p50 / p99 of single-image calls (batch 1). Throughput: images/s at --batch. With a labelled
folder (ROOT/<class>/*) it also reports top-1 accuracy and agreement with the eager Predictor."""


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "bench-infer", "CPU inference speed: eager vs ONNX Runtime vs int8",
                    EXAMPLES, DETAILS)
    p.add_argument("--checkpoint", required=True, help="checkpoint or run folder")
    p.add_argument("--data", default="", help="image folder (ROOT/<class>/* adds accuracy); default: synthetic")
    p.add_argument("--n", type=int, default=256, help="synthetic images to generate (default 256)")
    p.add_argument("--seed", type=int, default=1000, help="synthetic seed (training uses data.synth_seed, 0)")
    p.add_argument("--repeats", type=int, default=5, help="alternations of the variants (median reported)")
    p.add_argument("--iters", type=int, default=200, help="batch-1 calls per repeat and variant")
    p.add_argument("--batch", type=int, default=64, help="batch size of the throughput figure")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads for torch and ONNX Runtime "
                                                         "(default: torch's current setting)")
    p.add_argument("--onnx-exporter", choices=["dynamo", "legacy"], default="dynamo", help="as for export")
    p.add_argument("--extra-onnx", action="append", default=[],
                   help="another exported .onnx to compare (e.g. from `export --int8 --int8-mode dynamic`)")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    p.set_defaults(handler=run)


def run(args) -> int:
    from checkbox_dist.bench import infer

    return infer.run(args)
