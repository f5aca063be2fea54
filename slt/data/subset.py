"""Class-balanced selections of a split: a small head (quick runs, scaled-down reproductions) and a
seeded, stratified hold-out (the test split of digits, the validation split of every dataset)."""

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


def stratified_mask(labels: torch.Tensor, num_classes: int, seed: int, fraction: float, *,
                    at_least_one: bool = False) -> torch.Tensor:
    """Boolean mask of held-out rows: round(count * fraction) random rows of each class, seeded.

    at_least_one: every class with two or more rows gives at least one (so a small subset still has
    a validation image of every class) and keeps at least one.
    """
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(labels.shape[0], dtype=torch.bool)
    for c in range(num_classes):
        idx = (labels.cpu() == c).nonzero().squeeze(1)
        k = int(round(idx.numel() * fraction))
        if at_least_one and idx.numel() >= 2:
            k = min(max(k, 1), idx.numel() - 1)
        mask[idx[torch.randperm(idx.numel(), generator=gen)[:k]]] = True
    return mask


def split_off(split: Split, fraction: float, num_classes: int, seed: int) -> tuple[Split, Split]:
    """(rest, held out): a stratified, seeded `fraction` of `split` held out, both in their original order."""
    held = stratified_mask(split.labels, num_classes, seed, fraction, at_least_one=True).to(split.labels.device)
    if not held.any() or held.all():
        raise InputError("val_fraction", f"{fraction:g} of {len(split)} training examples leaves no validation "
                                         "or no training example; allowed: a number in (0, 1) and more data")
    return Split(split.inputs[~held], split.labels[~held]), Split(split.inputs[held], split.labels[held])
