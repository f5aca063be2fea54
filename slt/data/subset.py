"""Take a small, class-balanced head of a split (for quick runs and scaled-down reproductions)."""

import torch

from slt.data.base import Split
from slt.errors import InputError


def stratified_head(split: Split, n: int, num_classes: int) -> Split:
    """The first n examples of `split`, balanced over classes, in their original order.

    Class c gets n // C examples, plus one for the first n % C classes; each class contributes its
    first examples in file order. Classes short of their quota are made up with the next unchosen
    examples in file order, so the result has exactly min(n, len(split)) rows.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError("subset", f"must be an integer >= 1 (number of examples to keep), got {n!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InputError("num_classes", f"must be an integer >= 1, got {num_classes!r}")
    total = len(split)
    if n >= total:
        return Split(split.inputs, split.labels)

    labels = split.labels
    chosen = torch.zeros(total, dtype=torch.bool, device=labels.device)
    base, extra = divmod(n, num_classes)
    for c in range(num_classes):
        quota = base + (1 if c < extra else 0)
        if quota:
            chosen[(labels == c).nonzero().squeeze(1)[:quota]] = True
    short = n - int(chosen.sum())
    if short:
        chosen[(~chosen).nonzero().squeeze(1)[:short]] = True
    keep = chosen.nonzero().squeeze(1)
    return Split(split.inputs[keep], labels[keep])
