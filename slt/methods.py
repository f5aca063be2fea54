"""The methods, named the same everywhere (CLI, configs, MLflow, tables)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    spiking: bool  # LIF units and T time steps; else the ANN twin (T = 1)
    ticket: str | None  # None (dense training), "supermask" (edge-popup) or "biprop" (multi-prize)
    binary_activations: bool  # ANN multi-prize: sign activations with a Bi-Real gradient
    description: str


METHODS = {
    "ann": Method(False, None, False, "dense ANN twin (ReLU, T = 1)"),
    "snn": Method(True, None, False, "dense SNN (LIF, T time steps)"),
    "lt": Method(False, "supermask", False, "ANN lottery ticket: edge-popup supermask on frozen random weights"),
    "slt": Method(True, "supermask", False, "spiking lottery ticket: edge-popup supermask in the SNN"),
    "mplt": Method(False, "biprop", True, "ANN multi-prize ticket: binary weights (sign·α·mask) + binary activations"),
    "mpslt": Method(True, "biprop", False, "spiking multi-prize ticket: binary weights (sign·α·mask), spikes"),
}
