"""Lottery tickets: turn any model of slt.models into a ticket, account for its sparsity and storage.

`make_ticket` replaces the model's conv/linear layers by ticket layers in place (no second copy of
any architecture): "supermask" for lt/slt, "biprop" for mplt/mpslt; mplt also swaps ReLU for sign.
With `only` the ticket is confined to one module (PEPSp: the transformer's ConvPEP); patch pruning
(MultiSp's Stage 2) lives in slt.tickets.patches.
"""

import torch
from torch import nn

from slt.tickets.binary import BinaryActivation
from slt.tickets.supermask import TicketConv2d, TicketLayer, TicketLinear, init_frozen_weight

PRUNABLE = (nn.Conv2d, nn.Linear)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def ticket_layers(model: nn.Module) -> dict[str, TicketLayer]:
    return {name: m for name, m in model.named_modules() if isinstance(m, TicketLayer)}


def _ticket_copy(layer: nn.Module, kind: str, p: float, weight_init: str) -> nn.Module:
    bias = layer.bias is not None
    if isinstance(layer, nn.Conv2d):
        new = TicketConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                           padding=layer.padding, dilation=layer.dilation, groups=layer.groups, bias=bias,
                           padding_mode=layer.padding_mode)
    else:
        new = TicketLinear(layer.in_features, layer.out_features, bias=bias)
    new = new.to(layer.weight.device)
    init_frozen_weight(new.weight, weight_init)
    new.setup_ticket(kind, p)
    return new


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _within(name: str, only: str | None) -> bool:
    """Whether module `name` lies in the module `only` (None: the whole model)."""
    return only is None or name == only or name.startswith(only + ".")


def make_ticket(model: nn.Module, kind: str, p: float, *, weight_init: str = "kaiming_normal",
                dense_first: bool = False, dense_last: bool = False, global_threshold: bool = False,
                binary_activations: bool = False, only: str | None = None) -> nn.Module:
    """Turn `model` into a ticket in place and return it.

    kind: "supermask" (edge-popup) or "biprop" (multi-prize). p: fraction pruned per layer.
    dense_first/dense_last keep the model's first conv / last linear dense and trained.
    global_threshold: one |score| threshold over all ticket layers (kept fraction p overall).
    binary_activations: ReLU -> sign with a Bi-Real gradient (ANN multi-prize); the first layer
    still sees real pixels. only: confine the ticket to the module of that name (its conv/linear
    layers, the BN affine it freezes, the activations it binarises); the rest trains normally.
    """
    if kind not in ("supermask", "biprop"):
        raise ValueError(f"kind: unknown ticket kind {kind!r}; allowed: supermask, biprop")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p: {p} is outside [0, 1)")
    prunable = [name for name, m in model.named_modules() if isinstance(m, PRUNABLE)]
    keep_dense = set()
    if dense_first:
        keep_dense.add(prunable[0])
    if dense_last:
        keep_dense.add(prunable[-1])
    for name in prunable:
        if name not in keep_dense and _within(name, only):
            _replace(model, name, _ticket_copy(model.get_submodule(name), kind, p, weight_init))
    for name, m in model.named_modules():  # no learned BN affine while searching: gamma = 1, beta = 0, frozen
        if isinstance(m, BATCHNORMS) and m.affine and _within(name, only):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)
    if binary_activations:
        for name, m in list(model.named_modules()):
            if isinstance(m, nn.ReLU) and _within(name, only):
                _replace(model, name, BinaryActivation())
    if global_threshold:
        model.register_forward_pre_hook(_GlobalThreshold(p))
    return model


class _GlobalThreshold:
    """Forward pre-hook: one |score| threshold keeping round((1 - p)·N) of all N ticket weights."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, model, inputs):
        layers = [m for m in ticket_layers(model).values() if not m.finetuning]
        if not layers:
            return
        magnitudes = torch.cat([m.scores.detach().abs().flatten() for m in layers])
        keep = max(1, round((1.0 - self.p) * magnitudes.numel()))
        threshold = magnitudes.topk(keep, sorted=False).values.min()
        for m in layers:
            m.threshold = threshold


def start_finetune(model: nn.Module) -> None:
    """Freeze every ticket's mask, train the kept weights, biases and BN affine parameters."""
    for layer in ticket_layers(model).values():
        layer.freeze_mask()
    for m in model.modules():
        if isinstance(m, BATCHNORMS) and m.affine:
            m.weight.requires_grad_(True)
            m.bias.requires_grad_(True)


@torch.no_grad()
def pruned_fraction(model: nn.Module) -> float:
    """Fraction of the ticket layers' weights that their masks prune (0.0 for a dense model)."""
    layers = ticket_layers(model).values()
    total = sum(layer.weight.numel() for layer in layers)
    return 1.0 - sum(int(layer.mask().sum()) for layer in layers) / total if total else 0.0


@torch.no_grad()
def sparsity_report(model: nn.Module) -> dict:
    """Achieved sparsity per ticket layer and overall, distinct non-zero magnitudes, storage size.

    Storage (bits): the dense model stores every parameter and buffer as float32. The ticket stores,
    per ticket layer, a 1-bit mask per weight plus the kept values: 1 sign bit each and one float32
    scale when all kept weights share one magnitude (multi-prize, or supermask over signed-constant
    weights), else float32 each; all other parameters and buffers as float32.
    """
    layers = {}
    ticket_bits = 0
    total, pruned_total = 0, 0
    ticket_param_ids = set()
    for name, layer in ticket_layers(model).items():
        weight = layer.effective_weight()
        kept_mask = layer.mask() > 0
        kept = int(kept_mask.sum())
        n = weight.numel()
        magnitudes = weight[kept_mask].abs().unique()
        layers[name] = {"weights": n, "kept": kept, "pruned_fraction": 1.0 - kept / n,
                        "distinct_magnitudes": int(magnitudes.numel())}
        ticket_bits += n + (kept + 32 if magnitudes.numel() == 1 else 32 * kept)
        total += n
        pruned_total += n - kept
        ticket_param_ids |= {id(layer.weight), id(layer.scores), id(layer.frozen_mask)}
    other = sum(t.numel() for t in list(model.parameters()) + list(model.buffers())
                if id(t) not in ticket_param_ids and t.dtype.is_floating_point)
    dense_bits = 32 * (other + total)
    ticket_bits += 32 * other
    return {
        "layers": layers,
        "pruned_fraction": pruned_total / total if total else 0.0,
        "ticket_weights": total,
        "storage_bytes_dense": dense_bits // 8,
        "storage_bytes_ticket": ticket_bits // 8,
        "storage_ratio": ticket_bits / dense_bits,
    }


__all__ = ["BinaryActivation", "TicketConv2d", "TicketLayer", "TicketLinear", "make_ticket", "pruned_fraction", "sparsity_report",
           "start_finetune", "ticket_layers"]
