"""A fused multi-step LIF for CPU: the T-step forward and its BPTT backward each compiled by
torch.compile (inductor) into one loop over the neurons, instead of spikingjelly's per-step tensor
operations (each a full pass over memory; the LIF is elementwise and memory-bound).

The arithmetic is spikingjelly 2.0's CPU LIF (spikingjelly/_ops/lif: decay_input=False, hard reset to
0, detach_reset=True, ATan surrogate), written out in the same order, so spikes and gradients are
bit-identical to `neuron.LIFNode` (tests/test_models.py compares them); spikingjelly stays the
reference and the fallback (`neuron_backend: spikingjelly`).

Shapes are compiled dynamically (one kernel pair for every layer and batch size; T is specialised):
the first call in a process compiles (tens of seconds cold, a few with inductor's on-disk cache).
"""

import math

import torch

ATAN_ALPHA = 2.0  # spikingjelly's surrogate.ATan() default


def _forward(x: torch.Tensor, tau: float, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, N] float32 -> spikes [T, N] and the charged membrane h [T, N] (kept for the backward)."""
    v = torch.zeros_like(x[0])
    spikes, charged = [], []
    for t in range(x.shape[0]):
        h = v - (v - 0.0) / tau + x[t]  # U[t] = λ·U[t-1] + I[t], as spikingjelly writes it (1 - 1/tau = λ)
        spike = (h >= threshold).to(torch.float32)
        v = spike * 0.0 + (1 - spike) * h  # hard reset to 0
        spikes.append(spike)
        charged.append(h)
    return torch.stack(spikes), torch.stack(charged)


def _backward(grad_spikes: torch.Tensor, h: torch.Tensor, tau: float, threshold: float,
              alpha: float) -> torch.Tensor:
    """BPTT through the T steps: the ATan surrogate at h - threshold; the reset is detached."""
    carry = torch.zeros_like(h[0])
    grads = []
    for t in range(h.shape[0] - 1, -1, -1):
        z = (h[t] - threshold) * (math.pi / 2 * alpha)
        surrogate = (alpha / 2) / (1 + z * z)
        reset_grad = 1 - (h[t] >= threshold).to(h.dtype)
        grad_h = grad_spikes[t] * surrogate + carry * reset_grad
        grads.append(grad_h)
        carry = grad_h - grad_h / tau
    return torch.stack(grads[::-1])


_compiled = {}


def _kernel(name: str):
    """The compiled forward or backward, compiled on first use (importing this module compiles nothing)."""
    if name not in _compiled:
        _compiled[name] = torch.compile({"forward": _forward, "backward": _backward}[name], dynamic=True)
    return _compiled[name]


class _FusedLIF(torch.autograd.Function):
    # The kernels see detached float32 tensors with autocast off, so grad mode, requires_grad and an
    # enclosing bf16 autocast never change their guards (each change would be another compile).
    @staticmethod
    def forward(ctx, x: torch.Tensor, tau: float, threshold: float) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            spikes, h = _kernel("forward")(x.detach().reshape(x.shape[0], -1), tau, threshold)
        ctx.save_for_backward(h)
        ctx.constants = (tau, threshold, ATAN_ALPHA)
        return spikes.view(x.shape)

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor):
        (h,) = ctx.saved_tensors
        with torch.autocast(h.device.type, enabled=False):
            grad = _kernel("backward")(grad_spikes.detach().reshape(h.shape).float(), h, *ctx.constants)
        return grad.view(grad_spikes.shape), None, None


def fused_lif(x: torch.Tensor, T: int, tau: float, threshold: float) -> torch.Tensor:
    """Spikes [T*B, ...] (float32) of a LIF starting from U = 0, for a float32 current [T*B, ...]; a
    channels-last [T*B, C, H, W] current gives channels-last spikes (the kernel runs in memory order)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        spikes = _FusedLIF.apply(x.permute(0, 2, 3, 1).unflatten(0, (T, -1)), tau, threshold)
        return spikes.flatten(0, 1).permute(0, 3, 1, 2)
    return _FusedLIF.apply(x.unflatten(0, (T, -1)), tau, threshold).flatten(0, 1)
