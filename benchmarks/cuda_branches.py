"""The CUDA-only branches, run for real on a GPU (benchmarks/gpu.sh runs this first; about a minute):

    python3 benchmarks/cuda_branches.py [WORK_DIR]

1. fused optimizer kernels: build_optimizer on a CUDA model picks fused=True, and one step of each optimizer runs;
2. cuDNN autotuner and TF32: configure_backends("cuda") turns them on;
3. the CUDA RNG state: a tiny training run (dropout on, so the CUDA generator matters) is stopped by a STOP request
   (SIGUSR1 at micro-batch 8), resumed with train.resume=auto, and compared with an uninterrupted run; its
   train_state.pt must hold a CUDA RNG state. cuDNN autotuning may pick other kernels per process, so the weight
   difference is printed, not required to be 0.
Prints one `PASS`/`FAIL` line per check and exits 1 if any failed; on a machine without CUDA it says so and exits 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TINY = ["--config", str(REPO / "configs" / "quickstart.yaml"), "model.name=test_resnet", "data.image_size=32",
        "data.num_workers=0", "train.progress=false", "tracking.backends=[]", "data.synth_n=60", "data.synth_seed=3",
        "data.batch_size=8", "train.epochs=2", "train.log_every_steps=1", "model.drop_rate=0.2",
        "eval.confusion_every_epochs=1000"]


def report(name: str, ok: bool, detail: str = "") -> bool:
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    return ok


def train(run_dir: Path, cache: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "checkbox_dist", "train", *TINY, f"train.output_dir={run_dir}",
                           f"data.cache_dir={cache}", *extra], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, **(env or {})), timeout=300)


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here (tests/train/test_cuda_branches.py checks the decisions on CPU)")
        return 0
    sys.path.insert(0, str(REPO))
    from checkbox_dist.core.config import OptimConfig
    from checkbox_dist.model.optim import build_optimizer
    from checkbox_dist.train.session import configure_backends

    results = []
    model = torch.nn.Linear(8, 3).cuda()
    for name in ("sgd", "adam", "adamw"):
        optimizer = build_optimizer(OptimConfig(name=name), model, 0.1)
        model(torch.randn(4, 8, device="cuda")).sum().backward()
        optimizer.step()
        results.append(report(f"fused {name}", optimizer.defaults.get("fused") is True,
                              f"defaults fused={optimizer.defaults.get('fused')}"))
    configure_backends("cuda")
    flags = [torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32]
    results.append(report("cudnn.benchmark and TF32", all(flags), str(flags)))

    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="cuda_branches_"))
    cache, straight, stopped = work / "cache", work / "straight", work / "stopped"
    runs = [train(straight, cache), train(stopped, cache, env={"CHECKBOX_DIST_FAULT": "step:8:usr1"}),
            train(stopped, cache, "train.resume=auto")]
    codes = [r.returncode for r in runs]
    results.append(report("train, stop, resume on CUDA", codes == [0, 75, 0] and "resumed from" in runs[2].stdout,
                          f"exit codes {codes}" + (f"\n{runs[-1].stderr[-2000:]}" if codes != [0, 75, 0] else "")))
    if codes == [0, 75, 0]:
        state = torch.load(stopped / "checkpoints" / "last" / "train_state.pt", weights_only=True)
        results.append(report("CUDA RNG state saved", all("cuda" in rng for rng in state["rng"])))
        a, b = (torch.load(d / "checkpoints" / "last" / "model.pt", weights_only=True)["model"]
                for d in (straight, stopped))
        diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
        print(f"resumed vs uninterrupted: max |dw| = {diff:.3e} (0 = bit-exact)", flush=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
