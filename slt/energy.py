"""Operation counts and energy per image (DESIGN §3.5, the paper's convention after Spikformer).

For every conv/linear layer l: MACs_l per image per time step (from its shapes) and fr_l, the
firing rate of the spikes entering it (fraction of ones per element per time step, measured on
a batch). Then
    E_ANN = e_mac · Σ_l MACs_l
    E_SNN = e_mac · P · MACs_first + e_ac · Σ_{l ≥ 2} fr_l · T · MACs_l    (paper convention)
where P, the first layer's `passes` per image, is 1 for static images (direct encoding runs the first
conv once and feeds its current at every step) and T for event input [T, B, 2, H, W] (T different
frames, so the first conv runs T times). The ANN twin (T = 1) sums the event frames into one image
(slt.models.encoding.encode), so its first layer runs once. P is measured (samples the layer
processed / batch), and every row reports it. A sparsity-aware variant scales each layer's
operations by its kept-weight fraction.
Layers fed by non-binary tensors (the first layer's pixels, avg-pooled spikes, the transformer's
residual stream of summed spikes) use the mean input value as fr and are flagged `binary_input: false`.

Attention products (the transformer's MatMul modules, rows "blocks.i.attn.qk" and "blocks.i.attn.av")
count like layers whose weights are the other operand: Q·Kᵀ has L·L·D MACs per image per time step
(over all heads), attn·V has L·L·D too. In the SNN the spike operand sets fr: Q for Q·Kᵀ (K plays the
weights; both are spikes, and Q's rate is the one that gates the accumulates of a row) and V for
attn·V (the attention map is integer-valued, V is binary). In the ANN both count as MACs; the softmax
is not counted. After patch pruning the blocks see L < N tokens, so their rows shrink (linear layers
with L, attention with L²) while the ConvPEP rows stay.

spikingjelly's op_counter (MACCounter + SynOpCounter) is run on the same batch as an independent
cross-check. Where its conventions differ from the paper's:
- it counts convolutions on spikes exactly (spikes x valid kernel positions x C_out), so zero
  padding makes conv SynOps a few percent lower than fr·T·MACs (linear layers agree exactly);
- it counts layers fed by non-binary tensors as MACs at 4.6 pJ (avg-pooled inputs, spike sums such
  as the transformer's residual stream, which feeds every Q/K/V and MLP input layer);
- for a product of two spike tensors (Q·Kᵀ) it counts only coinciding ones (the sum of the
  product), fewer than fr_Q·T·MACs; attn·V it counts exactly as we do (V's spikes x L);
- it does not skip zero (pruned) weights, so it matches the dense-connectivity figure;
- it would count a first conv repeated over T as T MAC passes; our direct encoding runs the first
  conv once per image, so both count it once; on event input the first conv runs on T different
  frames, so both count it T times (op_counter as MACs only if the frames are non-binary: event
  counts of 0/1 alone would be counted as SynOps).
"""

import torch
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.op_counter import DispatchCounterMode, MACCounter, SynOpCounter
from torch import nn

from slt.models.spikformer import MatMul
from slt.tickets import ticket_layers

E_MAC_PJ = 4.6  # 45 nm, 32-bit float multiply-accumulate (Horowitz 2014), as in the paper
E_AC_PJ = 0.9  # 32-bit float accumulate

COUNTED_LAYERS = (nn.Conv2d, nn.Linear, MatMul)
PJ_PER_MJ = 1e9


