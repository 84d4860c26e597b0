"""Hyperparameter search where every trial is a normal `checkbox-dist cv` run, scored by its CV mean.

    checkbox-dist sweep --space configs/sweeps/checkbox_state_v2.yaml --config configs/checkbox_state_v2.yaml \
        --folds 5 --trials 12 --mode random --out runs/sweep1 [section.key=value ...]   # local, one after another
    checkbox-dist sweep ... --runner slurm --out runs/sweep1      # writes runs/sweep1/trials.txt, prints sbatch
    checkbox-dist sweep --gather runs/sweep1                       # one table, best CV top-1 first
    checkbox-dist sweep --space S --config C --folds 5 --wandb configs/sweeps/wandb_sweep.yaml   # W&B sweep

Space file (YAML): `section.key: [v1, v2, ...]` (a choice; grid mode takes the product of these) or
`section.key: {low: 1.0e-4, high: 3.0e-3, log: true, int: false}` (random mode only).

OUT/sweep.json holds config, folds, base overrides and the trials; OUT/trials.txt holds one trial per line
as space-separated `section.key=value` overrides (values quoted so YAML reads them back exactly: "no",
"#000000"). Trial i runs into OUT/trial_<i>; `sweep --run-trial I --out OUT` runs line I, which is what a
Slurm array task does. Local trials run as subprocesses: a failing trial is recorded and the sweep goes on.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from checkbox_dist.core.config_loader import load_config
from checkbox_dist.core.errors import UserError
from checkbox_dist.core.files import atomic_write_csv
from checkbox_dist.core.runs import timestamped


def read_space(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"--space: file not found: {path}")
    try:
        space = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(space, dict) or not space:
        raise UserError(f"{path}: expected a mapping of section.key -> list of values or {{low, high}}")
    for key, spec in space.items():
        if isinstance(spec, list):
            if not spec:
                raise UserError(f"{path}: {key}: empty list of values")
        elif isinstance(spec, dict):
            if not {"low", "high"} <= set(spec) or not set(spec) <= {"low", "high", "log", "int"}:
                raise UserError(f"{path}: {key}: a range is {{low, high, log: bool, int: bool}}, got {spec}")
            if not spec["low"] <= spec["high"] or (spec.get("log") and spec["low"] <= 0):
                raise UserError(f"{path}: {key}: need low <= high (and low > 0 with log), got {spec}")
        else:
            raise UserError(f"{path}: {key}: expected a list of values or {{low, high}}, got {spec!r}")
    return space


def format_value(value) -> str:
    """A value as one shell word that YAML (the override parser) reads back as exactly `value`."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:.6g}"
        if "e" in text and "." not in text.split("e")[0]:
            text = text.replace("e", ".0e")  # PyYAML reads 1e-05 as a string, 1.0e-05 as a float
        elif "e" not in text and "." not in text and "inf" not in text and "nan" not in text:
            text += ".0"
    elif isinstance(value, list):
        text = "[" + ",".join(format_value(v) for v in value) + "]"
    elif isinstance(value, str):
        text = value if value and yaml.safe_load(value) == value and " " not in value else json.dumps(value)
    else:
        text = str(value)
    if " " in text or not _same(yaml.safe_load(text), value):
        raise UserError(f"sweep: cannot write {value!r} as one override word")
    return text


def _same(read, value) -> bool:
    if isinstance(value, float):
        return isinstance(read, float) and abs(read - value) <= 1e-5 * max(1.0, abs(value))
    if isinstance(value, list):
        return isinstance(read, list) and len(read) == len(value) and all(map(_same, read, value))
    return read == value and type(read) is type(value)


def make_trials(space: dict, mode: str, n: int | None, seed: int) -> list[dict]:
    keys = list(space)
    if mode == "grid":
        ranges = [k for k in keys if not isinstance(space[k], list)]
        if ranges:
            raise UserError(f"--mode grid needs a list of values for every key; '{ranges[0]}' is a range")
        trials = [dict(zip(keys, combo)) for combo in itertools.product(*(space[k] for k in keys))]
        return trials[:n] if n else trials
    rng = random.Random(seed)
    trials = []
    for _ in range(n or 10):
        trial = {}
        for key in keys:
            spec = space[key]
            if isinstance(spec, list):
                trial[key] = spec[rng.randrange(len(spec))]
                continue
            low, high = float(spec["low"]), float(spec["high"])
            value = math.exp(rng.uniform(math.log(low), math.log(high))) if spec.get("log") else rng.uniform(low, high)
            trial[key] = int(round(value)) if spec.get("int") else float(f"{value:.4g}")
        trials.append(trial)
    return trials


def trial_words(trial: dict) -> list[str]:
    return [f"{k}={format_value(v)}" for k, v in trial.items()]


