"""Logits of a model over a loader: what evaluation during training, `eval` and calibration share."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from checkbox_dist.core import faults
from checkbox_dist.data.images import normalize


@torch.no_grad()
def collect_logits(model, loader, lookup, spec, accelerator=None, tta: bool = False):
    """(logits, labels) for every sample of `loader`, each counted once across processes.

    With an accelerator, every process's rows are gathered with their sample indices and each index is kept
    once, in index order (`first_per_index`): Accelerate pads the processes' last batches with repeats of the
    first samples, and `gather_for_metrics` drops them only when the calling thread saw the loader's end, which
    on XLA its prefetching thread sees instead (Accelerate issue 480)."""
    model.eval()
    all_logits, all_labels, all_indices = [], [], []
    for batch in loader:
        faults.point("eval")  # test-only fault hook (checkbox_dist/faults.py): a dict lookup
        images, labels, indices = lookup(batch)
        x = normalize(images, spec)
        context = accelerator.autocast() if accelerator is not None else torch.autocast("cpu", enabled=False)
        with context:
            logits = model(x).float()
            if tta:  # average probabilities over the horizontal mirror: widgets are near-symmetric
                logits = torch.log((F.softmax(logits, 1) + F.softmax(model(x.flip(-1)).float(), 1)) / 2)
        if accelerator is not None:
            logits, labels, indices = accelerator.gather((logits, labels, indices.to(labels.device)))
            all_indices.append(indices.cpu())
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    model.train()
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    if accelerator is None:
        return logits, labels
    keep = first_per_index(torch.cat(all_indices))
    return logits[keep], labels[keep]


def first_per_index(indices: torch.Tensor) -> torch.Tensor:
    """Positions of the first occurrence of each distinct value of `indices`, ordered by that value."""
    order = torch.sort(indices, stable=True).indices
    ranked = indices[order]
    first = torch.ones_like(ranked, dtype=torch.bool)
    first[1:] = ranked[1:] != ranked[:-1]
    return order[first]
