"""Edge-popup supermasks and multi-prize (biprop) tickets on frozen random weights (DESIGN §3.3).

Each prunable conv/linear keeps its random weight frozen and learns a score per weight. The
forward pass keeps the top-k |scores| (k = round((1 - p)·n), exact per layer); the backward pass is
straight-through, so the scores receive dL/dm = (dL/dw_eff)·w, as in hidden-networks and biprop.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def kept_count(numel: int, p: float) -> int:
    """Weights kept when a fraction p is pruned: round((1 - p)·n), at least one."""
    return max(1, round((1.0 - p) * numel))


class TopKMask(torch.autograd.Function):
    """1 for the k largest entries of `magnitude` (exact count), 0 elsewhere; gradient passed straight through."""

    @staticmethod
    def forward(ctx, magnitude, k):
        mask = torch.zeros_like(magnitude)
        mask.view(-1)[magnitude.view(-1).topk(k, sorted=False).indices] = 1.0
        return mask

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class ThresholdMask(torch.autograd.Function):
    """1 where `magnitude` >= threshold; gradient passed straight through (global-threshold tickets)."""

    @staticmethod
    def forward(ctx, magnitude, threshold):
        return (magnitude >= threshold).to(magnitude.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class BinaryMaskedWeight(torch.autograd.Function):
    """sign(w)·α·m with α = mean |w| over the kept weights (a constant for the backward pass).

    The mask receives biprop's straight-through signal (dL/dw_eff)·w, the same as edge-popup's.
    """

    @staticmethod
    def forward(ctx, weight, mask):
        ctx.save_for_backward(weight)
        alpha = (weight.abs() * mask).sum() / mask.sum()
        return torch.sign(weight) * alpha * mask

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return None, grad * weight


class TicketLayer:
    """Mixin for conv/linear layers searched for a ticket; `effective_weight()` is what the layer uses.

    kind "supermask": w ⊙ m (edge-popup). kind "biprop": sign(w)·α·m with α = mean |w| over the kept
    weights (a constant for the backward pass). After `freeze_mask()` (fine-tuning) the mask is fixed
    and the kept weights train: w ⊙ m.
    """

    kind: str
    p: float
    threshold: float | None  # set by a global-threshold hook; None = exact top-k per layer

    def setup_ticket(self, kind: str, p: float) -> None:
        self.kind, self.p, self.threshold = kind, p, None
        self.weight.requires_grad_(False)
        self.scores = nn.Parameter(torch.empty_like(self.weight))
        nn.init.kaiming_uniform_(self.scores, a=math.sqrt(5))  # PyTorch's default conv init, as edge-popup
        self.register_buffer("frozen_mask", torch.zeros_like(self.weight))
        self.register_buffer("finetuning", torch.tensor(False))
        if self.bias is not None:  # tickets have no learned bias; fine-tuning may train it from zero
            nn.init.zeros_(self.bias)
            self.bias.requires_grad_(False)

    @property
    def k(self) -> int:
        return kept_count(self.weight.numel(), self.p)

    def mask(self) -> torch.Tensor:
        if self.finetuning:
            return self.frozen_mask
        magnitude = self.scores.abs()
        if self.threshold is not None:
            return ThresholdMask.apply(magnitude, self.threshold)
        return TopKMask.apply(magnitude, self.k)

    def effective_weight(self) -> torch.Tensor:
        mask = self.mask()
        if self.kind == "supermask" or self.finetuning:
            return self.weight * mask  # the mask's gradient is (dL/dw_eff)·w
        return BinaryMaskedWeight.apply(self.weight, mask)

    def freeze_mask(self) -> None:
        """Fine-tuning: fix the mask, start the kept weights from the ticket's values, train them."""
        with torch.no_grad():
            self.weight.copy_(self.effective_weight())
            self.frozen_mask.copy_(self.mask())
            self.finetuning.fill_(True)
        self.weight.requires_grad_(True)
        self.scores.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(True)


class TicketConv2d(TicketLayer, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


class TicketLinear(TicketLayer, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


def init_frozen_weight(weight: torch.Tensor, scheme: str) -> None:
    """signed_constant: sign(w)·sqrt(2/fan_in) (edge-popup's best); kaiming_normal: N(0, 2/fan_in)."""
    fan_in = weight[0].numel()
    std = math.sqrt(2.0 / fan_in)
    with torch.no_grad():
        if scheme == "signed_constant":
            weight.copy_(torch.sign(torch.randn_like(weight)) * std)
        elif scheme == "kaiming_normal":
            weight.normal_(0.0, std)
        else:
            raise ValueError(f"weight_init: unknown scheme {scheme!r}; allowed: signed_constant, kaiming_normal")
