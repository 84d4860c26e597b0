"""`checkbox-dist predict`: class + calibrated confidence of every class for files, folders, globs and URLs."""

from __future__ import annotations

import argparse

from checkbox_dist.commands import add_command
from checkbox_dist.data.download import DEFAULT_MAX_BYTES, DEFAULT_MAX_REDIRECTS, DEFAULT_TIMEOUT_S

FORMATS = ("table", "json", "jsonl", "csv")  # infer.predict.Writer writes each (tests/test_cli.py checks)
EXAMPLES = """examples:
  checkbox-dist predict --checkpoint runs/quickstart-<time> crop.png
  checkbox-dist predict --checkpoint RUN crops/ 'shots/**/*.png' https://example.com/c.png
  checkbox-dist predict --checkpoint A --checkpoint B --tta crops/ --format jsonl --output preds.jsonl
  checkbox-dist predict --checkpoint RUN --backend onnx crop.png             # after `export`
  checkbox-dist predict --checkpoint RUN --image_url=https://example.com/c.png"""
DETAILS = """INPUT is a file, a folder (searched recursively for images), a glob (quote it; ** recurses) or an
http(s) URL. Preprocessing is read from the checkpoint. Output: a table for people, or json / jsonl /
csv for programs (to stdout or --output FILE, written whole or not at all). Folders go through the model
in batches of --batch-size with a progress bar (on a terminal). An input that fails (missing file, not
an image, URL 404 / timeout / too big / not an image / redirect loop) is one `error:` line on stderr
(and an {"input", "error"} record in json/jsonl/csv); every other input is still predicted.

Exit code: 0 all inputs predicted, 1 some failed, 2 usage or configuration error (bad checkpoint ...)."""


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "predict", "classify image files, folders, globs or URLs", EXAMPLES, DETAILS)
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="file, folder (recursive), glob or http(s) URL")
    p.add_argument("--checkpoint", action="append", required=True,
                   help="checkpoint or run folder, an exported .onnx file or timm folder, or a Hub id "
                        "hf-hub:ORG/NAME (repeat for an ensemble)")
    p.add_argument("--image_url", "--image-url", action="append", default=[], dest="image_url",
                   help="an image URL (same as giving it as INPUT; repeatable)")
    p.add_argument("--format", choices=FORMATS, default="table", help="table for people, the others for programs")
    p.add_argument("--out", "--output", dest="output",
                   default="", help="write the results to this file instead of stdout")
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                   help="onnx: run the exported model.onnx with ONNX Runtime (auto: by file suffix)")
    p.add_argument("--tta", action="store_true", help="also average over the horizontal mirror")
    p.add_argument("--batch-size", type=int, default=32, help="images per model call")
    p.add_argument("--jobs", type=int, default=4, help="threads fetching and decoding inputs")
    p.add_argument("--device", default=None,
                   help="torch backend: cpu, cuda, cuda:1, mps ... (default: cuda if present, else mps, else cpu)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="URL download limit, seconds")
    p.add_argument("--max-mb", type=float, default=DEFAULT_MAX_BYTES / 2**20, help="URL download size limit (MiB)")
    p.add_argument("--max-redirects", type=int, default=DEFAULT_MAX_REDIRECTS, help="redirects a URL may take")
    p.set_defaults(handler=run)


def run(args) -> int:
    from checkbox_dist.infer import predict

    return predict.run(args)
