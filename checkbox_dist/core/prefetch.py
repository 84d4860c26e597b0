"""Test-only stand-in for torch_xla's MpDeviceLoader: read a prepared loader from a thread, DEPTH batches ahead.

    CHECKBOX_DIST_PREFETCH=24 torchrun ... train.py ...      # train and val loaders read 24 batches ahead

On XLA, Accelerate wraps each prepared loader (a DataLoaderShard) in MpDeviceLoader, whose own thread iterates
the shard into a 16-deep host queue, then an 8-deep device queue (torch_xla/distributed/parallel_loader.py):
the shard runs up to ~24 batches ahead of the loop. Iterating the shard is what sets Accelerate's
GradientState (`end_of_dataloader`, read by `Accelerator.accumulate` and `gather_for_metrics`), so on several
TPU cores that state follows the thread, not the loop (Accelerate issue 480). CI has no TPU and multi-device
CPU XLA hangs in collectives; this wrapper does the same thing in front of a gloo world or one process: one
thread iterates the shard (GradientState flips from that thread, as it does under MpDeviceLoader) into a
DEPTH-deep queue, and the RNG synchronisation of the shard runs once per pass on the calling thread, as
Accelerate's MpDeviceLoaderWrapper does (a collective from the thread would race the loop's collectives).

`wrap` is called where the loop and the evaluation iterate their loaders. Unset (every real run), it returns
the loader itself; on XLA the real MpDeviceLoader is already there and the loader is returned unchanged.
"""

from __future__ import annotations

import os
import queue
import threading

ENV = "CHECKBOX_DIST_PREFETCH"
_depth = 0
_END = object()


def reload() -> None:
    global _depth
    text = os.environ.get(ENV, "")
    if text and not text.isdigit():
        raise ValueError(f"{ENV}: expected a queue depth (a whole number), got {text!r}")
    _depth = int(text or 0)


def wrap(loader):
    """`loader`, or a thread-prefetching view of it when CHECKBOX_DIST_PREFETCH is set."""
    if not _depth or type(loader).__name__ == "MpDeviceLoaderWrapper":
        return loader
    return Prefetched(loader, _depth)


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetched:
    """Iterates `loader` in a daemon thread into a queue of `depth` batches; everything else is the loader's."""

    def __init__(self, loader, depth: int):
        self.loader, self.depth = loader, depth

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):
        return getattr(self.loader, name)

    def __iter__(self):
        loader = self.loader
        rng_types = getattr(loader, "rng_types", None)
        if rng_types:
            from accelerate.utils import synchronize_rng_states

            synchronize_rng_states(rng_types, loader.synchronized_generator)
            loader.rng_types = None
        batches: queue.Queue = queue.Queue(self.depth)
        stop = threading.Event()

        def put(item) -> None:
            while not stop.is_set():
                try:
                    batches.put(item, timeout=0.05)
                    return
                except queue.Full:
                    continue

        def read() -> None:
            try:
                for batch in loader:
                    put(batch)
                    if stop.is_set():
                        return
            except BaseException as error:  # noqa: BLE001 - handed to the consuming thread
                put(_Failed(error))
            put(_END)

        thread = threading.Thread(target=read, daemon=True, name="prefetch-standin")
        thread.start()
        try:
            while (item := batches.get()) is not _END:
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            stop.set()
            if rng_types:
                loader.rng_types = rng_types


reload()
