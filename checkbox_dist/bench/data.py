"""bench-data: how start-up, memory and training rate grow with the dataset, device-resident vs streaming.

    checkbox-dist bench-data --sizes 1000,10000 --out bench-data          # generated crops (synth), CPU
    checkbox-dist bench-data --sizes 1000 --formats csv,parquet,hf,tar   # the generated crops in each format
    checkbox-dist bench-data --roots /data/crops,/data/manifest.csv       # data roots as they are (any format
                                                                           # data.root takes), no generation

For each data root (generated: `--sizes` crops written by the synth generator under --work, each converted to every
--formats by data/writers.py and kept there: a manifest beside the crops naming them, a saved HF dataset, tar shards
of --per-shard samples; or given: --roots) and
each data path (`on`: decoded once into the memory-mapped cache and held on the device; `off`: streaming, decoded per
step by data.num_workers DataLoader workers), our real training command runs in fresh processes:
  cold      1 process, an empty data.cache_dir (the decode happens: the cache's cost)
  warm      1 process, the same cache again (what every later run pays)
  2 procs   2 processes under `accelerate launch` (gloo on CPU, NCCL on GPUs), warm cache
Each run reports start-up (the seconds until the data is ready, from its `data:` line: scan, split, cache map or
decode), the peak RSS of its largest process (`run_measured`: the rank, its workers or the launcher, whichever
peaked highest, not this process; pages of the mapped cache count in every process that touched them, though the
host holds them once), and its training rate (median of the step rows' img/s after the first interval). The plain
loop runs the same model on the same images in this process: `on` from one batch already on the device (the ceiling), `off` from a textbook
DataLoader (same decode, same worker count). The decode cost (ms/image, one worker) gives the GPU projection:
workers = GPU images/s x decode seconds per image.

Writes OUT/bench_data.json, OUT/bench_data.md (the table) and OUT/bench_data.png (start-up, RSS, img/s vs size);
with --append the rows of an earlier OUT/bench_data.json stay (one size per invocation keeps each run short).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from checkbox_dist import synth
from checkbox_dist.bench.train import bench_overrides, plain_step_rate
from checkbox_dist.core import resources
from checkbox_dist.core.config_loader import load_config
from checkbox_dist.core.errors import UserError
from checkbox_dist.core.plots import plt, save_png
from checkbox_dist.data.images import PreprocessSpec, decode
from checkbox_dist.data.sources import FORMATS, detect_format
from checkbox_dist.data.split import build_split
from checkbox_dist.data.writers import convert
from checkbox_dist.model.build import build_model
from checkbox_dist.model.optim import build_optimizer

# The bench's model and images unless the overrides say otherwise: the 64 px test_resnet.
DEFAULTS = ["model.name=test_resnet", "data.image_size=64", "data.batch_size=32", "train.mixed_precision=no",
            "train.progress=false", "tracking.backends=[]", "data.val_fraction=0.05"]
RUNS = (("on", "cold", 1), ("on", "warm", 1), ("on", "warm", 2), ("off", "warm", 1), ("off", "warm", 2))


def generated_root(work: Path, n: int, seed: int, workers: int) -> Path:
    """`n` synthetic crops in ROOT/<class>/ (cached: the generator's stamp says when a folder is complete)."""
    root = work / f"synth-n{n}-s{seed}"
    synth.generate(root, n, seed=seed, workers=workers)
    return root


def format_root(work: Path, folder: Path, kind: str, per_shard: int) -> Path:
    """The generated `folder` as data.root of format `kind`, written once beside it under `work` and reused."""
    suffix = {"hf": "-hf", "tar": "-tar"}.get(kind, f".{kind}")
    out = folder if kind == "folder" else work / f"{folder.name}{suffix}"
    if not out.exists():
        started = time.perf_counter()
        convert(folder, kind, out, per_shard)
        print(f"wrote {out} ({kind}, {time.perf_counter() - started:.0f} s; reused when present)", flush=True)
    return out


def _launcher(processes: int, env: dict) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "checkbox_dist", "train"]
    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        env["ACCELERATE_USE_CPU"] = "true"
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(resources.launch_file("multi_gpu" if on_gpu else "cpu_2proc")), "--num_processes", str(processes),
            "-m", "checkbox_dist", "train"]


