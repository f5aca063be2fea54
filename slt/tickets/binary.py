"""Binary activations for the ANN multi-prize ticket: sign forward, Bi-Real approximate-sign backward."""

import torch
from torch import nn


class BiRealSign(torch.autograd.Function):
    """sign(x) in {-1, +1} (0 maps to +1); gradient 2 - 2|x| for |x| < 1, else 0 (Liu et al., Bi-Real Net)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (2.0 - 2.0 * x.abs()).clamp(min=0.0)


class BinaryActivation(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return BiRealSign.apply(x)