def _trial_command(settings: dict, index: int, words: list[str]) -> list[str]:
    out = Path(settings["out"]) / f"trial_{index}"
    command = [sys.executable, "-m", "checkbox_dist", "cv", "--folds", str(settings["folds"]), "--out", str(out)]
    if settings["config"]:
        command += ["--config", settings["config"]]
    return command + settings["base_overrides"] + words


def run_trial(settings: dict, index: int, words: list[str]) -> int:
    """One trial as a `cv` subprocess (log in OUT/trial_<i>/cv_log.txt). SIGUSR1/SIGTERM (Slurm preemption,
    slurm/sweep.sh) are passed on: the fold in progress saves `last` and cv exits 75; a rerun resumes it."""
    out = Path(settings["out"]) / f"trial_{index}"
    if (out / "cv_summary.json").is_file():
        print(f"trial {index}: done before, kept ({out / 'cv_summary.json'})")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "trial.json").write_text(json.dumps({"trial": index, "overrides": words}, indent=1))
    print(f"trial {index}: {' '.join(words) or '(base config)'} -> {out}", flush=True)
    with (out / "cv_log.txt").open("a") as log:
        proc = subprocess.Popen(_trial_command(settings, index, words), stdout=log, stderr=subprocess.STDOUT)
        forward = lambda signum, _frame: proc.send_signal(signum)  # noqa: E731
        old = {sig: signal.signal(sig, forward) for sig in (signal.SIGUSR1, signal.SIGTERM)}
        try:
            returncode = proc.wait()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
    tail = (out / "cv_log.txt").read_text().strip().splitlines()[-1:] or [""]
    status = {0: "ok", 75: "stopped (exit 75): run it again to resume"}.get(returncode, f"FAILED (exit {returncode})")
    print(f"trial {index}: {status}: {tail[0]}", flush=True)
    return returncode


def gather(out: Path) -> list[dict]:
    """One row per trial folder, sorted by CV top-1 mean (then macro-F1); unfinished trials last."""
    if not out.is_dir():
        raise UserError(f"--gather: folder not found: {out}")
    lines = (out / "trials.txt").read_text().splitlines() if (out / "trials.txt").is_file() else []
    folders = sorted((p for p in out.glob("trial_*") if p.is_dir() and p.name[6:].isdigit()),
                     key=lambda p: int(p.name[6:]))
    indices = sorted({int(p.name[6:]) for p in folders} | set(range(len(lines))))
    if not indices:
        raise UserError(f"{out}: no trial_<i> folders and no trials.txt: not a sweep folder")
    rows = []
    for i in indices:
        folder = out / f"trial_{i}"
        words = lines[i].split() if i < len(lines) else []
        if not words and (folder / "trial.json").is_file():
            words = json.loads((folder / "trial.json").read_text())["overrides"]
        row = {"trial": i, "overrides": " ".join(words), "folder": str(folder)}
        summary_file = folder / "cv_summary.json"
        if summary_file.is_file():
            s = json.loads(summary_file.read_text())
            row.update(top1_mean=s["top1"]["mean"], top1_std=s["top1"]["std"], macro_f1_mean=s["macro_f1"]["mean"],
                       macro_f1_std=s["macro_f1"]["std"], folds=s["folds"], status="done")
        else:
            row["status"] = "not done"
        rows.append(row)
    done = sorted((r for r in rows if r["status"] == "done"), key=lambda r: (-r["top1_mean"], -r["macro_f1_mean"]))
    return done + [r for r in rows if r["status"] != "done"]


def write_results(out: Path, rows: list[dict]) -> Path:
    path = out / "sweep_results.csv"
    fields = ["rank", "trial", "top1_mean", "top1_std", "macro_f1_mean", "macro_f1_std", "folds", "status",
              "overrides", "folder"]
    ranked = [{"rank": rank if row["status"] == "done" else "", **row} for rank, row in enumerate(rows, 1)]
    return atomic_write_csv(path, fields, [[row.get(f, "") for f in fields] for row in ranked])


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'rank':>4} {'trial':>5} {'CV top-1':>17} {'macro-F1':>17}  overrides"]
    for rank, r in enumerate(rows, 1):
        if r["status"] == "done":
            lines.append(f"{rank:>4} {r['trial']:>5} {r['top1_mean']:.4f} ± {r['top1_std']:.4f} "
                         f"{r['macro_f1_mean']:.4f} ± {r['macro_f1_std']:.4f}  {r['overrides']}")
        else:
            lines.append(f"{'-':>4} {r['trial']:>5} {'not done':>17} {'':>17}  {r['overrides']}")
    return "\n".join(lines)


def wandb_sweep_config(space: dict, config: str | None, folds: int, mode: str, base: list[str]) -> dict:
    """A W&B sweep whose agent runs `checkbox-dist cv` with the chosen values as overrides."""
    parameters = {}
    for key, spec in space.items():
        if isinstance(spec, list):
            parameters[key] = {"values": spec}
        else:
            kind = "int_uniform" if spec.get("int") else ("log_uniform_values" if spec.get("log") else "uniform")
            parameters[key] = {"distribution": kind, "min": spec["low"], "max": spec["high"]}
    command = ["checkbox-dist", "cv", "--folds", str(folds)] + (["--config", config] if config else [])
    return {"method": mode, "metric": {"name": "cv/top1_mean", "goal": "maximize"}, "parameters": parameters,
            "command": command + base + ["${args_no_hyphens}"]}