def parse_run(log: str, metrics: list[dict]) -> tuple[float, float]:
    """(start-up seconds from the `data:` line's "ready in X s", median img/s of the step rows after the first)."""
    ready = [line.rsplit("ready in ", 1)[1].split(" s", 1)[0] for line in log.splitlines()
             if line.startswith("data:") and "ready in " in line]
    rates = [r["interval_img_per_s"] for r in metrics if r.get("kind") == "step"][1:]
    if not ready or not rates:
        raise UserError("bench-data: a run printed no `data:` line or fewer than 2 log intervals: raise --steps")
    return float(ready[0]), statistics.median(rates)


# Started in a fresh interpreter: runs argv[2:], writes its ru_maxrss (the largest process of its tree that it
# waited for) to the file argv[1], exits with its status.
_MEASURE = ("import os, subprocess, sys\n"
            "proc = subprocess.Popen(sys.argv[2:])\n"
            "_, status, usage = os.wait4(proc.pid, 0)\n"
            "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
            "raise SystemExit(os.waitstatus_to_exitcode(status))\n")


def run_measured(argv: list[str], env: dict, log: Path) -> tuple[int, int]:
    """(exit status, peak RSS in bytes of the largest process of `argv`'s tree), its output in `log`.

    Linux carries the peak RSS of the process that execs into the new program's ru_maxrss, so a child of this
    (large) process would report at least this process's own peak. The run is started from a small interpreter
    instead, which reports the run's figure."""
    with tempfile.TemporaryDirectory() as tmp, open(log, "w") as out:
        report = Path(tmp) / "maxrss"
        proc = subprocess.run([sys.executable, "-c", _MEASURE, str(report), *argv], env=env, stdout=out,
                              stderr=subprocess.STDOUT)
        maxrss = int(report.read_text()) if report.is_file() else 0
    return proc.returncode, maxrss * (1 if sys.platform == "darwin" else 1024)


