"""The loop's own accumulation windows (train/windows.py) and eval's one row per val index (model/logits.py):
pure functions, no run. The runs behind a prefetching loader: tests/train/test_sync_windows.py."""

from __future__ import annotations

import torch

from checkbox_dist.model.logits import first_per_index
from checkbox_dist.train import windows


def closing(micro_per_epoch: int, accum: int, start: int = 0) -> list[int]:
    return [m for m in range(start, micro_per_epoch) if windows.closes(m, accum, micro_per_epoch)]


def test_windows_close_every_accum_micro_batches_and_on_the_epochs_last():
    assert closing(10, 4) == [3, 7, 9]
    assert closing(30, 4) == [3, 7, 11, 15, 19, 23, 27, 29]
    assert closing(40, 4) == list(range(3, 40, 4))
    assert closing(5, 1) == [0, 1, 2, 3, 4]
    assert closing(10, 4, start=8) == [9]  # resumed at a window end: the same boundaries
    assert [windows.length(m, 4, 10) for m in range(10)] == [4] * 8 + [2] * 2
    assert [windows.length(m, 3, 3) for m in range(3)] == [3] * 3


def test_first_per_index_drops_padding_repeats_and_orders_by_index():
    # 2 processes x batch 3 over 5 val images: rank 0 gets 0, 1, 2 | 0, 1, 2 and rank 1 gets 3, 4, 0 | ...;
    # gathered per batch: [0, 1, 2, 3, 4, 0] (the last 0 pads rank 1's batch)
    indices = torch.tensor([0, 1, 2, 3, 4, 0])
    keep = first_per_index(indices)
    assert keep.tolist() == [0, 1, 2, 3, 4]
    shuffled = torch.tensor([4, 2, 2, 0, 1, 3, 0, 4])
    keep = first_per_index(shuffled)
    assert shuffled[keep].tolist() == [0, 1, 2, 3, 4] and keep.tolist() == [3, 4, 1, 5, 0]
