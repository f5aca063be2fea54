"""Per-layer firing rates measured with spikingjelly's monitors, accumulated over many batches."""

import torch
from spikingjelly.activation_based import monitor
from torch import nn


ROW = 128  # elements summed in the tensor's own dtype before the float64 total


def _ones_and_count(x: torch.Tensor) -> torch.Tensor:
    """(sum, number of elements) of x in float64. Rows of ROW elements are summed in x's dtype first: a
    float64 copy of a whole layer's output costs ~30 sums, and for 0/1 spikes the row sums are integers
    <= 128, exact in bf16 and float32; non-binary bf16 inputs get bf16's rounding per row (~0.4 %)."""
    flat = x.detach().reshape(-1)  # a view for the NCHW tensors runs use (a copy for other layouts)
    whole = flat.numel() // ROW * ROW
    total = flat[:whole].view(-1, ROW).sum(1).sum(dtype=torch.float64) + flat[whole:].sum(dtype=torch.float64)
    return torch.stack((total, torch.tensor(x.numel(), dtype=torch.float64, device=x.device)))


class FiringRates:
    """Fraction of ones per element per time step of the outputs (or inputs) of `instance` layers.

    Use as a context manager around forward passes; `rates()` averages over every batch seen,
    weighting each batch by its number of elements. Inputs of layers fed by non-binary tensors
    give the mean input value, not a rate.
    """

    def __init__(self, model: nn.Module, instance: type | tuple[type, ...], *, side: str = "output"):
        Monitor = {"output": monitor.OutputMonitor, "input": monitor.InputMonitor}[side]
        kwargs = {f"function_on_{side}": _ones_and_count}
        self.monitor = Monitor(model, instance, **kwargs)

    def totals(self) -> dict[str, tuple[float, float]]:
        """(sum, number of elements) of each layer's outputs over every batch seen."""
        return {name: tuple(torch.stack(records).sum(0).tolist())
                for name in self.monitor.monitored_layers if (records := self.monitor[name])}

    def rates(self) -> dict[str, float]:
        return {name: ones / count for name, (ones, count) in self.totals().items()}

    def clear(self) -> None:
        self.monitor.clear_recorded_data()

    def __enter__(self) -> "FiringRates":
        return self

    def __exit__(self, *exc) -> None:
        self.monitor.remove_hooks()
