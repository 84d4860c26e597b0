"""`train.ensemble_members=N`: N runs of one recipe that differ only in train.seed, one after the other, then
one ensemble folder that every inference command takes as one model.

    checkbox-dist train --config C data.val_fraction=0 eval.cv_dir=runs/cv-C train.ensemble_members=3 \\
        train.output_dir=runs/ship
    RUN/members/seed_<S>/    member runs, seeds train.seed + 0 .. N-1 (each a normal run folder)
    RUN/ensemble/            model/ensemble.py: copies of each member's `best`, averaged at inference
    RUN/summary.json         the members' summaries and the ensemble's path, written last

The members share one stage one (pretrain.output_dir pinned to the first member's): the seed varies the
fine-tune. Rerunning the command skips finished members and resumes an interrupted one (as `cv` does with
folds), so a preempted job continues where it stopped.
"""

from __future__ import annotations

import copy
from pathlib import Path

from checkbox_dist.core.config import Config
from checkbox_dist.core.distributed import process_state
from checkbox_dist.core.files import atomic_write_json
from checkbox_dist.core.runs import agreed_name, config_stem, timestamped
from checkbox_dist.model import ensemble
from checkbox_dist.train.pretrain import stage_config, stage_folder


def member_configs(cfg: Config, run_dir: Path) -> list[Config]:
    """One config per member: its seed, its folder, the shared stage one, resume when it has checkpoints."""
    # stage_folder: a folder every process sees (hosts with their own caches: under the ensemble's run folder)
    shared_stage = str(stage_folder(cfg, stage_config(cfg), run_dir)) if cfg.pretrain.synth_n else cfg.pretrain.output_dir
    configs = []
    for k in range(cfg.train.ensemble_members):
        member = copy.deepcopy(cfg)
        member.train.ensemble_members = 1
        member.train.seed = cfg.train.seed + k
        member.train.output_dir = str(run_dir / "members" / f"seed_{member.train.seed}")
        member.pretrain.output_dir = shared_stage
        checkpoints = Path(member.train.output_dir) / "checkpoints"
        member.train.resume = "auto" if checkpoints.is_dir() and any(checkpoints.iterdir()) else ""
        if member.tracking.run_name:
            member.tracking.run_name += f"-seed{member.train.seed}"
        configs.append(member)
    return configs


def train_members(cfg: Config, config_path: str | None, train_one) -> dict:
    """Train the members not finished yet with `train_one(cfg, config_path)`, then write RUN/ensemble."""
    state = process_state()
    say = state.print
    run_dir = agreed_name(cfg.train.output_dir or timestamped(config_stem(config_path)), state.num_processes)
    configs = member_configs(cfg, run_dir)
    summaries = []
    for k, member in enumerate(configs):
        member_dir = Path(member.train.output_dir)
        say(f"---- ensemble member {k + 1}/{len(configs)}: seed {member.train.seed} -> {member_dir}")
        if (member_dir / "summary.json").is_file():
            say(f"member {member_dir.name}: finished before, kept")
            summaries.append({"run_dir": str(member_dir)})
            continue
        summaries.append(train_one(member, config_path))
    if not state.is_main_process:
        return {}
    out = ensemble.write(run_dir / "ensemble", [Path(m.train.output_dir) for m in configs],
                         {"recipe_config": config_path, "cv_dir": cfg.eval.cv_dir or None})
    summary = {"ensemble": str(out), "members": len(configs), "seeds": [m.train.seed for m in configs],
               "member_runs": [m.train.output_dir for m in configs], "member_summaries": summaries}
    atomic_write_json(run_dir / "summary.json", summary)
    say(f"ensemble: {len(configs)} members (seeds {', '.join(str(m.train.seed) for m in configs)}) -> {out}")
    say(f"use it as one model: checkbox-dist predict|eval|serve|export|bench-infer --checkpoint {out}")
    return summary
