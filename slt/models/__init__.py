"""Model registry: every architecture as an SNN (LIF, T steps) or its ANN twin (ReLU, T = 1)."""

from functools import partial

from torch import nn

from slt.errors import InputError
from slt.models.neurons import Units
from slt.models.resnet import ResNet19
from slt.models.spikformer import PRESETS, build_spikformer
from slt.models.vgg import VGG9

MODELS = {"vgg9": VGG9, "resnet19": ResNet19, **{name: partial(build_spikformer, name) for name in PRESETS}}


def build_model(name: str, *, num_classes: int, in_channels: int, image_size: int, spiking: bool,
                T: int = 4, decay: float = 0.5, width: float = 1.0, neuron_backend: str = "spikingjelly",
                **options) -> nn.Module:
    """Build `name` as an SNN (spiking=True: LIF units, T time steps) or as its ANN twin (ReLU, T=1).

    neuron_backend: the LIF's implementation (slt.models.neurons.NEURON_BACKENDS).
    options: pool= for vgg9; depth=, embed_dim=, heads= for the transformers (None = the preset).
    """
    if name not in MODELS:
        raise InputError("model", f"unknown model {name!r}; allowed: {', '.join(MODELS)}")
    if T < 1:
        raise InputError("T", f"{T} time steps; allowed: an integer >= 1")
    if width <= 0:
        raise InputError("width", f"{width}; allowed: a number > 0")
    units = Units(spiking, T, decay, neuron_backend) if spiking else Units(False)
    return MODELS[name](num_classes, in_channels, image_size, units=units, width=width, **options)


def count_parameters(model: nn.Module) -> int:
    """Parameters of the architecture; a ticket's scores are search state, not model parameters."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.endswith("scores"))
