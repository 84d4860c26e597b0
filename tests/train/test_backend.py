"""train/backend.py on the CPU: the random generators of replicas that are threads, and precision.

    .venv/bin/pytest tests/train/test_backend.py -q

TPU v2/v3 (and torch_xla on several CPU devices) run one thread per device in one process, so the replicas
share torch's CPU generator. Two Python threads stand in for two such replicas here: each seeds, then draws.
`_two_thread_replicas` forces the interleaving thread scheduling produces now and then (replica 0 draws after
replica 1 has seeded), so each run shows it. The per-device generator of XLA, which `seed_step` uses for
dropout masks, is checked on a real XLA device in tests/train/test_xla.py.
"""

from __future__ import annotations

import threading

import torch
from accelerate.utils import set_seed

from checkbox_dist.train import backend


def _two_thread_replicas(replica) -> list:
    """replica(rank, hold) in two threads; hold() returns once the other replica has seeded too (or after
    0.5 s, when it cannot: it waits for a lock this replica holds)."""
    seeded = [threading.Event(), threading.Event()]
    results: list = [None, None]

    def hold(rank: int) -> None:
        seeded[rank].set()
        seeded[1 - rank].wait(0.5)

    def run(rank: int) -> None:
        results[rank] = replica(rank, lambda: hold(rank))

    threads = [threading.Thread(target=run, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _initial_weights() -> torch.Tensor:
    return torch.nn.Linear(32, 32).weight.detach().clone()  # kaiming init: torch's default CPU generator


def test_thread_replicas_start_from_the_same_weights():
    alone = backend.build_seeded(5, _initial_weights)

    def seed_then_build(_rank, hold):  # session._build before: set_seed, then the model's weights
        set_seed(5)
        hold()
        return _initial_weights()

    racy = _two_thread_replicas(seed_then_build)
    assert not (torch.equal(racy[0], alone) and torch.equal(racy[1], alone))  # the race: one drew the other's numbers

    def seeded_build(_rank, hold):
        return backend.build_seeded(5, lambda: (hold(), _initial_weights())[1])

    fixed = _two_thread_replicas(seeded_build)
    assert torch.equal(fixed[0], alone) and torch.equal(fixed[1], alone)


def test_per_step_seeds_on_a_shared_generator_depend_on_the_interleaving():
    """The control for seed_step on XLA: masks keyed per micro-batch by torch.manual_seed (the loop's call
    before) are not keyed at all when two thread replicas share the generator."""
    def mask(seed=None) -> list[int]:
        if seed is not None:
            torch.manual_seed(seed)
        return (torch.nn.functional.dropout(torch.ones(64), 0.5, training=True) > 0).int().tolist()

    wanted = [mask(100), mask(101)]

    def step(rank, hold):
        torch.manual_seed(100 + rank)
        hold()
        return mask()

    racy = _two_thread_replicas(step)
    assert racy[0] != wanted[0]  # replica 0 drew from replica 1's seed


def test_seed_step_on_a_cpu_seeds_the_default_generator():
    """Processes (CPU, GPU) each own their default generator: seed_step is torch.manual_seed there."""
    backend.seed_step(7, torch.device("cpu"))
    first = torch.rand(4)
    torch.manual_seed(7)
    assert torch.equal(first, torch.rand(4))
