"""Label audit: which images do out-of-fold models most confidently say are labelled wrong?

    checkbox-dist audit --cv-dir runs/cv-checkbox_state_v2                # data root read from cv.json
    checkbox-dist audit --data ../shared/checkbox_state_v2/train --oof A/oof_predictions.csv --oof B/oof_predictions.csv
    checkbox-dist audit --cv-dir RUN --known checked/4c735d69860ff3c5b089ce64bd7ce846.png ...   # where do these rank?

Confident learning (Northcutt et al. 2021), on the out-of-fold probabilities p (several OOF files are
averaged: an ensemble disagrees less by accident). Per class k a threshold t_k = mean p[k] over the images
labelled k (the class's average self-confidence). An image labelled y is flagged when some other class k
has p[k] >= t_k while p[y] < t_y; every image is ranked by margin = max_{k != y} p[k] - p[y], flagged first.

Writes OUT/audit.csv (every image, ranked), OUT/suspects.png (contact sheet of the top suspects, given vs
predicted), OUT/flagged.txt (flagged paths, the `data.exclude_file` format: review before using it) and
OUT/scores.json: top-1 and macro-F1 of each OOF file and of their average, i.e. the CV score of an ensemble.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from checkbox_dist.core.cv_results import read_oof
from checkbox_dist.core.errors import UserError
from checkbox_dist.core.files import atomic_path, atomic_write_csv
from checkbox_dist.data.images import BadImageError, open_image
from checkbox_dist.experiments.cv_summary import scores


def average_oof(files: list[Path]) -> tuple[list[str], list[dict]]:
    """Rows of the first OOF file with probabilities averaged over every file (same images, same labels)."""
    classes, rows = read_oof(files[0])
    for other in files[1:]:
        other_classes, other_rows = read_oof(other)
        if other_classes != classes:
            raise UserError(f"{other}: classes {other_classes} differ from {files[0]}'s {classes}")
        by_path = {r["path"]: r for r in other_rows}
        missing = [r["path"] for r in rows if r["path"] not in by_path]
        if missing:
            raise UserError(f"{other}: has no prediction for {missing[0]} (OOF files must cover the same images)")
        for r in rows:
            o = by_path[r["path"]]
            if o["given"] != r["given"]:
                raise UserError(f"{r['path']}: labelled {r['given']} in {files[0]} but {o['given']} in {other}")
            r["probs"] = [a + b for a, b in zip(r["probs"], o["probs"])]
    for r in rows:
        r["probs"] = [p / len(files) for p in r["probs"]]
    return classes, rows


def oof_scores(classes: list[str], rows: list[dict]) -> dict:
    """top-1 and macro-F1 of out-of-fold probabilities (one file's, or several averaged: the ensemble's CV
    score, since every model predicted each image from the same held-out fold), overall and per fold."""
    def score(subset: list[dict]) -> dict:
        s = scores([r["given"] for r in subset], [classes[r["probs"].index(max(r["probs"]))] for r in subset], classes)
        return {"top1": s["top1"], "macro_f1": s["macro_f1"], "n": s["n"]}

    folds = sorted({r["fold"] for r in rows})
    return {**score(rows), "per_fold": {str(f): score([r for r in rows if r["fold"] == f]) for f in folds}}


def rank_suspects(classes: list[str], rows: list[dict]) -> tuple[list[dict], dict[str, float]]:
    """Every row with suggested label, margin and flag; sorted flagged first, then by margin (descending)."""
    index = {c: i for i, c in enumerate(classes)}
    thresholds = {}
    for k, c in enumerate(classes):
        own = [r["probs"][k] for r in rows if r["given"] == c]
        thresholds[c] = sum(own) / len(own) if own else 1.0
    ranked = []
    for r in rows:
        y = index[r["given"]]
        others = [k for k in range(len(classes)) if k != y]
        best = max(others, key=lambda k: r["probs"][k])
        above = [k for k in others if r["probs"][k] >= thresholds[classes[k]]]
        flagged = bool(above) and r["probs"][y] < thresholds[r["given"]]
        ranked.append(dict(r, suggested=classes[best], p_given=r["probs"][y], p_suggested=r["probs"][best],
                           margin=r["probs"][best] - r["probs"][y], flagged=flagged))
    ranked.sort(key=lambda r: (not r["flagged"], -r["margin"], r["path"]))
    for rank, r in enumerate(ranked, 1):
        r["rank"] = rank
    return ranked, thresholds


def contact_sheet(ranked: list[dict], root: Path, out: Path, top: int, title: str) -> Path:
    """A grid of the top suspects, each captioned with rank, given -> suggested label and probabilities."""
    tiles, cols, tw, th, cap = ranked[:top], 6, 220, 120, 46
    rows_n = max(1, (len(tiles) + cols - 1) // cols)
    sheet = Image.new("RGB", (cols * tw, 30 + rows_n * (th + cap)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    draw.text((6, 8), title, fill="black", font=font)
    for n, r in enumerate(tiles):
        x, y = (n % cols) * tw, 30 + (n // cols) * (th + cap)
        try:
            img = open_image(root / r["path"])
            flat = Image.new("RGBA", img.size, (255, 255, 255, 255))
            flat.alpha_composite(img)
            flat = flat.convert("RGB")
            flat.thumbnail((tw - 12, th - 8))
            sheet.paste(flat, (x + (tw - flat.width) // 2, y + 4 + (th - 8 - flat.height) // 2))
        except (BadImageError, OSError):
            draw.text((x + 8, y + 40), "(image not readable)", fill="grey", font=font)
        draw.rectangle([x + 2, y + 2, x + tw - 3, y + th - 2], outline="red" if r["flagged"] else "#bbbbbb")
        draw.text((x + 6, y + th + 2), f"#{r['rank']} given {r['given']} ({r['p_given']:.2f})", fill="black",
                  font=font)
        draw.text((x + 6, y + th + 16), f"model: {r['suggested']} ({r['p_suggested']:.2f})", fill="#b00000",
                  font=font)
        draw.text((x + 6, y + th + 30), Path(r["path"]).name[:30], fill="#555555", font=font)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out


def write_outputs(ranked: list[dict], classes: list[str], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv_path, flagged_path = out / "audit.csv", out / "flagged.txt"
    header = ["rank", "path", "given", "suggested", "p_given", "p_suggested", "margin", "flagged", "fold",
              *[f"p_{c}" for c in classes]]
    atomic_write_csv(csv_path, header, [[r["rank"], r["path"], r["given"], r["suggested"], f"{r['p_given']:.4f}",
                                         f"{r['p_suggested']:.4f}", f"{r['margin']:.4f}", int(r["flagged"]), r["fold"],
                                         *[f"{p:.4f}" for p in r["probs"]]] for r in ranked])
    lines = ["# flagged by `checkbox-dist audit` (confident learning); review before use as data.exclude_file\n"]
    lines += [f"{r['path']}  # given {r['given']}, models say {r['suggested']} ({r['p_suggested']:.2f})\n"
              for r in ranked if r["flagged"]]
    flagged_path.write_text("".join(lines))
    return csv_path, flagged_path


def run(args) -> int:
    files = [Path(d) / "oof_predictions.csv" for d in args.cv_dir] + [Path(f) for f in args.oof]
    if not files:
        raise UserError("give --cv-dir DIR or --oof FILE (out-of-fold predictions from `checkbox-dist cv`)")
    if args.top < 1:
        raise UserError(f"--top must be at least 1, got {args.top}")
    root = Path(args.data) if args.data else None
    if root is None:
        cv_json = files[0].parent / "cv.json"
        if not cv_json.is_file():
            raise UserError(f"--data is needed: no cv.json beside {files[0]} to read the image root from")
        root = Path(json.loads(cv_json.read_text())["root"])
    if not root.is_dir():
        raise UserError(f"--data: folder not found: {root}")
    classes, rows = average_oof(files)
    ranked, thresholds = rank_suspects(classes, rows)
    out = Path(args.out) if args.out else files[0].parent / "audit"
    csv_path, flagged_path = write_outputs(ranked, classes, out)
    report = {"files": [str(f) for f in files], "average": oof_scores(classes, rows)}
    if len(files) > 1:
        report["each"] = [oof_scores(*average_oof([f])) for f in files]
    for name, s in [*zip(map(str, files), report.get("each", [])), (f"average of {len(files)}", report["average"])]:
        per_fold = " / ".join(f"{100 * v['top1']:.1f}" for v in s["per_fold"].values())
        print(f"OOF top-1 {100 * s['top1']:.1f} %, macro-F1 {100 * s['macro_f1']:.1f} % (per fold {per_fold}): {name}")
    (out / "scores.json").write_text(json.dumps(report, indent=1))
    n_flagged = sum(r["flagged"] for r in ranked)
    png = contact_sheet(ranked, root, out / "suspects.png", args.top,
                        f"top {min(args.top, len(ranked))} label suspects of {len(ranked)} ({n_flagged} flagged) "
                        f"from {len(files)} OOF file(s): given label (its prob) vs model")
    print("thresholds (mean self-confidence): " + ", ".join(f"{c} {t:.3f}" for c, t in thresholds.items()))
    print(f"{n_flagged} of {len(ranked)} images flagged; top suspects:")
    print(f"{'rank':>4} {'given':>10} {'model':>10} {'p_given':>7} {'p_model':>7}  path")
    for r in ranked[:min(args.top, 15)]:
        print(f"{r['rank']:>4} {r['given']:>10} {r['suggested']:>10} {r['p_given']:7.3f} {r['p_suggested']:7.3f}  "
              f"{r['path']}{'' if r['flagged'] else '  (not flagged)'}")
    if args.known:
        by_path = {r["path"]: r for r in ranked}
        print(f"known doubtful images ({len(args.known)}):")
        for path in args.known:
            r = by_path.get(path)
            print(f"  {path}: " + ("not in the OOF predictions" if r is None else
                  f"rank {r['rank']}/{len(ranked)}, {'flagged' if r['flagged'] else 'not flagged'}, "
                  f"p({r['given']}) {r['p_given']:.3f}, model says {r['suggested']} {r['p_suggested']:.3f}"))
    print(f"wrote {csv_path}, {png} and {flagged_path}")
    return 0
