"""Patch-level sparsity, MultiSp's Stage 2 (DESIGN §3.4, Algorithm 1 of the paper).

After Stage 1 (PEPSp: a multi-prize ticket on the ConvPEP convolutions) the ConvPEP is frozen, and
every sample keeps only its ⌈(1 - q)·N⌉ tokens with the largest ConvPEP output magnitude: the sum of
|x| over time steps and channels, i.e. the spike count in the SNN and the L1 norm over channels in the
ANN (T = 1). The kept tokens are gathered (not masked to zero, which would save nothing and skew BN
statistics), in their original order; position information is already inside them (the relative
position conv runs before the selection), so blocks and head simply run on fewer tokens.
"""

import math

import torch
from torch import nn


def kept_tokens(n: int, q: float) -> int:
    """Tokens kept out of n when a fraction q is pruned: ⌈(1 - q)·n⌉ (at least 1 for q < 1)."""
    if not 0.0 <= q < 1.0:
        raise ValueError(f"q: {q} is outside [0, 1)")
    return math.ceil(round((1.0 - q) * n, 9))  # rounded first: (1 - 0.7)·10 is 3.0000000000000004 in floats


def token_scores(tokens: torch.Tensor, T: int) -> torch.Tensor:
    """Magnitude of every token of every sample, summed over time steps and channels: [T*B, N, D] -> [B, N]."""
    return tokens.unflatten(0, (T, -1)).abs().sum((0, 3))


class TopTokens(nn.Module):
    """Keep the ⌈(1 - q)·N⌉ highest-scoring tokens of each sample: [T*B, N, D] -> [T*B, L, D]."""

    def __init__(self, q: float, T: int):
        super().__init__()
        kept_tokens(1, q)  # validates q
        self.q, self.T = q, T

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        keep = kept_tokens(tokens.shape[1], self.q)
        index = token_scores(tokens, self.T).topk(keep, dim=1).indices.sort(dim=1).values  # [B, L], original order
        index = index.repeat(self.T, 1)  # the same tokens at every time step: [T*B, L]
        return tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))

    def extra_repr(self) -> str:
        return f"q={self.q}, T={self.T}"


def freeze_convpep(model: nn.Module) -> None:
    """Fix the Stage-1 ticket: no gradient into ConvPEP (scores, weights, BN) and BN statistics kept (eval)."""
    for parameter in model.convpep.parameters():
        parameter.requires_grad_(False)
        parameter.grad = None
    model.convpep_frozen = True
    model.train(model.training)


def start_patch_pruning(model: nn.Module, q: float) -> None:
    """Enter Stage 2: freeze the ConvPEP and keep the top ⌈(1 - q)·N⌉ tokens of each sample."""
    freeze_convpep(model)
    model.token_selector = TopTokens(q, model.T)
