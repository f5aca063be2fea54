"""Activation units shared by every architecture: LIF for the SNN, ReLU for its ANN twin.

Models keep stateless layers on tensors with time folded into the batch, [T*B, ...]; a spiking
unit unfolds to [T, B, ...] for spikingjelly's multi-step LIF and folds back.
"""

import logging
from contextlib import contextmanager
from dataclasses import dataclass

import torch

# spikingjelly registers optional Triton kernels at import; on a CPU-only machine torch logs a warning per kernel.
logging.getLogger("torch._library.triton").setLevel(logging.ERROR)
from spikingjelly.activation_based import neuron, surrogate  # noqa: E402
from torch import nn  # noqa: E402

from slt.errors import InputError  # noqa: E402
from slt.models.fused_lif import fused_lif  # noqa: E402


def tau_from_decay(decay: float) -> float:
    """Membrane decay λ in U[t] = λ·U[t-1] + I[t]  ->  spikingjelly's tau (a Python float > 1)."""
    if not 0.0 < decay < 1.0:
        raise InputError("decay", f"{decay} is outside the allowed open interval (0, 1)")
    return float(1.0 / (1.0 - decay))


NEURON_BACKENDS = ("fused", "spikingjelly")


class LIF(nn.Module):
    """LIF with hard reset to 0, threshold 1: U[t] = λ·U[t-1] + I[t], spike when U >= threshold.

    Input and output are [T*B, ...]; the membrane starts at 0 and runs over the T steps of each call
    (multi-step). backend "fused": slt.models.fused_lif (compiled, bit-identical); "spikingjelly": its
    LIFNode (the reference; CUDA kernels on GPUs).
    """

    def __init__(self, T: int, decay: float, threshold: float = 1.0, backend: str = "spikingjelly"):
        super().__init__()
        if backend not in NEURON_BACKENDS:
            raise InputError("neuron_backend", f"{backend!r}; allowed: {', '.join(NEURON_BACKENDS)}")
        self.T = T
        self.decay = decay
        self.threshold = threshold
        self.backend = backend
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
        # float32 membrane under bf16 autocast: U accumulates over T, and bf16's 8-bit mantissa would move
        # threshold crossings. The fused LIF reads a bf16 current and writes bf16 spikes (0/1, exact) itself,
        # with no float32 copies in between; spikingjelly keeps the state in its input's dtype, so it gets float32.
        if self.backend == "fused":
            return fused_lif(x, self.T, self.node.tau, self.threshold)
        return self.node(x.float().unflatten(0, (self.T, -1))).flatten(0, 1)

    def extra_repr(self) -> str:
        return f"T={self.T}, decay={self.decay}, backend={self.backend}"


def set_neuron_backend(model: nn.Module, backend: str) -> None:
    """Switch every LIF of `model` to `backend` (NEURON_BACKENDS): the same arithmetic, so at any moment."""
    if backend not in NEURON_BACKENDS:
        raise InputError("neuron_backend", f"{backend!r}; allowed: {', '.join(NEURON_BACKENDS)}")
    for module in model.modules():
        if isinstance(module, LIF):
            module.backend = backend


@contextmanager
def neuron_backend(model: nn.Module, backend: str):
    """Every LIF of `model` runs `backend` inside the block, and its own backend again after it."""
    lifs = [module for module in model.modules() if isinstance(module, LIF)]
    before = [lif.backend for lif in lifs]
    set_neuron_backend(model, backend)
    try:
        yield
    finally:
        for lif, backend_before in zip(lifs, before):
            lif.backend = backend_before


@dataclass(frozen=True)
class Units:
    """The one spiking-unit factory a network is built from: `units()` makes the activation unit of
    a layer, a LIF (SNN: T steps, decay λ) or a ReLU (ANN twin, T = 1)."""

    spiking: bool
    T: int = 1
    decay: float = 0.5
    backend: str = "spikingjelly"  # of the LIF: NEURON_BACKENDS

    def __call__(self, threshold: float = 1.0) -> nn.Module:
        return LIF(self.T, self.decay, threshold, self.backend) if self.spiking else nn.ReLU()
