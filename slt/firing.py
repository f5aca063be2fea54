"""Per-layer firing rates measured with spikingjelly's monitors, accumulated over many batches."""

import torch
from spikingjelly.activation_based import monitor
from torch import nn


def _ones_and_count(x: torch.Tensor) -> torch.Tensor:
    x = x.detach()
    return torch.stack((x.sum(dtype=torch.float64), torch.tensor(x.numel(), dtype=torch.float64, device=x.device)))


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

    def rates(self) -> dict[str, float]:
        result = {}
        for name in self.monitor.monitored_layers:
            records = self.monitor[name]
            if records:
                ones, count = torch.stack(records).sum(0).tolist()
                result[name] = ones / count
        return result

    def clear(self) -> None:
        self.monitor.clear_recorded_data()

    def __enter__(self) -> "FiringRates":
        return self

    def __exit__(self, *exc) -> None:
        self.monitor.remove_hooks()
