"""The numbers behind docs/LAUNCH.md "Same recipe, any launch shape": how far apart the final parameters of the same
config end on different launch shapes, after an elastic resume, with SyncBatchNorm, and from float rounding alone.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/launch_invariance.py      # ~5 min on 2 cores

It runs the recipes of the tests (tests/train/test_launch_invariance.py, test_elastic_resume.py,
test_sync_batchnorm.py) as those tests run them (real gloo worlds of CPU processes) and prints the largest absolute
difference of any parameter (BatchNorm running buffers left out: they are process 0's, see the doc).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "train")]

import test_elastic_resume as elastic  # noqa: E402
import test_launch_invariance as inv  # noqa: E402
import test_sync_batchnorm as sbn  # noqa: E402

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def state(run: Path) -> tuple[dict, dict]:
    folder = run / "checkpoints" / "last"
    return (torch.load(folder / "model.pt", weights_only=True)["model"],
            torch.load(folder / "train_state.pt", weights_only=True)["raw_model"])


def diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a if not k.endswith(BUFFERS))


def shapes(tmp: Path, cache: Path) -> None:
    for recipe, extra in [*inv.RECIPES.items(), ("adamw-bf16 (not in the tests)",
                                                 [*inv.RECIPES["adamw-fp32-ema"], "train.mixed_precision=bf16"])]:
        runs = {w: state(inv.train(w, tmp / f"{recipe}-{w}".replace(" ", "_"), cache, *extra)) for w in inv.SHAPES}
        for w in inv.SHAPES[1:]:
            print(f"{recipe:32s} 1 x 4 vs {w} x {4 // w}: raw {diff(runs[1][1], runs[w][1]):.2g}, "
                  f"model.pt (EMA when on) {diff(runs[1][0], runs[w][0]):.2g}")
        if recipe == "sgd-momentum-bf16":
            control = state(inv.train(1, tmp / "control", cache, *extra, "data.batch_size=16"))
            print(f"{'  control: micro-batch 16':32s} vs micro-batch 8: {diff(runs[1][1], control[1]):.2g}")


def resumes(tmp: Path, cache: Path) -> None:
    for name, recipe in (("float32 sums", elastic.ADAMW), ("exact sums", elastic.ELASTIC)):
        folder = tmp / name.replace(" ", "-")
        reference, stopped = folder / "reference", folder / "stopped"
        elastic.train(2, reference, cache, *recipe)
        elastic.train(2, stopped, cache, *recipe, env={"CHECKBOX_DIST_FAULT": "step:5:usr1@0"}, expect=75)
        for world in (1, 4):
            run = elastic.resumed_copy(stopped, folder / f"on-{world}")
            elastic.train(world, run, cache, *recipe, "train.resume=auto")
            ours, ref = state(run), state(reference)
            print(f"elastic 2 -> {world} (AdamW, EMA, {name}), vs uninterrupted 2: raw {diff(ours[1], ref[1]):.2g}, "
                  f"EMA {diff(ours[0], ref[0]):.2g}")
    fp16_ref, killed = tmp / "fp16-ref", tmp / "fp16-killed"
    elastic.train(2, fp16_ref, cache, *elastic.FP16)
    elastic.train(2, killed, cache, *elastic.FP16, env={"CHECKBOX_DIST_FAULT": "step:9:kill"}, expect=None)
    elastic.train(1, killed, cache, *elastic.FP16, "train.resume=auto")
    print(f"fp16 killed on 2, resumed on 1 (SGD momentum), vs uninterrupted 2: "
          f"{diff(state(killed)[1], state(fp16_ref)[1]):.2g}")


def sync_batchnorm(tmp: Path, cache: Path) -> None:
    synced = sbn.train(2, tmp / "synced", cache, "data.batch_size=4", "model.sync_batchnorm=true")
    single = sbn.train(1, tmp / "single", cache, "data.batch_size=8")
    per_process = sbn.train(1, tmp / "per-process", cache, "data.batch_size=4")
    (w_s, r_s), (w_1, r_1), (w_p, r_p) = sbn.split(synced), sbn.split(single), sbn.split(per_process)
    print(f"sync_batchnorm 2 x 4 vs 1 x 8: weights {sbn.max_diff(w_s, w_1):.2g}, running stats (relative) "
          f"{sbn.max_rel_diff(r_s, r_1):.2g}; without sync (1 x 4 x 2 accumulation): {sbn.max_diff(w_p, w_1):.2g}, "
          f"{sbn.max_rel_diff(r_p, r_1):.2g}")


def summation_order(cache: Path, micro: int, lr: float, steps: int = 6) -> None:
    """The floor: the same micro-batch gradients of each step, summed in two orders, in one process."""
    import timm

    from checkbox_dist.data.cache import decode_all
    from checkbox_dist.data.images import PreprocessSpec, normalize
    from checkbox_dist.data.split import build_split

    spec = PreprocessSpec(image_size=32)
    images, labels, _ = decode_all(build_split(cache / "synth-n200-s3", val_fraction=0.2, seed=42).train, spec,
                                   "error", [])
    x, y = normalize(images, spec), labels

    def run(order):
        torch.manual_seed(1)
        model = timm.create_model("test_resnet", num_classes=3).train()
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        for step in range(steps):
            grads = []
            for j in range(4):
                k = (step * 4 + j) * micro % (len(y) - micro)
                model.zero_grad()
                torch.nn.functional.cross_entropy(model(x[k:k + micro]), y[k:k + micro]).backward()
                grads.append([p.grad / 4 for p in model.parameters()])
            for i, p in enumerate(model.parameters()):
                p.grad = sum((grads[j][i] for j in order[1:]), grads[order[0]][i])
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    a, b = run([0, 1, 2, 3]), run([0, 2, 1, 3])
    print(f"summation order only, micro-batch {micro}, SGD lr {lr}, {steps} steps: "
          f"{max((p - q).abs().max().item() for p, q in zip(a, b)):.2g}")


def main() -> None:
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="launch_invariance_"))
    cache = tmp / "cache"
    try:
        shapes(tmp, cache)
        resumes(tmp, cache)
        sync_batchnorm(tmp, cache)
        for micro, lr in ((8, 0.01), (4, 0.01), (4, 0.05)):
            summation_order(cache, micro, lr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
