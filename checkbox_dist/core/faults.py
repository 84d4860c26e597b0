"""Test-only fault injection: make a process die or misbehave at a named point, the Nth time it gets there.

    CHECKBOX_DIST_FAULT=save.state:2 checkbox-dist train ...      # SIGKILL in the 2nd checkpoint write, pre-manifest
    CHECKBOX_DIST_FAULT=step:5:nan checkbox-dist train ...        # the 5th micro-batch's loss is multiplied by NaN
    CHECKBOX_DIST_FAULT=step:3:kill@1 torchrun ... train.py ...   # only the process with RANK=1 dies
    CHECKBOX_DIST_FAULT=eval:1:kill,step:2:slow ...               # several faults, comma-separated

Each fault is SITE:COUNT[:ACTION][@RANK]. Sites (where `point(site)` is called):
    decode      every image decoded into the decoded-image cache or memory (checkbox_dist/data/cache.py: _decoded)
    scan        every scan of a data root, the index not used (checkbox_dist/data/sources.py: scan)
    read.NAME   every sample read from the tar shard file NAME, e.g. read.train-0001.tar (data/catalog.py: Ref.encoded)
    cache_key   every file whose bytes are hashed for the decoded cache's key (checkbox_dist/data/cache.py: cache_key)
    step        every training micro-batch, after the forward pass, before backward (checkbox_dist/train/loop.py: train_step)
    eval        every evaluation batch (checkbox_dist/model/logits.py: collect_logits)
    save.model  checkpoint.save: model.pt written into the temporary folder, train_state.pt not yet
    save.state  checkpoint.save: model.pt and train_state.pt (if any) written, meta.json (the manifest) not yet
    save.swap   checkpoint.save (core/files.py: atomic_folder): the old folder moved aside, the new one not yet renamed into place
Actions:
    kill (default)  SIGKILL this process: no handler, no cleanup -- what `kill -9` and the OOM killer do
    term, usr1      send SIGTERM / SIGUSR1 to this process (preemption, as Slurm sends it)
    stop            SIGSTOP this process: it hangs (a wedged rank) until someone sends SIGCONT or SIGKILL
    nan, inf        `point` returns "nan"/"inf" at that hit; the caller poisons its value (step: the loss)
    slow            sleep 0.25 s at this hit and every later one (keeps a run alive long enough to signal it)

Unset (every real run), `_PLAN` is empty and `point` costs one dict lookup. Tests are the only users (the
reliability suite, tests/*/test_reliability_*.py, and a few others); `reload()` re-reads the variable for
processes forked from an already-importing parent.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "CHECKBOX_DIST_FAULT"
SITES = ("decode", "scan", "cache_key", "step", "eval", "save.model", "save.state", "save.swap")
READ_SITE = "read."  # + a shard's file name: one site per shard
ACTIONS = ("kill", "term", "usr1", "stop", "nan", "inf", "slow")
SLOW_S = 0.25

_SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "usr1": signal.SIGUSR1, "stop": signal.SIGSTOP}
_PLAN: dict[str, list[tuple[int, str]]] = {}  # site -> [(count, action)]
_hits: dict[str, int] = {}


def parse(text: str, rank: str | None = None) -> dict[str, list[tuple[int, str]]]:
    """'step:3:nan@1,save.state:1' -> {'step': [(3, 'nan')], ...} keeping only faults for this rank."""
    rank = os.environ.get("RANK", "0") if rank is None else rank
    plan: dict[str, list[tuple[int, str]]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        item, _, only_rank = item.partition("@")
        fields = item.split(":")
        known = fields[0] in SITES or (fields[0].startswith(READ_SITE) and len(fields[0]) > len(READ_SITE))
        if len(fields) not in (2, 3) or not known or not fields[1].isdigit() or int(fields[1]) < 1 \
                or (len(fields) == 3 and fields[2] not in ACTIONS):
            raise ValueError(f"{ENV}: bad fault {item!r}: expected SITE:COUNT[:ACTION][@RANK] with SITE in "
                             f"{', '.join(SITES)}, {READ_SITE}SHARD and ACTION in {', '.join(ACTIONS)}")
        if only_rank and only_rank != rank:
            continue
        plan.setdefault(fields[0], []).append((int(fields[1]), fields[2] if len(fields) == 3 else "kill"))
    return plan


def reload() -> None:
    _PLAN.clear()
    _PLAN.update(parse(os.environ.get(ENV, "")))
    _hits.clear()


def point(site: str) -> str | None:
    """Mark that `site` was reached; returns 'nan'/'inf' when the caller should poison its value."""
    if site not in _PLAN:
        return None
    return _fire(site)


def _fire(site: str) -> str | None:
    _hits[site] = n = _hits.get(site, 0) + 1
    for count, action in _PLAN[site]:
        if action == "slow" and n >= count:
            time.sleep(SLOW_S)
        if n != count:
            continue
        if action in ("nan", "inf"):
            return action
        if action in _SIGNALS:
            os.kill(os.getpid(), _SIGNALS[action])
    return None


reload()