def report_to_wandb(summary: dict) -> None:
    """Under a W&B sweep agent (WANDB_SWEEP_ID set): log the CV score to the agent's run."""
    import wandb

    run = wandb.init()
    values = {"cv/top1_mean": summary["top1"]["mean"], "cv/top1_std": summary["top1"]["std"],
              "cv/macro_f1_mean": summary["macro_f1"]["mean"], "cv/macro_f1_std": summary["macro_f1"]["std"],
              "cv/pooled_top1": summary["pooled_oof"]["top1"]}
    run.log(values)
    run.summary.update(values)
    run.finish()


def run(args) -> int:
    if args.gather:
        out = Path(args.gather)
        rows = gather(out)
        print(format_rows(rows))
        print(f"wrote {write_results(out, rows)}")
        return 0
    if args.run_trial is not None:
        return _run_listed_trial(args)
    if not args.space:
        raise UserError("--space is required (or --gather OUT)")
    if args.folds < 2:
        raise UserError(f"--folds must be at least 2, got {args.folds}")
    if args.trials is not None and args.trials < 1:
        raise UserError(f"--trials must be at least 1, got {args.trials}")
    space = read_space(Path(args.space))
    trials = make_trials(space, args.mode, args.trials, args.seed)
    words = [trial_words(t) for t in trials]
    for w in words:  # every trial's config must load before anything runs
        load_config(args.config, list(args.overrides) + w)
    if args.wandb:
        return _write_wandb_sweep(args, space)
    out = Path(args.out or timestamped("sweep"))
    out.mkdir(parents=True, exist_ok=True)
    settings = {"config": args.config, "folds": args.folds, "base_overrides": list(args.overrides), "out": str(out),
                "space": space, "mode": args.mode, "seed": args.seed, "trials": trials}
    (out / "sweep.json").write_text(json.dumps(settings, indent=1))
    (out / "trials.txt").write_text("".join(" ".join(w) + "\n" for w in words))
    print(f"sweep: {len(trials)} trials ({args.mode}) over {', '.join(space)} -> {out / 'trials.txt'}")
    if args.runner == "slurm":
        print(f"submit (from a checkout of the repository, which holds slurm/sweep.sh): "
              f"sbatch --array=0-{len(trials) - 1} slurm/sweep.sh {out / 'trials.txt'} {out}")
        print(f"then:   checkbox-dist sweep --gather {out}")
        return 0
    return _run_local(settings, out, words)


def _run_listed_trial(args) -> int:
    """`--run-trial I --out OUT`: line I of OUT/trials.txt (a Slurm array task)."""
    out = Path(args.out) if args.out else None
    if out is None or not (out / "sweep.json").is_file():
        raise UserError("--run-trial needs --out OUT, a folder with sweep.json (written by `sweep`)")
    settings = json.loads((out / "sweep.json").read_text())
    lines = (out / "trials.txt").read_text().splitlines()
    if not 0 <= args.run_trial < len(lines):
        raise UserError(f"--run-trial {args.run_trial}: {out / 'trials.txt'} has trials 0..{len(lines) - 1}")
    return run_trial(settings, args.run_trial, lines[args.run_trial].split())


def _write_wandb_sweep(args, space: dict) -> int:
    mode = "grid" if args.mode == "grid" else "random"
    text = yaml.safe_dump(wandb_sweep_config(space, args.config, args.folds, mode, list(args.overrides)),
                          sort_keys=False)
    Path(args.wandb).parent.mkdir(parents=True, exist_ok=True)
    Path(args.wandb).write_text(f"# W&B sweep: wandb sweep {args.wandb}; then wandb agent ENTITY/PROJECT/ID\n"
                                + text)
    print(f"wrote {args.wandb}: {len(space)} parameters, method {mode}; run `wandb sweep {args.wandb}`, "
          f"then `wandb agent <printed sweep id>`")
    return 0


def _run_local(settings: dict, out: Path, words: list[list[str]]) -> int:
    """Every trial in turn, as a subprocess; a failing trial is recorded and the sweep goes on."""
    failed = []
    for i, w in enumerate(words):
        returncode = run_trial(settings, i, w)
        if returncode == 75:  # preempted: stop here; the same command resumes (finished trials are kept)
            return returncode
        if returncode != 0:
            failed.append(i)
    rows = gather(out)
    print(format_rows(rows))
    print(f"wrote {write_results(out, rows)}"
          + (f" | failed trials: {failed} (see trial_<i>/cv_log.txt)" if failed else ""))
    return 1 if failed and len(failed) == len(words) else 0
