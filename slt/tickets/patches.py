"""Patch-level sparsity, MultiSp's Stage 2 (DESIGN §3.4, Algorithm 1 of the paper).

After Stage 1 (PEPSp: a multi-prize ticket on the ConvPEP convolutions) the ConvPEP is frozen, and
every sample keeps only its ⌈(1 - q)·N⌉ most active tokens. A token's score is the number of active
units feeding it, summed over time steps and channels: the active stage-4 units f plus the active
relative-position-conv units rpe(f), where a unit is active when its output is > 0 (a LIF spike, +1
of a sign unit, a positive ReLU output). Both twins thus rank tokens by how many of their binary
units are on; the L1 norm of the sum x = rpe(f) + f would not: with sign units it counts the
channels where the two units agree. The counts per token and time step come from the model
(`active_units` in slt.models.spikformer; ConvPEP computes them only when the selector asks).
Ties go to the lower token index (stable sort), the kept tokens stay in their original order and
are the same at every time step. They are gathered (not masked to zero, which would save nothing
and skew BN statistics); position information is already inside them (the relative position conv
runs before the selection), so blocks and head simply run on fewer tokens.
"""

import math

import torch
from torch import nn


def kept_tokens(n: int, q: float) -> int:
    """Tokens kept out of n when a fraction q is pruned: ⌈(1 - q)·n⌉ (at least 1 for q < 1)."""
    if not 0.0 <= q < 1.0:
        raise ValueError(f"q: {q} is outside [0, 1)")
    return math.ceil(round((1.0 - q) * n, 9))  # rounded first: (1 - 0.7)·10 is 3.0000000000000004 in floats


def token_scores(activity: torch.Tensor, T: int) -> torch.Tensor:
    """Score of every token of every sample: active units per token and time step [T*B, N] -> [B, N].

    `activity` is ConvPEP's count of active units (output > 0) per token and step; the score sums it over
    the T steps.
    """
    # active = output > 0, not |x|: spikes {0, 1} and sign units {-1, +1} then both count how many units are on
    return activity.unflatten(0, (T, -1)).sum(0)


def top_token_index(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices [B, keep] of the `keep` highest scores per row, ties to the lower index, in ascending order."""
    ranked = scores.sort(dim=1, descending=True, stable=True).indices  # stable: equal scores keep index order
    return ranked[:, :keep].sort(dim=1).values


class TopTokens(nn.Module):
    """Keep the ⌈(1 - q)·N⌉ highest-scoring tokens of each sample: [T*B, N, D] -> [T*B, L, D].

    Called as selector(tokens, activity) by Spikformer (wants_activity), activity [T*B, N] from ConvPEP.
    """

    wants_activity = True

    def __init__(self, q: float, T: int):
        super().__init__()
        kept_tokens(1, q)  # validates q
        self.q, self.T = q, T

    def forward(self, tokens: torch.Tensor, activity: torch.Tensor) -> torch.Tensor:
        keep = kept_tokens(tokens.shape[1], self.q)
        index = top_token_index(token_scores(activity, self.T), keep)  # [B, L], original order
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
