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

Effective operations (NeuroBench's effective MACs / ACs), beside the paper's convention: every
conv/linear layer's op applied to the non-zero indicator of its input and of its (effective, i.e.
masked or binarised) weight, summed over the batch, counts exactly the multiply-accumulates that touch
a non-zero input and a non-zero weight (zero padding, silent neurons and pruned weights skipped). A layer
fed by spikes charges them as accumulates (e_ac), one fed by real values (pixels, summed spikes, an ANN's
activations) as MACs (e_mac): `energy_mj_effective`. For an attention product both operands play the
indicator roles.

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
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.op_counter import DispatchCounterMode, MACCounter, SynOpCounter
from torch import nn

from slt.energy_table import MEMORY_AWARE_TABLE
from slt.models.neurons import LIF, neuron_backend
from slt.models.spikformer import MatMul
from slt.tickets import ticket_layers
from slt.tickets.supermask import TicketLayer

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


def effective_ops(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> float:
    """Multiply-accumulates of one call of `module` with a non-zero input and a non-zero weight, summed over
    the call's samples: its own op on the non-zero indicators (exact integers, far below 2^24 per output)."""
    def nonzero(t: torch.Tensor) -> torch.Tensor:
        return (t.detach() != 0).to(torch.float32)

    if isinstance(module, MatMul):
        return float((nonzero(inputs[0]) @ nonzero(inputs[1])).sum(dtype=torch.float64))
    weight = nonzero(module.effective_weight() if isinstance(module, TicketLayer) else module.weight)
    if isinstance(module, nn.Conv2d):
        out = F.conv2d(nonzero(inputs[0]), weight, None, module.stride, module.padding, module.dilation, module.groups)
    else:
        out = F.linear(nonzero(inputs[0]), weight)
    return float(out.sum(dtype=torch.float64))


def _weight_count(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Entries of the operand a layer reads per input event: its weight, or an attention product's other operand."""
    if isinstance(module, MatMul):
        other = inputs[1 - module.spike_operand]
        return other.numel() // other.shape[0]
    return module.weight.numel()


class _LayerProbe:
    """Forward hooks on every conv/linear/MatMul: MACs per sample, samples run, input sum and count, binary flag,
    effective operations (with `effective`)."""

    def __init__(self, model: nn.Module, effective: bool = False):
        self.stats: dict[str, dict] = {}
        self.effective = effective
        self.handles = [module.register_forward_hook(self._hook(name))
                        for name, module in model.named_modules() if isinstance(module, COUNTED_LAYERS)]

    def _hook(self, name):
        def hook(module, inputs, output):
            x = inputs[getattr(module, "spike_operand", 0)].detach()
            if name not in self.stats:  # shapes on the first call (a layer may run several times per forward)
                self.stats[name] = {"macs": layer_macs(module, inputs, output), "sum": 0.0, "count": 0, "samples": 0,
                                    "binary": True, "effective": 0.0, "outputs": output.numel() // output.shape[0],
                                    "inputs": x.numel() // x.shape[0], "weights": _weight_count(module, inputs),
                                    "conv": isinstance(module, nn.Conv2d), "order": len(self.stats)}
            entry = self.stats[name]
            entry["samples"] += output.shape[0]  # images x time steps this layer ran on (time folded into batch)
            entry["sum"] += float(x.sum(dtype=torch.float64))
            entry["count"] += x.numel()
            entry["binary"] &= bool(((x == 0) | (x == 1)).all())
            if self.effective:
                entry["effective"] += effective_ops(module, inputs)
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
                   e_ac_pj: float = E_AC_PJ, opcounter: bool = True, table: dict | None = None) -> dict:
    """Energy per image of `model` on the batch `inputs` (as the model takes them), in millijoules.

    Returns totals (energy_mj, energy_mj_sparse, energy_mj_effective, energy_mj_opcounter and its relative
    difference, macs, sops, effective_acs, effective_macs, mean_input_spike_rate) and `layers`, a per-layer
    table. `macs` is per image per time step; `passes` is how many times per image the layer ran (T, or 1
    for the first layer on static images and for every layer of the ANN twin); MAC rows are charged
    e_mac · macs · passes. `effective_ops` is per image over all passes, charged e_ac where the layer's
    input is spikes in an SNN (`effective_kind` "AC"), else e_mac ("MAC").
    """
    batch = inputs.shape[1] if inputs.dim() == 5 else inputs.shape[0]
    was_training = model.training
    model.eval()
    probe = _LayerProbe(model, effective=True)
    steps: dict[str, list[int]] = {}  # LIF layer -> [neuron-steps over the batch, neurons per step]

    def count(name):
        def hook(module, args, out):  # out is [T*B, ...]: every element is one neuron at one step
            steps.setdefault(name, [0, out.numel() // out.shape[0]])[0] += out.numel()
        return hook

    lif_hooks = [m.register_forward_hook(count(name)) for name, m in model.named_modules() if isinstance(m, LIF)]
    try:
        model(inputs)
    finally:
        functional.reset_net(model)
        probe.remove()
        for handle in lif_hooks:
            handle.remove()
    kept = _kept_fractions(model)
    table = table or MEMORY_AWARE_TABLE
    neurons = [neuron_terms(name, total / batch, per_step, table) for name, (total, per_step) in steps.items()]
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
        accumulates = spiking and not first and entry["binary"]
        row.update(effective_ops=entry["effective"] / batch, effective_kind="AC" if accumulates else "MAC")
        row["energy_pj_effective"] = (e_ac_pj if accumulates else e_mac_pj) * row["effective_ops"]
        row.update(memory_aware_terms(entry, batch, passes, accumulates, T, table))
        if spiking:  # the same layer in the equal-architecture ANN: formal, one pass
            row["formal_twin_pj"] = memory_aware_terms(entry, batch, 1, False, 1, table)["memory_aware_pj"]
        layers.append(row)
    totals = {
        "spiking": spiking,
        "T": T if spiking else 1,
        "macs": sum(r["macs"] for r in layers),
        "sops": sum(r["sops"] for r in layers),
        "mean_input_spike_rate": _mean_input_spike_rate(layers) if spiking else None,
        "energy_mj": sum(r["energy_pj"] for r in layers) / PJ_PER_MJ,
        "energy_mj_sparse": sum(r["energy_pj_sparse"] for r in layers) / PJ_PER_MJ,
        "effective_acs": sum(r["effective_ops"] for r in layers if r["effective_kind"] == "AC"),
        "effective_macs": sum(r["effective_ops"] for r in layers if r["effective_kind"] == "MAC"),
        "energy_mj_effective": sum(r["energy_pj_effective"] for r in layers) / PJ_PER_MJ,
        **memory_aware_totals(layers, neurons, spiking),
        "e_mac_pj": e_mac_pj,
        "e_ac_pj": e_ac_pj,
    }
    if opcounter:
        totals.update(opcounter_energy(model, inputs, batch, e_mac_pj=e_mac_pj, e_ac_pj=e_ac_pj))
        totals["opcounter_relative_difference"] = (totals["energy_mj_opcounter"] - totals["energy_mj"]) / \
            totals["energy_mj"]
    model.train(was_training)
    return {**totals, "layers": layers, "neurons": neurons}


def sram_pj(table: dict, elements: int, bits: int) -> float:
    """Energy of one access to a memory holding `elements` values of `bits` bits."""
    return table["sram_pj_per_bit"] * elements * bits + table["sram_pj_base"]


def memory_aware_terms(entry: dict, batch: int, passes: int, accumulates: bool, T: int, table: dict) -> dict:
    """One layer's operations and memory accesses per image (after Lemaire et al. 2022), in pJ.

    A spiking layer (input spikes, event-driven): each effective synaptic event (a spike meeting a
    non-zero weight) is an add, a weight read, and a read and a write of the target's membrane potential;
    each input spike is written by its producer and read here (all of it rate-dependent:
    `memory_aware_pj_rate`, for the break-even spike rate). The LIF neurons' own updates are charged to
    the LIF layers (neuron_terms). Resets and spike addressing are not counted.
    A formal layer (ANN, the SNN's first layer on pixels, a spiking layer fed real values): every MAC is a
    multiply-add and a weight read, every MAC of a conv (every input of a linear layer) an input read, every
    output a write."""
    weight = sram_pj(table, entry["weights"], table["weight_bits"])
    if accumulates:
        events = entry["effective"] / batch
        spikes = entry["sum"] / batch
        potential = sram_pj(table, entry["outputs"], table["potential_bits"])
        spike = sram_pj(table, entry["inputs"], table["spike_bits"])
        ops_rate = table["add_pj"] * events
        mem_rate = (weight + 2 * potential) * events + 2 * spike * spikes
        ops_fixed = mem_fixed = 0.0
    else:
        macs = entry["macs"] * passes
        activation = sram_pj(table, entry["inputs"], table["activation_bits"])
        output = sram_pj(table, entry["outputs"], table["activation_bits"])
        reads = macs if entry["conv"] else entry["inputs"] * passes
        ops_rate = mem_rate = 0.0
        ops_fixed = (table["mul_pj"] + table["add_pj"]) * macs
        mem_fixed = weight * macs + activation * reads + output * entry["outputs"] * passes
    return {"memory_aware_ops_pj": ops_rate + ops_fixed, "memory_aware_memory_pj": mem_rate + mem_fixed,
            "memory_aware_pj": ops_rate + ops_fixed + mem_rate + mem_fixed, "memory_aware_pj_rate": ops_rate + mem_rate}


def neuron_terms(name: str, steps: float, neurons: int, table: dict) -> dict:
    """One LIF layer's updates per image: at each of its `steps` neuron-steps the potential decays (a
    multiply-add), is compared with the threshold (an add), and is read and written (a memory of `neurons`)."""
    potential = sram_pj(table, neurons, table["potential_bits"])
    ops, memory = (table["mul_pj"] + 2 * table["add_pj"]) * steps, 2 * potential * steps
    return {"layer": name, "neuron_steps": steps, "memory_aware_ops_pj": ops, "memory_aware_memory_pj": memory,
            "memory_aware_pj": ops + memory}


def memory_aware_totals(layers: list[dict], neurons: list[dict], spiking: bool) -> dict:
    """energy_mj_memory_aware; for an SNN also its equal-architecture ANN under the same model (every layer
    run once as a formal layer) and the break-even spike rate: with every layer's input spike rate scaled by
    one factor, E_SNN is affine in it (fixed + rate part); the mean input spike rate at which E_SNN equals
    the ANN's (None where even silent, the SNN costs more: its per-step neuron updates alone exceed it)."""
    total = sum(r["memory_aware_pj"] for r in layers) + sum(n["memory_aware_pj"] for n in neurons)
    result = {"energy_mj_memory_aware": total / PJ_PER_MJ}
    if not spiking:
        return result
    ann = sum(r["formal_twin_pj"] for r in layers)
    rate_part = sum(r["memory_aware_pj_rate"] for r in layers)
    rate = _mean_input_spike_rate(layers)
    scale = (ann - (total - rate_part)) / rate_part if rate_part > 0 else None
    result.update(energy_mj_memory_aware_ann=ann / PJ_PER_MJ,
                  break_even_spike_rate=rate * scale if rate is not None and scale is not None and scale > 0 else None)
    return result


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
        # spikingjelly's LIF under the counter: the fused LIF compiled inside a dispatch mode leaves a kernel
        # that every later training step of the process runs ~2x slower (bench/worker_reuse.py)
        with neuron_backend(model, "spikingjelly"), DispatchCounterMode([macs, synops]):
            model(inputs)
    finally:
        model.train(was_training)
        functional.reset_net(model)
    mac_total, synop_total = macs.get_total() / batch, synops.get_total() / batch
    return {"opcounter_macs": mac_total, "opcounter_synops": synop_total,
            "energy_mj_opcounter": (e_mac_pj * mac_total + e_ac_pj * synop_total) / PJ_PER_MJ}
