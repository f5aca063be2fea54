"""Spiking transformer (Spikformer style, DESIGN §3.2) with ConvPEP, and its ANN twin.

ConvPEP (convolutional patch embedding): four conv3x3 (no bias) + BN + unit stages with D/8, D/4,
D/2, D channels, max-pool (k3, s2, p1) after the last two stages (patch 4: 32x32 -> 8x8 = 64 tokens)
or after all four for inputs of 128 pixels and more (patch 16: 128x128 events -> 64 tokens), and a
relative position conv (conv3x3 + BN + unit) added to its output: x = rpe(x) + x. The result is
flattened to tokens [T*B, N, D].

Blocks: x = x + SSA(x); x = x + MLP(x). In the SNN, spiking self-attention has Q, K, V = LIF(BN(Linear))
(binary), attention Q·Kᵀ·0.125 without softmax, then attn·V and a LIF with threshold 0.5, then the
projection Linear + BN + LIF; the MLP is Linear-BN-LIF -> Linear-BN-LIF with hidden size 4D. The ANN
twin has ReLU wherever the SNN has a LIF, except that Q, K, V are real-valued (Linear + BN, no unit)
and the attention is softmax(Q·Kᵀ·0.125)·V (Spikformer's "vanilla self-attention"). Head: mean over
tokens, Linear, mean over T.

Every block works on any token count L <= N: between ConvPEP and the blocks sits `token_selector`
(nn.Identity; MultiSp's Stage 2 swaps in slt.tickets.patches.TopTokens, which keeps L < N tokens).
A selector with `wants_activity = True` is called as selector(tokens, activity), where activity
[T*B, N] counts the active ConvPEP units feeding each token at each time step (see `active_units`);
ConvPEP computes it only then, so dense models and Stage 1 pay nothing.
spikingjelly 2.0's Spikformer computes the same network, but its blocks reshape tokens back to the
H x W grid and use Conv1d in channel-first layout; here the layers are nn.Linear on [T*B, L, D] (so
the energy hooks count them like any linear layer) and the two attention products are MatMul modules
(so they get their own rows, "blocks.i.attn.qk" / "blocks.i.attn.av"). Linear layers have no bias,
as in spikingjelly 2.0, which makes TINY 5,903,074 and SMALL 23,521,978 parameters on CIFAR-10,
exactly spikingjelly's Spikformer at the same depth, width and heads.
"""

import torch
from torch import nn

from slt.errors import InputError
from slt.models.encoding import decode, encode
from slt.models.neurons import Units

# (depth, embed_dim D, heads) of each preset: DeiT-Tiny / DeiT-Small scale, as the paper says.
PRESETS = {"spikformer-tiny": (12, 192, 3), "spikformer-small": (12, 384, 6)}
MLP_RATIO = 4
ATTENTION_SCALE = 0.125  # Spikformer's fixed scale (= 1/sqrt(64), the head size of TINY and SMALL)
ATTENTION_THRESHOLD = 0.5  # threshold of the LIF after attn·V (Spikformer)
PATCH16_FROM = 128  # inputs this large pool after all four ConvPEP stages (patch 16), smaller ones after two


def resolve_dims(name: str, depth: int | None = None, embed_dim: int | None = None,
                 heads: int | None = None) -> tuple[int, int, int]:
    """(depth, embed_dim, heads) of a preset with the given fields overriding it; one-line errors."""
    if name not in PRESETS:
        raise InputError("model", f"unknown transformer {name!r}; allowed: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    depth, embed_dim, heads = (given if given is not None else default
                               for given, default in zip((depth, embed_dim, heads), preset))
    if depth < 1:
        raise InputError("depth", f"{depth}; allowed: an integer >= 1")
    if heads < 1:
        raise InputError("heads", f"{heads}; allowed: an integer >= 1")
    if embed_dim < 8 or embed_dim % 8 or embed_dim % heads:
        raise InputError("embed_dim", f"{embed_dim} with {heads} heads; allowed: a multiple of 8 and of heads")
    return depth, embed_dim, heads


