"""Input encoding and output decoding shared by every architecture (DESIGN §3.1)."""

import torch
from torch import nn


def encode(stem: nn.Module, x: torch.Tensor, T: int) -> torch.Tensor:
    """Run the first conv+BN (`stem`) and return currents folded as [T*B, ...].

    Static images [B, C, H, W] use direct encoding: the stem runs once and the same current is
    fed at every time step (identical to running it T times, at 1/T of the cost).
    Event frames [T, B, C, H, W] run the stem on every frame; with T == 1 (the ANN twin) all
    frames are integrated into one image first.
    """
    if x.dim() == 5:
        if T == 1:
            x = x.sum(0, keepdim=True)
        elif x.shape[0] != T:
            raise ValueError(f"event input has {x.shape[0]} frames but the model runs T={T} steps")
        return stem(x.flatten(0, 1))
    current = stem(x)
    return current.repeat(T, *([1] * (current.dim() - 1)))


def decode(logits: torch.Tensor, T: int) -> torch.Tensor:
    """Mean of the classifier output over the T time steps: [T*B, K] -> [B, K]."""
    return logits.unflatten(0, (T, -1)).mean(0)
