"""`checkbox-dist audit`: which images do out-of-fold models most confidently say are labelled wrong?"""

from __future__ import annotations

from checkbox_dist.commands import add_command

EXAMPLES = """examples:
  checkbox-dist audit --cv-dir runs/cv-checkbox_state_v2-<time>         # data root read from cv.json
  checkbox-dist audit --data /data/crops --oof A/oof_predictions.csv --oof B/oof_predictions.csv
  checkbox-dist audit --cv-dir RUN --known checked/4c735d69.png ...      # where do these rank?"""
DETAILS = """Confident learning on the out-of-fold probabilities (several OOF files are averaged). Per class a
threshold = the mean probability of that class over the images labelled with it; an image is flagged when
another class reaches its threshold while its own label does not, and every image is ranked by how much
the best other class beats its label. Writes OUT/audit.csv (every image, ranked), OUT/suspects.png
(contact sheet), OUT/flagged.txt (the data.exclude_file / cv --train-exclude format: review it first) and
OUT/scores.json (the CV score of each OOF file and of their average, i.e. of an ensemble)."""


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "audit", "rank likely label errors from out-of-fold predictions",
                    EXAMPLES, DETAILS)
    p.add_argument("--cv-dir", action="append", default=[], help="a `checkbox-dist cv` folder (repeat to ensemble)")
    p.add_argument("--oof", action="append", default=[], help="an oof_predictions.csv (repeat to ensemble)")
    p.add_argument("--data", default="", help="image root the OOF paths are relative to (default: from cv.json)")
    p.add_argument("--out", "--output", dest="out", default="", help="output folder (default: FIRST_CV_DIR/audit)")
    p.add_argument("--top", type=int, default=24, help="suspects on the contact sheet")
    p.add_argument("--known", nargs="+", default=[], help="relative paths to report the rank of (e.g. flagged by eye)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from checkbox_dist.experiments import audit

    return audit.run(args)
