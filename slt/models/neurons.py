"""Activation units shared by every architecture: LIF for the SNN, ReLU for its ANN twin.

Models keep stateless layers on tensors with time folded into the batch, [T*B, ...]; a spiking
unit unfolds to [T, B, ...] for spikingjelly's multi-step LIF and folds back.
"""

import logging
from dataclasses import dataclass

import torch

# spikingjelly registers optional Triton kernels at import; on a CPU-only machine torch logs a warning per kernel.
logging.getLogger("torch._library.triton").setLevel(logging.ERROR)
from spikingjelly.activation_based import neuron, surrogate  # noqa: E402
from torch import nn  # noqa: E402

from slt.errors import InputError  # noqa: E402


def tau_from_decay(decay: float) -> float:
    """Membrane decay λ in U[t] = λ·U[t-1] + I[t]  ->  spikingjelly's tau (a Python float > 1)."""
    if not 0.0 < decay < 1.0:
        raise InputError("decay", f"{decay} is outside the allowed open interval (0, 1)")
    return float(1.0 / (1.0 - decay))


class LIF(nn.Module):
    """LIF with hard reset to 0, threshold 1: U[t] = λ·U[t-1] + I[t], spike when U >= threshold.

    Input and output are [T*B, ...]; the membrane runs over T steps in multi-step mode.
    """

    def __init__(self, T: int, decay: float, threshold: float = 1.0):
        super().__init__()
        self.T = T
        self.decay = decay
        self.node = neuron.LIFNode(
            tau=tau_from_decay(decay),
            decay_input=False,
            v_threshold=threshold,
            v_reset=0.0,
            surrogate_function=surrogate.ATan(),
            detach_reset=True,
            step_mode="m",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.node(x.unflatten(0, (self.T, -1))).flatten(0, 1)

    def extra_repr(self) -> str:
        return f"T={self.T}, decay={self.decay}"


@dataclass(frozen=True)
class Units:
    """The one spiking-unit factory a network is built from: `units()` makes the activation unit of
    a layer, a LIF (SNN: T steps, decay λ) or a ReLU (ANN twin, T = 1)."""

    spiking: bool
    T: int = 1
    decay: float = 0.5

    def __call__(self, threshold: float = 1.0) -> nn.Module:
        return LIF(self.T, self.decay, threshold) if self.spiking else nn.ReLU()