def train_run(config: str, overrides: list[str], root: Path, mode: str, processes: int, cache: Path, steps: int,
              threads: int) -> dict:
    """Our `train` command on `root` in fresh processes; start-up, peak RSS of the largest process, img/s."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env.pop("ACCELERATE_USE_CPU", None)
    launcher = _launcher(processes, env)
    every = max(1, steps // 6)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, log = Path(tmp) / "run", Path(tmp) / "out.txt"
        argv = [*launcher, "--config", config, *DEFAULTS, *overrides, *bench_overrides(str(run_dir), 1000),
                f"data.root={root}", f"data.cache_dir={cache}", f"data.device_cache={mode}",
                f"train.max_steps={steps}", f"train.log_every_steps={every}"]
        started = time.perf_counter()
        returncode, peak = run_measured(argv, env, log)
        wall = time.perf_counter() - started
        text = log.read_text(errors="replace")
        if returncode != 0:
            last = text.strip().splitlines()[-1:] or ["(no output)"]
            raise UserError(f"bench-data: the {mode}/{processes}-process run on {root} failed "
                            f"(exit {returncode}): {last[0]}")
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    startup, rate = parse_run(text, metrics)
    return {"startup_s": round(startup, 2), "peak_rss_mb": round(peak / 2**20, 1), "img_s": round(rate, 1),
            "wall_s": round(wall, 1)}


class _Files(Dataset):
    """The textbook dataset: one file decoded per item."""

    def __init__(self, items, spec):
        self.items, self.spec = items, spec

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return decode(self.items[i][0], self.spec), self.items[i][1]


def plain_stream_rate(cfg, items, steps: int, workers: int) -> float:
    """img/s of a textbook loop fed by a DataLoader that decodes files in `workers` processes."""
    spec = PreprocessSpec.from_data_config(cfg.data)
    model = build_model(cfg.model, 3, spec.channels).train()
    optimizer = build_optimizer(cfg.optim, model, cfg.optim.lr)
    loader = DataLoader(_Files(items, spec), batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0)
    seen, started, it = 0, 0.0, iter(loader)
    for step in range(steps + 1):
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        if step == 1:  # the first batch waits for the workers to start: left out
            seen, started = 0, time.perf_counter()
        loss = F.cross_entropy(model(x.float().div_(255)), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seen += len(y)
    return seen / (time.perf_counter() - started)


def decode_ms(items, spec: PreprocessSpec, count: int = 300) -> float:
    """Milliseconds to decode and resize one file, in this process (one worker's cost)."""
    chosen = items[:count]
    started = time.perf_counter()
    for path, _ in chosen:
        decode(path, spec)
    return (time.perf_counter() - started) * 1000 / len(chosen)


def measure_root(args, root: Path, label: str) -> dict:
    cfg = load_config(args.config, [*DEFAULTS, *args.overrides, f"data.root={root}"])
    split = build_split(root, cfg.data.split_file, cfg.data.val_fraction, cfg.data.split_seed, cfg.data.exclude_file)
    kind = detect_format(root)
    row = {"root": str(root), "label": label, "format": kind, "images": len(split.train) + len(split.val), "runs": {}}
    label = f"{label} {kind}"
    with tempfile.TemporaryDirectory(dir=args.work, ignore_cleanup_errors=True) as cache:
        for mode, temperature, processes in RUNS:
            if processes not in args.processes or mode not in args.modes:
                continue
            if temperature == "cold":
                shutil.rmtree(cache, ignore_errors=True)
            over = [*args.overrides, f"data.num_workers={args.workers if mode == 'off' else 0}"]
            result = train_run(args.config, over, root, mode, processes, Path(cache), args.steps, args.threads)
            name = f"{mode}/{temperature}/{processes}p"
            row["runs"][name] = result
            print(f"  {label} {name:<12} start-up {result['startup_s']:>7.2f} s | peak RSS {result['peak_rss_mb']:>7.1f}"
                  f" MB | {result['img_s']:>7.1f} img/s | command {result['wall_s']:.1f} s", flush=True)
    torch.set_num_threads(args.threads)
    micro = cfg.data.batch_size
    row["plain_on_img_s"] = round(plain_step_rate(cfg, torch.device("cpu"), micro, args.steps, 2), 1)
    row["plain_off_img_s"] = round(plain_stream_rate(cfg, split.train, args.steps, args.workers), 1)
    row["decode_ms"] = round(decode_ms(split.train, PreprocessSpec.from_data_config(cfg.data)), 3)
    print(f"  {label} plain loop: {row['plain_on_img_s']:.1f} img/s on one device batch, {row['plain_off_img_s']:.1f} "
          f"img/s from {args.workers} workers | decode {row['decode_ms']:.2f} ms/image", flush=True)
    return row


def table(rows: list[dict]) -> str:
    """The markdown table of bench_data.json's rows."""
    names = [f"{m}/{t}/{p}p" for m, t, p in RUNS if any(f"{m}/{t}/{p}p" in r["runs"] for r in rows)]
    lines = ["| data | format | images | run | start-up s | command s | peak RSS MB | ours img/s | plain img/s "
             "| ours / plain |", "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        for name in names:
            if name not in r["runs"]:
                continue
            run = r["runs"][name]
            plain = r["plain_on_img_s"] if name.startswith("on") else r["plain_off_img_s"]
            plain_text, ratio = (f"{plain:.1f}", f"{run['img_s'] / plain:.2f}") if name.endswith("/1p") else ("", "")
            lines.append(f"| {r['label']} | {_format(r)} | {r['images']:,} | {name} | {run['startup_s']:.2f} "
                         f"| {run['wall_s']:.1f} | {run['peak_rss_mb']:.0f} "
                         f"| {run['img_s']:.1f} | {plain_text} | {ratio} |")
    return "\n".join(lines) + "\n"


def _format(row: dict) -> str:
    return row.get("format", "folder")  # rows measured before --formats existed are class folders


def _order(row: dict) -> tuple:
    return row["images"], FORMATS.index(_format(row))


PLOT_KEYS = (("startup_s", "start-up (s)"), ("peak_rss_mb", "peak RSS, largest process (MB)"),
             ("img_s", "train img/s"))
FORMAT_RUNS = ("on/cold/1p", "off/warm/1p")  # per format: the decode through its reader, and streaming from it


def plot(rows: list[dict], path: Path) -> Path:
    """Start-up, peak RSS and img/s against the size: one line per run of the class folders' rows; with other
    formats, a second row of panels with one line per format and FORMAT_RUNS run (solid, dashed)."""
    kinds = [k for k in FORMATS if any(_format(r) == k for r in rows)]
    more = kinds != ["folder"] and len(kinds) > 0
    fig, axes = plt.subplots(2 if more else 1, 3, figsize=(11, 6.4 if more else 3.2), squeeze=False)
    order = [f"{m}/{t}/{p}p" for m, t, p in RUNS]
    firsts = [r for r in rows if _format(r) == (kinds[0] if "folder" not in kinds else "folder")]
    for name in sorted({name for r in firsts for name in r["runs"]}, key=order.index):
        _lines(axes[0], [r for r in firsts if name in r["runs"]], name, name, "-")
    if more:
        for kind in kinds:
            for name, style in zip(FORMAT_RUNS, ("-", "--")):
                chosen = [r for r in rows if _format(r) == kind and name in r["runs"]]
                _lines(axes[1], chosen, name, f"{kind} {name}", style, color=f"C{FORMATS.index(kind)}")
    for line, ax_row in enumerate(axes):
        for ax, (_, title) in zip(ax_row, PLOT_KEYS):
            ax.set_xscale("log")
            ax.set_xlabel("images")
            ax.set_title(title + ("" if line == 0 else ", per format"), fontsize=10)
            ax.grid(alpha=0.3)
        ax_row[0].legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def _lines(axes, rows: list[dict], name: str, label: str, style: str, color: str | None = None) -> None:
    points = sorted((r["images"], r["runs"][name]) for r in rows)
    if not points:
        return
    xs = [x for x, _ in points]
    for ax, (key, _) in zip(axes, PLOT_KEYS):
        ax.plot(xs, [run[key] for _, run in points], marker="o", linestyle=style, label=label, color=color)


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"bench-data: {what} takes comma-separated whole numbers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise UserError(f"bench-data: {what} must be >= 1, got {text!r}")
    return values


def run(args) -> int:
    sizes = _int_list(args.sizes, "--sizes") if args.sizes else []
    args.processes = _int_list(args.processes, "--processes")
    args.modes = [m for m in args.modes.split(",") if m]
    if set(args.modes) - {"on", "off"} or not args.modes:
        raise UserError(f"bench-data: --modes takes on,off (or one of them), got {args.modes}")
    formats = [f for f in args.formats.split(",") if f]
    if set(formats) - set(FORMATS) or not formats:
        raise UserError(f"bench-data: --formats takes some of {','.join(FORMATS)}, got {args.formats!r}")
    if args.per_shard < 1:
        raise UserError(f"bench-data: --per-shard must be >= 1, got {args.per_shard}")
    roots = [Path(r).expanduser() for r in args.roots.split(",") if r] if args.roots else []
    if not sizes and not roots:
        raise UserError("bench-data: give --sizes (generated crops) or --roots (data roots to measure)")
    for root in roots:
        if not root.exists():
            raise UserError(f"bench-data: --roots: {root} not found")
    args.work = Path(args.work).expanduser()
    args.work.mkdir(parents=True, exist_ok=True)
    load_config(args.config, [*DEFAULTS, *args.overrides])  # a bad config or override: one line, before the work
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    print(f"bench-data: {', '.join(DEFAULTS[:3])} | {args.steps} steps per run | {args.threads} thread(s) per "
          f"process | streaming with {args.workers} worker(s)", flush=True)
    rows = []
    for n in sizes:
        started = time.perf_counter()
        root = generated_root(args.work, n, args.seed, args.synth_workers)
        print(f"generated {n:,} crops in {root} ({time.perf_counter() - started:.0f} s; reused when complete)",
              flush=True)
        for kind in formats:
            rows.append(measure_root(args, format_root(args.work, root, kind, args.per_shard), f"generated {n:,}"))
    rows += [measure_root(args, root, root.name) for root in roots]
    previous = out / "bench_data.json"
    if args.append and previous.is_file():  # rows of earlier invocations (other sizes, formats or roots) are kept
        measured = {(r["label"], _format(r)) for r in rows}
        rows = [r for r in json.loads(previous.read_text())["rows"] if (r["label"], _format(r)) not in measured] + rows
        rows.sort(key=_order)
    meta = {"command": " ".join(["checkbox-dist", "bench-data", *sys.argv[2:]]) if sys.argv[1:2] == ["bench-data"]
            else "", "threads": args.threads, "workers": args.workers, "steps": args.steps,
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU", "defaults": DEFAULTS}
    (out / "bench_data.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (out / "bench_data.md").write_text(table(rows))
    plot(rows, out / "bench_data.png")
    print(table(rows), end="")
    print(f"wrote {out / 'bench_data.json'}, {out / 'bench_data.md'}, {out / 'bench_data.png'}")
    return 0