class TokenBN(nn.BatchNorm1d):
    """BatchNorm1d over the channel dim of tokens [T*B, L, D] (BatchNorm1d wants channels second)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class MatMul(nn.Module):
    """a @ b as a module, so energy accounting sees the attention products like a layer.

    spike_operand: which input (0 = a, 1 = b) is the spike train in the SNN; its firing rate turns
    the product's MACs into SOPs (slt.energy).
    """

    def __init__(self, spike_operand: int):
        super().__init__()
        self.spike_operand = spike_operand

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b

    def extra_repr(self) -> str:
        return f"spike_operand={self.spike_operand}"


def linear_bn(cin: int, cout: int, unit: nn.Module | None) -> nn.Sequential:
    layers = [nn.Linear(cin, cout, bias=False), TokenBN(cout)]
    return nn.Sequential(*layers, unit) if unit is not None else nn.Sequential(*layers)


class SelfAttention(nn.Module):
    """Spiking self-attention (SNN) or softmax attention on real-valued Q, K, V (ANN twin)."""

    def __init__(self, dim: int, heads: int, *, units: Units):
        super().__init__()
        self.heads = heads
        self.spiking = units.spiking
        self.q, self.k, self.v = (linear_bn(dim, dim, units() if self.spiking else None)
                                  for _ in range(3))
        self.qk = MatMul(spike_operand=0)  # Q is the spike input, Kᵀ plays the weights
        self.av = MatMul(spike_operand=1)  # V is the spike input, the attention map plays the weights
        self.attn_unit = units(threshold=ATTENTION_THRESHOLD) if self.spiking else nn.Identity()
        self.proj = linear_bn(dim, dim, units())

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [S, L, D] -> [S, heads, L, D/heads]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (self._split_heads(layer(x)) for layer in (self.q, self.k, self.v))
        attention = self.qk(q, k.transpose(-2, -1)) * ATTENTION_SCALE
        if not self.spiking:
            attention = attention.softmax(-1)
        out = self.av(attention, v).transpose(1, 2).flatten(2)  # [S, heads, L, D/heads] -> [S, L, D]
        return self.proj(self.attn_unit(out))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, *, units: Units):
        super().__init__()
        self.fc1 = linear_bn(dim, hidden, units())
        self.fc2 = linear_bn(hidden, dim, units())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


class Block(nn.Module):
    """x + SSA(x), then x + MLP(x), on tokens [T*B, L, D] for any L."""

    def __init__(self, dim: int, heads: int, *, units: Units):
        super().__init__()
        self.attn = SelfAttention(dim, heads, units=units)
        self.mlp = MLP(dim, MLP_RATIO * dim, units=units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


def _conv_bn(cin: int, cout: int, pool: bool) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.MaxPool2d(3, stride=2, padding=1)] if pool else layers


def active_units(*unit_outputs: torch.Tensor) -> torch.Tensor:
    """Active units per token and time step: outputs [T*B, D, H, W] -> [T*B, N = H*W] (integer counts).

    A unit is active when its output is > 0: a LIF spike, +1 of a sign unit, a positive ReLU output.
    """
    # > 0, not |x|: spikes {0, 1} and sign units {-1, +1} alike then count how many binary units are on
    return sum((output > 0).sum(1) for output in unit_outputs).flatten(1)


class ConvPEP(nn.Module):
    """Convolutional patch embedding + relative position conv: input -> tokens [T*B, N, D].

    forward(x, activity=True) also returns the active units per token and time step [T*B, N]: the
    active stage-4 units f plus the active position-conv units rpe(f), counted apart because the
    sum rpe(f) + f no longer says which unit was on (with sign units +1 + -1 = 0, with spikes 1 + 0 = 1).
    """

    def __init__(self, in_channels: int, image_size: int, dim: int, *, units: Units):
        super().__init__()
        self.T = units.T
        widths = (dim // 8, dim // 4, dim // 2, dim)
        pooled = [i >= (0 if image_size >= PATCH16_FROM else 2) for i in range(4)]
        self.stem = nn.Sequential(*_conv_bn(in_channels, widths[0], pooled[0]))  # runs once under direct encoding
        self.stem_unit = units()
        self.stages = nn.Sequential(*(nn.Sequential(*_conv_bn(widths[i - 1], widths[i], pooled[i]),
                                                    units()) for i in range(1, 4)))
        self.rpe = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.BatchNorm2d(dim),
                                 units())
        grid = image_size
        for pool in pooled:
            grid = (grid + 1) // 2 if pool else grid  # max-pool k3 s2 p1 gives ceil(size / 2)
        self.num_tokens = grid * grid

    def forward(self, x: torch.Tensor, activity: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        f = self.stages(self.stem_unit(encode(self.stem, x, self.T)))
        position = self.rpe(f)
        x = position + f
        # [T*B, D, H, W] -> [T*B, N, D], contiguous like gathered tokens, so pruning at q = 0 is bit-identical
        tokens = x.flatten(2).transpose(1, 2).contiguous()
        return (tokens, active_units(f, position)) if activity else tokens


class Spikformer(nn.Module):
    """ConvPEP -> token_selector -> blocks -> mean over tokens -> Linear -> mean over T."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, *, units: Units, depth: int,
                 embed_dim: int, heads: int):
        super().__init__()
        self.T = units.T
        self.convpep = ConvPEP(in_channels, image_size, embed_dim, units=units)
        # nn.Identity, or MultiSp's TopTokens (set by slt.tickets.patches.start_patch_pruning; models do not
        # import tickets): a selector with wants_activity = True also gets ConvPEP's active units per token
        self.token_selector: nn.Module = nn.Identity()
        self.blocks = nn.ModuleList(Block(embed_dim, heads, units=units) for _ in range(depth))
        self.classifier = nn.Sequential(nn.Linear(embed_dim, num_classes))
        self.convpep_frozen = False  # MultiSp Stage 2: ConvPEP keeps its BN statistics (eval mode) and trains nothing

    @property
    def num_tokens(self) -> int:
        return self.convpep.num_tokens

    def train(self, mode: bool = True) -> "Spikformer":
        super().train(mode)
        if self.convpep_frozen:
            self.convpep.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self.token_selector, "wants_activity", False):
            tokens = self.token_selector(*self.convpep(x, activity=True))  # (tokens, activity [T*B, N])
        else:
            tokens = self.token_selector(self.convpep(x))
        for block in self.blocks:
            tokens = block(tokens)
        return decode(self.classifier(tokens.mean(1)), self.T)


def build_spikformer(name: str, num_classes: int, in_channels: int, image_size: int, *, units: Units,
                     width: float = 1.0, depth: int | None = None, embed_dim: int | None = None,
                     heads: int | None = None) -> Spikformer:
    """A preset ("spikformer-tiny" / "spikformer-small"), optionally with depth/embed_dim/heads overridden."""
    if width != 1.0:
        raise InputError("width", f"{width}; the transformers are sized by embed_dim/depth/heads, keep width 1")
    depth, embed_dim, heads = resolve_dims(name, depth, embed_dim, heads)
    return Spikformer(num_classes, in_channels, image_size, units=units, depth=depth,
                      embed_dim=embed_dim, heads=heads)
