"""Operation counts and energy (DESIGN §3.5).

Per-layer ANN MACs come from the layer shapes, measured with forward hooks on one input.
"""

import torch
from spikingjelly.activation_based import functional
from torch import nn

COUNTED_LAYERS = (nn.Conv2d, nn.Linear)


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-accumulates of one conv/linear layer per sample of `output`.

    Models fold time into the batch, so one sample is one image at one time step.
    """
    if isinstance(module, nn.Conv2d):
        per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
    else:
        per_output = module.in_features
    return per_output * (output.numel() // output.shape[0])


@torch.no_grad()
def count_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """ANN MACs per image per time step of every conv/linear layer, keyed by module name."""
    counts: dict[str, int] = {}
    hooks = [module.register_forward_hook(lambda mod, inputs, output, name=name: counts.__setitem__(
                 name, layer_macs(mod, output)))
             for name, module in model.named_modules() if isinstance(module, COUNTED_LAYERS)]
    was_training = model.training
    model.eval()
    try:
        model(example)
    finally:
        model.train(was_training)
        functional.reset_net(model)
        for handle in hooks:
            handle.remove()
    return counts
