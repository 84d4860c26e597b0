"""`checkbox-dist sweep`: hyperparameter search where every trial is a `cv` run, scored by its CV mean."""

from __future__ import annotations

from checkbox_dist.commands import add_command, add_config_args

EXAMPLES = """examples:
  checkbox-dist sweep --space SPACE.yaml --config checkbox_state_v2 --folds 5 --trials 12 --mode random \\
      --out runs/sweep1 [section.key=value ...]                  # local, one trial after another
  checkbox-dist sweep ... --runner slurm --out runs/sweep1        # writes runs/sweep1/trials.txt, prints sbatch
  checkbox-dist sweep --gather runs/sweep1                        # one table, best CV top-1 first
  checkbox-dist sweep --space S --config C --folds 5 --wandb wandb_sweep.yaml   # a W&B sweep config
  checkbox-dist configs                                           # the packaged search spaces"""
DETAILS = """Space file (YAML): `section.key: [v1, v2, ...]` (a choice; grid mode takes the product of these) or
`section.key: {low: 1.0e-4, high: 3.0e-3, log: true, int: false}` (random mode only).

OUT/sweep.json holds config, folds, base overrides and the trials; OUT/trials.txt one trial per line as
`section.key=value` overrides. Trial i runs into OUT/trial_<i>; `sweep --run-trial I --out OUT` runs
line I, which is what a Slurm array task does. Local trials run as subprocesses: a failing trial is
recorded and the sweep goes on."""


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "sweep", "hyperparameter search, each trial a cv run; a sorted table",
                    EXAMPLES, DETAILS)
    p.add_argument("--space", help="YAML: section.key -> [values] or {low, high, log, int}")
    add_config_args(p, overrides="config overrides applied to every trial")
    p.add_argument("--folds", type=int, default=5, help="CV folds of every trial")
    p.add_argument("--trials", type=int, default=None, help="random: number of trials (default 10); grid: cap")
    p.add_argument("--mode", choices=["random", "grid"], default="random",
                   help="random draws or the grid of all choices")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    p.add_argument("--runner", choices=["local", "slurm"], default="local",
                   help="local: one trial after another here; slurm: write the trials for a Slurm array")
    p.add_argument("--out", "--output", dest="out", default="", help="sweep folder (default runs/sweep-<time>)")
    p.add_argument("--gather", metavar="OUT", help="only gather OUT/trial_*/cv_summary.json into one table")
    p.add_argument("--run-trial", type=int, metavar="I", help="run line I of OUT/trials.txt (a Slurm array task)")
    p.add_argument("--wandb", metavar="FILE", help="write a W&B sweep config for --space instead of running")
    p.set_defaults(handler=run)


def run(args) -> int:
    from checkbox_dist.experiments import sweep

    return sweep.run(args)
