"""Micro-batching for `serve`: concurrent requests share one model call (asyncio, one model thread).

    batcher = MicroBatcher(run_batch, max_batch=32, max_wait_s=0.005)
    await batcher.start()
    probs_row, batch_size = await batcher.submit(decoded_image)

The loop takes the first waiting image, then keeps collecting until `max_batch` images or `max_wait_s`
after the first one, and runs the batch in a single worker thread (so the event loop keeps accepting
requests while the model computes; torch/ONNX Runtime use their own intra-op threads inside it). While a
batch runs, new requests queue up and form the next batch, so under load batches grow without any
waiting, and a lone request pays at most `max_wait_s` extra. Why batch at all: one model call on many
images costs much less than one call per image (figures in docs/INFERENCE.md).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable


class Overloaded(Exception):
    """The queue is full: the caller should answer 503 rather than queue without bound."""


class BatchStats:
    """Images, model calls and batch sizes since start (what /health reports)."""

    def __init__(self):
        self.started = time.time()
        self.images = self.batches = self.failed_batches = 0
        self.sizes: Counter[int] = Counter()

    def record(self, size: int) -> None:
        self.images += size
        self.batches += 1
        self.sizes[size] += 1

    def to_dict(self) -> dict:
        return {"uptime_s": round(time.time() - self.started, 1), "images": self.images, "batches": self.batches,
                "failed_batches": self.failed_batches,
                "batch_size": {"max": max(self.sizes, default=0),
                               "mean": round(self.images / self.batches, 3) if self.batches else 0.0,
                               "histogram": {str(k): v for k, v in sorted(self.sizes.items())}}}


class MicroBatcher:
    """Queues single items and hands them to `run_batch` in batches (see the module docstring)."""

    def __init__(self, run_batch: Callable[[list[Any]], Any], max_batch: int = 32, max_wait_s: float = 0.005,
                 max_queue: int = 1024):
        self.run_batch, self.max_batch, self.max_wait_s = run_batch, max(1, max_batch), max(0.0, max_wait_s)
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, item: Any) -> tuple[Any, int]:
        """(row of the batch result for `item`, size of the batch it ran in)."""
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise Overloaded(f"{self.max_queue} images are already waiting") from None
        return await future

    async def _collect(self) -> list[tuple[Any, asyncio.Future]]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return [(item, fut) for item, fut in batch if not fut.cancelled()]  # clients that hung up

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            try:
                rows = await loop.run_in_executor(self._executor, self.run_batch, [item for item, _ in batch])
            except Exception as err:  # noqa: BLE001 - handed to every waiting request, the loop goes on
                self.stats.failed_batches += 1
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            self.stats.record(len(batch))
            for (_, fut), row in zip(batch, rows):
                if not fut.done():
                    fut.set_result((row, len(batch)))
