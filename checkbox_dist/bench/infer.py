"""`checkbox-dist bench-infer`: CPU inference speed and accuracy of eager PyTorch, ONNX Runtime and int8.

    checkbox-dist bench-infer --checkpoint RUN                      # synthetic held-out images
    checkbox-dist bench-infer --checkpoint RUN --data DIR --json bench.json

Every variant sees the same preprocessed uint8 tensors, in the same process, alternated (each repeat
runs the variants in a rotated order, so a noisy neighbour hurts all of them alike), and the figure is
the median over repeats. The reference is a plain `model(normalized x)` loop (no softmax, no
bookkeeping); everything is printed as a ratio to it, measured in the same run, because bare
milliseconds say little about any other machine. Rows:

    model(x) loop     the reference: eager PyTorch forward on already-normalised tensors
    eager Predictor   what `predict` runs: uint8 -> normalise -> model -> softmax(logits / T)
    ONNX Runtime      model.onnx (same graph as the Predictor: normalisation + temperature inside)
    ONNX int8 static  model.int8.onnx (`export --int8`); --extra-onnx adds rows (e.g. int8 dynamic)

An ensemble folder (model/ensemble.py) gets one eager row per member count, `eager, k of N members` (the
first k members averaged: what an ensemble of k costs) and `ONNX Runtime (N members)`, its one-graph export;
every ratio stays relative to one member's model(x) loop, so the cost of each extra member reads directly.

Latency: p50 / p99 of single-image calls (batch 1). Throughput: images/s at batch 64. With a labelled
folder (ROOT/<class>/*) it also reports top-1 accuracy and agreement with the eager Predictor.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from checkbox_dist import synth
from checkbox_dist.core.errors import UserError
from checkbox_dist.core.files import atomic_write_json
from checkbox_dist.data.images import list_images, normalize
from checkbox_dist.infer import export, quantize
from checkbox_dist.infer.onnx_meta import read_metadata
from checkbox_dist.infer.predictor import OnnxMember, Predictor
from checkbox_dist.model import checkpoint, ensemble

WIDTH = 26  # row label column


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def load_images(predictor, data: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """(uint8 images, labels or None, description). Default: `n` fresh synthetic images (labelled), written to
    a temporary folder that is removed afterwards."""
    if data:
        root = Path(data).expanduser()
        if not root.is_dir():
            raise UserError(f"--data: folder not found: {root}")
        return _decode_folder(predictor, root, None, str(root))
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        synth.generate(tmp, n, seed)
        return _decode_folder(predictor, Path(tmp), max(n, 1), f"synthetic, seed {seed} (not the training seed)")


def _decode_folder(predictor, root: Path, limit: int | None, desc: str):
    files = list_images(root)[:limit]
    if not files:
        raise UserError(f"{root}: no images")
    classes = predictor.classes
    labelled = all(f.relative_to(root).parts[0] in classes for f in files)
    images = torch.stack([predictor.decode(f)[0] for f in files])
    labels = torch.tensor([classes.index(f.relative_to(root).parts[0]) for f in files]) if labelled else None
    return images, labels, f"{len(files)} images from {desc}"


def onnx_files(folder: Path, work: Path, sha: str | None, exporter: str) -> tuple[Path, Path]:
    """The checkpoint's model.onnx / model.int8.onnx when they were exported from this model.pt, else fresh ones."""
    fp32, int8 = folder / "model.onnx", folder / "model.int8.onnx"
    if all(p.is_file() and read_metadata(p).get("checkpoint_sha256") == sha for p in (fp32, int8)):
        return fp32, int8
    _, graph, payload = export.load_for_export(folder)
    meta = export.describe(folder, payload, "onnx")
    fp32, int8 = work / "model.onnx", work / "model.int8.onnx"
    export.export_onnx(graph, meta, fp32, exporter)
    quantize.quantize_onnx(fp32, int8, payload, meta, "static")
    return fp32, int8


