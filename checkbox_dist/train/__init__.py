"""Training: `run(cfg, config_path)` trains one run end to end (stage one first when configured).

Modules, top down: run (the entry) -> pretrain (stage one, cached) -> stage (setup -> fit -> finish) ->
loop (fit: epochs, train_epoch, train_step) -> session (building everything fit needs), checkpointing
(save, resume), evaluation (val metrics, best-model rules, calibration), guards (stop requests, NaN),
windows (which micro-batches close an accumulation window), output (log, metrics.jsonl, plots, trackers:
every rank-0 side effect).
"""

from checkbox_dist.train.run import run

__all__ = ["run"]