def layer_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    """Multiply-accumulates of one conv/linear layer or attention product per sample of `output`.

    Models fold time into the batch, so one sample is one image at one time step.
    """
    if isinstance(module, nn.Conv2d):
        per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
    elif isinstance(module, MatMul):
        per_output = inputs[0].shape[-1]
    else:
        per_output = module.in_features
    return per_output * (output.numel() // output.shape[0])


class _LayerProbe:
    """Forward hooks on every conv/linear/MatMul: MACs per sample, samples run, input sum and count, binary flag."""

    def __init__(self, model: nn.Module):
        self.stats: dict[str, dict] = {}
        self.handles = [module.register_forward_hook(self._hook(name))
                        for name, module in model.named_modules() if isinstance(module, COUNTED_LAYERS)]

    def _hook(self, name):
        def hook(module, inputs, output):
            x = inputs[getattr(module, "spike_operand", 0)].detach()
            entry = self.stats.setdefault(name, {"macs": layer_macs(module, inputs, output), "sum": 0.0, "count": 0,
                                                 "samples": 0, "binary": True, "order": len(self.stats)})
            entry["samples"] += output.shape[0]  # images x time steps this layer ran on (time folded into batch)
            entry["sum"] += float(x.sum(dtype=torch.float64))
            entry["count"] += x.numel()
            entry["binary"] &= bool(((x == 0) | (x == 1)).all())
        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _kept_fractions(model: nn.Module) -> dict[str, float]:
    return {name: float(layer.mask().mean()) for name, layer in ticket_layers(model).items()}


@torch.no_grad()
def count_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """ANN MACs per image per time step of every conv/linear layer, keyed by module name."""
    probe = _LayerProbe(model)
    was_training = model.training
    model.eval()
    try:
        model(example)
    finally:
        model.train(was_training)
        functional.reset_net(model)
        probe.remove()
    return {name: entry["macs"] for name, entry in probe.stats.items()}


@torch.no_grad()
def measure_energy(model: nn.Module, inputs: torch.Tensor, *, spiking: bool, T: int, e_mac_pj: float = E_MAC_PJ,
                   e_ac_pj: float = E_AC_PJ, opcounter: bool = True) -> dict:
    """Energy per image of `model` on the batch `inputs` (as the model takes them), in millijoules.

    Returns totals (energy_mj, energy_mj_sparse, energy_mj_opcounter and its relative difference,
    macs, sops, mean_input_spike_rate) and `layers`, a per-layer table. `macs` is per image per time
    step; `passes` is how many times per image the layer ran (T, or 1 for the first layer on static
    images and for every layer of the ANN twin); MAC rows are charged e_mac · macs · passes.
    """
    batch = inputs.shape[1] if inputs.dim() == 5 else inputs.shape[0]
    was_training = model.training
    model.eval()
    probe = _LayerProbe(model)
    try:
        model(inputs)
    finally:
        functional.reset_net(model)
        probe.remove()
    kept = _kept_fractions(model)
    layers = []
    for index, (name, entry) in enumerate(sorted(probe.stats.items(), key=lambda item: item[1]["order"])):
        first = index == 0
        macs = entry["macs"]
        keep = kept.get(name, 1.0)
        passes = entry["samples"] // batch
        row = {"layer": name, "macs": macs, "passes": passes, "kept_fraction": keep, "binary_input": entry["binary"]}
        if not spiking or first:  # ANN, or real-valued input (once per static image, T times on event frames): MACs
            row.update(firing_rate=None, sops=0.0, energy_pj=e_mac_pj * macs * passes)
        else:
            rate = entry["sum"] / entry["count"]
            sops = rate * T * macs
            row.update(firing_rate=rate, sops=sops, energy_pj=e_ac_pj * sops)
        row["energy_pj_sparse"] = row["energy_pj"] * keep
        layers.append(row)
    totals = {
        "spiking": spiking,
        "T": T if spiking else 1,
        "macs": sum(r["macs"] for r in layers),
        "sops": sum(r["sops"] for r in layers),
        "mean_input_spike_rate": _mean_input_spike_rate(layers) if spiking else None,
        "energy_mj": sum(r["energy_pj"] for r in layers) / PJ_PER_MJ,
        "energy_mj_sparse": sum(r["energy_pj_sparse"] for r in layers) / PJ_PER_MJ,
        "e_mac_pj": e_mac_pj,
        "e_ac_pj": e_ac_pj,
    }
    if opcounter:
        totals.update(opcounter_energy(model, inputs, batch, e_mac_pj=e_mac_pj, e_ac_pj=e_ac_pj))
        totals["opcounter_relative_difference"] = (totals["energy_mj_opcounter"] - totals["energy_mj"]) / \
            totals["energy_mj"]
    model.train(was_training)
    return {**totals, "layers": layers}


def _mean_input_spike_rate(layers: list[dict]) -> float | None:
    """Mean over the layers fed by spikes (binary inputs) of the spike rate entering each; sums of spikes are not
    rates. Not the training metrics' mean_firing_rate, which averages the LIF units' output rates."""
    rates = [r["firing_rate"] for r in layers if r["firing_rate"] is not None and r["binary_input"]]
    return sum(rates) / len(rates) if rates else None


@torch.no_grad()
def opcounter_energy(model: nn.Module, inputs: torch.Tensor, batch: int, *, e_mac_pj: float = E_MAC_PJ,
                     e_ac_pj: float = E_AC_PJ) -> dict:
    """spikingjelly 2.0's MACCounter + SynOpCounter on the same batch, in mJ per image (BN ignored)."""
    ignore = [nn.BatchNorm1d, nn.BatchNorm2d]
    macs, synops = MACCounter(extra_ignore_modules=ignore), SynOpCounter(extra_ignore_modules=ignore)
    was_training = model.training
    model.eval()
    try:
        with DispatchCounterMode([macs, synops]):
            model(inputs)
    finally:
        model.train(was_training)
        functional.reset_net(model)
    mac_total, synop_total = macs.get_total() / batch, synops.get_total() / batch
    return {"opcounter_macs": mac_total, "opcounter_synops": synop_total,
            "energy_mj_opcounter": (e_mac_pj * mac_total + e_ac_pj * synop_total) / PJ_PER_MJ}
