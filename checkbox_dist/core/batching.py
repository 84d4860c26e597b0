"""How a config's batch settings become a run's batch shape for a given world size.

Two ways to say the batch, both kept:

    train.global_batch_size: G      the recipe: G images per optimizer step on any launch shape.
                                    data.batch_size is the micro-batch that fits one device; the
                                    accumulation is derived: A = G / (world x micro).
    train.global_batch_size: 0      the older explicit form: data.batch_size per process x world x
                                    train.grad_accum_steps, so the global batch grows with the world.

With a global batch, the micro-batch is data.batch_size when G / world is a multiple of it; otherwise the
largest divisor of G / world below it (said in a note: BatchNorm then normalises over fewer images). A
world size that does not divide G is a UserError naming the sizes that would.
"""

from __future__ import annotations

from dataclasses import dataclass

from checkbox_dist.core.errors import UserError


@dataclass(frozen=True)
class BatchShape:
    world: int  # processes
    micro: int  # images per process per forward (the loader's batch)
    accum: int  # micro-batches per process per optimizer step
    global_batch: int  # images per optimizer step, all processes together
    fixed: bool  # True: from train.global_batch_size (launch-invariant); False: the explicit keys
    note: str = ""  # why the micro-batch is not data.batch_size, when it is not


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def derive(cfg, world: int) -> BatchShape:
    """The batch shape of a run of `cfg` (a core.config.Config) on `world` processes."""
    micro_cap, global_batch = cfg.data.batch_size, cfg.train.global_batch_size
    if not global_batch:
        accum = cfg.train.grad_accum_steps
        return BatchShape(world, micro_cap, accum, micro_cap * world * accum, False)
    if global_batch % world:
        fits = ", ".join(str(d) for d in divisors(global_batch) if d <= 64)
        raise UserError(f"train.global_batch_size={global_batch} cannot be split over {world} processes "
                        f"({global_batch} / {world} is not a whole number): launch a world size that divides it "
                        f"({fits}), or set train.global_batch_size to a multiple of {world}")
    per_process = global_batch // world
    micro = max(d for d in divisors(per_process) if d <= micro_cap)
    note = ""
    if micro != micro_cap:
        note = (f"note: micro-batch {micro}, not data.batch_size={micro_cap}: train.global_batch_size={global_batch} "
                f"over {world} processes is {per_process} images each, which {micro_cap} does not divide "
                f"(BatchNorm normalises over {micro} images; model.sync_batchnorm=true pools the processes)")
    return BatchShape(world, micro, per_process // micro, global_batch, True, note)