def measure(variants: dict, images: torch.Tensor, repeats: int, iters: int, batch: int) -> dict:
    """{name: {"p50", "p99" (s, batch 1), "throughput" (img/s at `batch`)}}: medians over repeats."""
    names = list(variants)
    singles = [images[i % len(images)].unsqueeze(0).contiguous() for i in range(iters)]
    big = images.repeat((batch + len(images) - 1) // len(images), 1, 1, 1)[:batch]  # cycled up to one batch
    big_calls = max(2, iters // 20)
    for fn in variants.values():  # warm-up: first calls allocate and pick kernels
        for x in singles[:5]:
            fn(x)
        fn(big)
    blocks = {name: {"p50": [], "p99": [], "throughput": []} for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            latencies = []
            for x in singles:
                start = time.perf_counter()
                variants[name](x)
                latencies.append(time.perf_counter() - start)
            blocks[name]["p50"].append(_percentile(latencies, 0.5))
            blocks[name]["p99"].append(_percentile(latencies, 0.99))
        for name in order:
            start = time.perf_counter()
            for _ in range(big_calls):
                variants[name](big)
            blocks[name]["throughput"].append(big_calls * len(big) / (time.perf_counter() - start))
    return {name: {k: statistics.median(v) for k, v in b.items()} for name, b in blocks.items()}


def ensemble_variants(eager, folder: Path, threads: int, exporter: str) -> dict:
    """An ensemble's rows: eager with the first k of its N members (k = 1..N), and its one-graph ONNX export."""
    members = eager.members
    variants = {f"eager, {k} of {len(members)} members":
                (lambda x, m=members[:k]: sum(member.probs(x, False) for member in m) / len(m))
                for k in range(1, len(members) + 1)}
    with tempfile.TemporaryDirectory() as work:
        _, graph, payload = export.load_for_export(folder)
        onnx_path = Path(work) / "model.onnx"
        export.export_onnx(graph, export.describe(folder, payload, "onnx"), onnx_path, exporter)
        onnx_member = OnnxMember(onnx_path, threads)
    variants[f"ONNX Runtime ({len(members)} members)"] = lambda x: onnx_member.probs(x, False)
    return variants


def single_variants(eager, folder: Path, threads: int, args) -> dict:
    """One checkpoint's rows: the eager Predictor, its ONNX export, int8, and any --extra-onnx."""
    member = eager.members[0]
    sha = json.loads((folder / checkpoint.META_FILE).read_text())["files"][checkpoint.MODEL_FILE]
    with tempfile.TemporaryDirectory() as work:
        fp32, int8 = onnx_files(folder, Path(work), sha, args.onnx_exporter)
        onnx_members = [OnnxMember(p, threads) for p in [fp32, int8, *args.extra_onnx]]
    variants = {"eager Predictor": lambda x: member.probs(x, False)}
    for i, onnx_member in enumerate(onnx_members):
        quant = onnx_member.meta.get("quantization")
        name = "ONNX Runtime" if i == 0 else f"ONNX int8 {quant['mode']}" if quant else Path(onnx_member.source).name
        variants[name if name not in variants else f"{name} ({i})"] = lambda x, m=onnx_member: m.probs(x, False)
    return variants


def run(args) -> int:
    import onnxruntime as ort

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    eager = Predictor([args.checkpoint], device="cpu")
    member = eager.members[0]
    folder = checkpoint.resolve(args.checkpoint)
    images, labels, desc = load_images(eager, args.data, args.n, args.seed)
    if ensemble.is_ensemble(folder):
        if args.extra_onnx:
            raise UserError("--extra-onnx: not with an ensemble (its rows are the member counts)")
        extra = ensemble_variants(eager, folder, threads, args.onnx_exporter)
    else:
        extra = single_variants(eager, folder, threads, args)
    model, spec = member.model, member.spec

    @torch.inference_mode()
    def baseline(x_norm):
        return model(x_norm)

    normalized = {}  # the reference gets its inputs normalised ahead of time: a pure model(x) loop

    def reference(x):
        key = (x.data_ptr(), x.shape[0])
        if key not in normalized:
            normalized[key] = normalize(x, spec).contiguous()
        return baseline(normalized[key])

    variants = {"model(x) loop": reference, **extra}
    eager_name = next(name for name in extra if name.startswith("eager"))  # one member: agreement is against it
    results = measure(variants, images, args.repeats, args.iters, args.batch)
    base = results["model(x) loop"]
    probs = {name: torch.cat([fn(b) if name != "model(x) loop" else torch.softmax(fn(b), 1)
                              for b in images.split(args.batch)]) for name, fn in variants.items()}
    ref_top1 = probs[eager_name].argmax(1)
    print(f"bench-infer: {member.payload['model_name']} at {spec.size_text}, {desc}; {threads} threads, "
          f"{args.repeats} repeats alternated, {args.iters} batch-1 calls each; torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}, {platform.processor() or platform.machine()}")
    if len(eager.members) > 1:
        print(f"ensemble of {len(eager.members)} members ({folder}); '= eager' is agreement with one member")
    head = f"{'':<{WIDTH}}{'p50 (b=1)':>11}{'p99 (b=1)':>11}{f'img/s (b={args.batch})':>16}{'top-1':>9}{'= eager':>9}"
    print(head)
    for name, r in results.items():
        acc = f"{100 * float((probs[name].argmax(1) == labels).float().mean()):.1f}%" if labels is not None else "-"
        agree = f"{100 * float((probs[name].argmax(1) == ref_top1).float().mean()):.1f}%"
        r.update(accuracy=None if labels is None else float(acc[:-1]) / 100, agreement=float(agree[:-1]) / 100)
        print(f"{name:<{WIDTH}}{r['p50'] / base['p50']:>10.2f}x{r['p99'] / base['p99']:>10.2f}x"
              f"{r['throughput'] / base['throughput']:>15.2f}x{acc:>9}{agree:>9}")
    print("latency ratios: lower is faster; throughput ratio: higher is faster; all relative to the model(x) loop "
          f"(for scale, here: p50 {1000 * base['p50']:.2f} ms, {base['throughput']:.0f} img/s at batch {args.batch})")
    if args.json:
        atomic_write_json(Path(args.json), {"config": vars(args) | {"threads": threads}, "data": desc,
                                            "results": results})
    return 0
