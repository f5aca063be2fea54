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

import logging
import math
import os

import torch
import torch._dynamo.config as dynamo_config

logger = logging.getLogger(__name__)

ATAN_ALPHA = 2.0  # spikingjelly's surrogate.ATan() default


def _forward(x: torch.Tensor, tau: float, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, N] -> spikes [T, N] in x's dtype and the charged membrane h [T, N] in float32 (kept for the
    backward). The membrane is float32 whatever x's dtype: it accumulates over T, and bf16's 8-bit
    mantissa would move threshold crossings; spikes are 0/1, exact in any dtype."""
    v = torch.zeros_like(x[0], dtype=torch.float32)
    spikes, charged = [], []
    for t in range(x.shape[0]):
        h = v - (v - 0.0) / tau + x[t].float()  # U[t] = λ·U[t-1] + I[t], as spikingjelly writes it (1 - 1/tau = λ)
        spike = (h >= threshold).to(torch.float32)
        v = spike * 0.0 + (1 - spike) * h  # hard reset to 0
        spikes.append(spike.to(x.dtype))
        charged.append(h)
    return torch.stack(spikes), torch.stack(charged)


def _backward(grad_spikes: torch.Tensor, h: torch.Tensor, tau: float, threshold: float,
              alpha: float) -> torch.Tensor:
    """BPTT through the T steps in float32: the ATan surrogate at h - threshold; the reset is detached.
    The gradient of the current comes back in grad_spikes' dtype (the dtype the current had)."""
    carry = torch.zeros_like(h[0])
    grads = []
    for t in range(h.shape[0] - 1, -1, -1):
        z = (h[t] - threshold) * (math.pi / 2 * alpha)
        surrogate = (alpha / 2) / (1 + z * z)
        reset_grad = 1 - (h[t] >= threshold).to(h.dtype)
        grad_h = grad_spikes[t].float() * surrogate + carry * reset_grad
        grads.append(grad_h.to(grad_spikes.dtype))
        carry = grad_h - grad_h / tau
    return torch.stack(grads[::-1])


_compiled = {}
_PLAIN = {"forward": _forward, "backward": _backward}


def _kernel(name: str):
    """The compiled forward or backward, compiled on first use (importing this module compiles nothing)."""
    if name not in _compiled:
        import torch._inductor.config as inductor

        if os.environ.get("TORCHINDUCTOR_VEC_ISA_OK") is None:
            # inductor otherwise builds and loads a probe library per vector ISA in every process (~2.5 s of
            # each trial's start); the ISAs it tries are already those /proc/cpuinfo lists
            inductor.cpp.vec_isa_ok = True
        _compiled[name] = torch.compile(_PLAIN[name], dynamic=True)
    return _compiled[name]


RECOMPILE_LIMIT = 64


def _call(name: str, *args):
    """Run the compiled kernel; where it cannot be compiled (e.g. no C++ compiler), say so once and run the
    same code uncompiled (the same numbers, spikingjelly's speed)."""
    # One kernel per T, dtype and rank/shape family of the layers' outputs (the reshaped current is a view,
    # guarded on its base): a reused sweep worker running trials of T 1-6 in bf16 and fp32 needs ~20, beyond
    # dynamo's default limit of 8, past which it runs the rest uncompiled. Set on every call: dynamo's config
    # is per thread, and Ray runs each trial of a reused worker in a new thread.
    if dynamo_config.recompile_limit < RECOMPILE_LIMIT:
        dynamo_config.recompile_limit = RECOMPILE_LIMIT
    try:
        return _kernel(name)(*args)
    except Exception as error:  # inductor raises many types (BackendCompilerFailed, CalledProcessError, ...)
        if _compiled.get(name) is _PLAIN[name]:
            raise
        logger.warning("slt: warning: the fused LIF could not be compiled (%s: %s); running it uncompiled",
                       type(error).__name__, str(error).splitlines()[0] if str(error) else "")
        _compiled.update(_PLAIN)
        return _PLAIN[name](*args)


class _FusedLIF(torch.autograd.Function):
    # The kernels see detached tensors with autocast off, so grad mode, requires_grad and an enclosing
    # bf16 autocast never change their guards (each change would be another compile; each dtype is one).
    @staticmethod
    def forward(ctx, x: torch.Tensor, tau: float, threshold: float) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            spikes, h = _call("forward", x.detach().reshape(x.shape[0], -1), tau, threshold)
        ctx.save_for_backward(h)
        ctx.dtype = x.dtype
        ctx.constants = (tau, threshold, ATAN_ALPHA)
        return spikes.view(x.shape)

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor):
        (h,) = ctx.saved_tensors
        with torch.autocast(h.device.type, enabled=False):
            grad = _call("backward", grad_spikes.detach().reshape(h.shape), h, *ctx.constants)
        return grad.view(grad_spikes.shape).to(ctx.dtype), None, None  # a no-op inside a bf16 model


def fused_lif(x: torch.Tensor, T: int, tau: float, threshold: float) -> torch.Tensor:
    """Spikes [T*B, ...] of a LIF starting from U = 0, for a current [T*B, ...] (float32 or bf16: the spikes
    and the current's gradient take its dtype, the membrane is float32); a
    channels-last [T*B, C, H, W] current gives channels-last spikes (the kernel runs in memory order)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        spikes = _FusedLIF.apply(x.permute(0, 2, 3, 1).unflatten(0, (T, -1)), tau, threshold)
        return spikes.flatten(0, 1).permute(0, 3, 1, 2)
    return _FusedLIF.apply(x.unflatten(0, (T, -1)), tau, threshold).flatten(0, 1)
