"""Logits of a model over a loader: what evaluation during training, `eval` and calibration share."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from checkbox_dist.core import faults
from checkbox_dist.data.images import normalize


@torch.no_grad()
def collect_logits(model, loader, lookup, spec, accelerator=None, tta: bool = False):
    """(logits, labels) for every sample of `loader`, each counted once across processes."""
    model.eval()
    all_logits, all_labels = [], []
    for batch in loader:
        faults.point("eval")  # test-only fault hook (checkbox_dist/faults.py): a dict lookup
        images, labels, _ = lookup(batch)
        x = normalize(images, spec)
        context = accelerator.autocast() if accelerator is not None else torch.autocast("cpu", enabled=False)
        with context:
            logits = model(x).float()
            if tta:  # average probabilities over the horizontal mirror: widgets are near-symmetric
                logits = torch.log((F.softmax(logits, 1) + F.softmax(model(x.flip(-1)).float(), 1)) / 2)
        if accelerator is not None:
            logits, labels = accelerator.gather_for_metrics((logits, labels))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    model.train()
    return torch.cat(all_logits), torch.cat(all_labels)
