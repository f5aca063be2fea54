"""The methods, named the same everywhere (CLI, configs, MLflow, tables)."""

from dataclasses import dataclass

# run-config fields that only some methods read (every other field is read by all)
TICKET_FIELDS = ("p", "weight_init", "dense_first", "dense_last", "global_threshold", "finetune_epochs")
SPIKING_FIELDS = ("T", "decay", "neuron_backend")
PATCH_FIELDS = ("q", "patch_epochs")


@dataclass(frozen=True)
class Method:
    spiking: bool  # LIF units and T time steps; else the ANN twin (T = 1)
    ticket: str | None  # None (dense training), "supermask" (edge-popup) or "biprop" (multi-prize)
    binary_activations: bool  # ANN multi-prize: sign activations with a Bi-Real gradient
    description: str
    scope: str | None = None  # module the ticket is confined to ("convpep": PEPSp); None = every conv/linear
    patch_pruning: bool = False  # MultiSp: a second stage keeping the top ⌈(1 - q)·N⌉ tokens, ConvPEP frozen

    @property
    def transformer_only(self) -> bool:
        return self.scope == "convpep" or self.patch_pruning

    def reads(self, field: str) -> bool:
        """Whether this method's runs use run-config field `field` (a dense twin records p but ignores it)."""
        if field in TICKET_FIELDS:
            return self.ticket is not None
        if field in SPIKING_FIELDS:
            return self.spiking
        if field in PATCH_FIELDS:
            return self.patch_pruning
        return True

    @property
    def search_phase(self) -> str:
        """Name of the phase that searches the ticket: "pepsp" (Stage 1 of Algorithm 1) or "search"."""
        return "pepsp" if self.scope == "convpep" else "search"


METHODS = {
    "ann": Method(False, None, False, "dense ANN twin (ReLU, T = 1)"),
    "snn": Method(True, None, False, "dense SNN (LIF, T time steps)"),
    "lt": Method(False, "supermask", False, "ANN lottery ticket: edge-popup supermask on frozen random weights"),
    "slt": Method(True, "supermask", False, "spiking lottery ticket: edge-popup supermask in the SNN"),
    "mplt": Method(False, "biprop", True, "ANN multi-prize ticket: binary weights (sign·α·mask) + binary activations"),
    "mpslt": Method(True, "biprop", False, "spiking multi-prize ticket: binary weights (sign·α·mask), spikes"),
    "pepsp-lt": Method(False, "biprop", True, "transformer ANN: multi-prize ticket on the ConvPEP convolutions "
                       "(sign activations there), the rest trained", scope="convpep"),
    "pepsp-slt": Method(True, "biprop", False, "spiking transformer: multi-prize ticket on the ConvPEP "
                        "convolutions, the rest trained", scope="convpep"),
    "multisp-lt": Method(False, "biprop", True, "pepsp-lt, then patch pruning (top ⌈(1-q)·N⌉ tokens by count of "
                         "active (+1) frozen ConvPEP sign units) for patch_epochs", scope="convpep",
                         patch_pruning=True),
    "multisp-slt": Method(True, "biprop", False, "pepsp-slt, then patch pruning (top ⌈(1-q)·N⌉ tokens by count of "
                          "active (spiking) frozen ConvPEP units) for patch_epochs", scope="convpep",
                          patch_pruning=True),
}
