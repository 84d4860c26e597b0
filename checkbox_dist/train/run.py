"""`run(cfg)`: a whole training run, stage one (synthetic pretraining, when configured) then the run itself;
with train.ensemble_members=N, N such runs and the ensemble folder (train/members.py).

    checkbox-dist train --config configs/quickstart.yaml                       # CPU, synthetic data
    checkbox-dist train --config configs/checkbox_state_v2.yaml data.root=/data/checkbox_state_v2/train
    checkbox-dist train --config C data.val_fraction=0 eval.cv_dir=CV         # refit on every image (refit.py)
    checkbox-dist train --config C data.val_fraction=0 eval.cv_dir=CV train.ensemble_members=3
    accelerate launch --config_file launch/multi_gpu.yaml train.py --config configs/checkbox_state_v2.yaml
    ACCELERATE_USE_CPU=true accelerate launch --config_file launch/cpu_2proc.yaml train.py --config ...
    sbatch slurm/train.sh --config configs/checkbox_state_v2.yaml              # see slurm/train.sh
"""

from __future__ import annotations

from checkbox_dist.core.config import Config
import checkbox_dist.train.guards as guards
import checkbox_dist.train.pretrain as pretrain
from checkbox_dist.train.members import train_members
from checkbox_dist.train.stage import train_stage


def run(cfg: Config, config_path: str | None = None) -> dict:
    """Train as `cfg` says and return the run's summary (main process; {} on the others).
    Raises Preempted (exit 75) after saving `last` when asked to stop, UserError for what the user can fix."""
    if cfg.train.ensemble_members > 1:
        return train_members(cfg, config_path, _run_one)
    return _run_one(cfg, config_path)


def _run_one(cfg: Config, config_path: str | None) -> dict:
    with guards.stop_signals():  # first, so a preemption during stage one or data decoding is clean too
        cfg = pretrain.ensure(cfg, config_path)  # pretrain.synth_n > 0: stage one (cached), then this run fine-tunes from it
        return train_stage(cfg, config_path)
