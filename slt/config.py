"""The one validated configuration of a run, shared by the CLI, the trainables and the search spaces.

Validation errors become one line naming the field and what is allowed (slt.errors.InputError).
"""

from typing import Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slt.errors import InputError
from slt.methods import METHODS, Method

DATASETS = ("digits", "cifar10", "cifar100", "dvs128-gesture", "cifar10-dvs")
MODELS = ("vgg9", "resnet19", "spikformer-tiny", "spikformer-small")
TRANSFORMERS = ("spikformer-tiny", "spikformer-small")


def _field(default, help: str, allowed: str | None = None, **bounds):
    """A run field: default, pydantic bounds, the help text, and (where the type and bounds do not say
    it) the allowed values as shown in errors and --help."""
    return Field(default=default, description=help, json_schema_extra={"allowed": allowed} if allowed else None,
                 **bounds)


class TrainConfig(BaseModel):
    """Every field of a run: its type, bounds, allowed values and help text (the CLI and errors derive from it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Literal[MODELS] = _field("vgg9", "architecture (spikformer-*: Spikformer-style transformer with ConvPEP, "
                                            "DESIGN §3.2)")
    method: Literal[tuple(METHODS)] = _field(
        "snn", "what to train: " + "; ".join(f"{name} = {m.description}" for name, m in METHODS.items()))
    dataset: Literal[DATASETS] = _field("digits", "dataset (digits is bundled; the others need --data-dir)")
    data_dir: str | None = _field(None, "directory with the dataset's original files", "a directory path")
    label_kind: Literal["fine", "coarse"] = _field("fine", "CIFAR-100 labels")
    image_size: int | None = _field(None, "input height and width: digits are upsampled to it (default 32); CIFAR "
                                          "images and event frames are resized (area) to it in every batch, after "
                                          "the crop and flip; None = the dataset's own size", ge=8)
    subset: int | None = _field(None, "keep the first N examples of each split, stratified by class",
                                "an integer >= 1 (images per split)", ge=1)
    val_fraction: float = _field(0.1, "fraction of the training split held out for validation (stratified by class, "
                                      "seeded, never trained on); searchers read validation accuracy", gt=0.0, lt=1.0)
    epochs: int = _field(2, "the run's whole training budget in epochs, over all phases: a ticket searches for "
                            "epochs - finetune_epochs (- patch_epochs for MultiSp), so compared methods train "
                            "equally long", ge=1)
    T: int = _field(4, "time steps of the SNN (ANN twins run 1)", ge=1)
    decay: float = _field(0.5, "membrane decay λ of U[t] = λ·U[t-1] + I[t]", gt=0.0, lt=1.0)
    width: float = _field(1.0, "channel width multiplier (CNNs; the transformers use --embed-dim)", gt=0.0)
    pool: Literal["max", "avg"] = _field("max", "VGG-9 pooling")
    depth: int | None = _field(None, "transformers: number of blocks; None = the preset's (12)",
                               "an integer >= 1 (transformer blocks)", ge=1)
    embed_dim: int | None = _field(None, "transformers: token width D; None = the preset's (192 tiny, 384 small)",
                                   "an integer >= 8, a multiple of 8 and of heads", ge=8)
    heads: int | None = _field(None, "transformers: attention heads; None = the preset's (3 tiny, 6 small)",
                               "an integer >= 1 that divides embed_dim", ge=1)
    batch_size: int = _field(64, "images per batch", ge=1)
    optimizer: Literal["sgd", "adam"] = _field("adam", "optimiser (Adam is the paper's; SGD lr 0.1 the references')")
    lr: float = _field(2e-3, "learning rate (cosine schedule: the initial one)", gt=0.0)
    momentum: float = _field(0.9, "SGD momentum", ge=0.0, lt=1.0)
    weight_decay: float = _field(5e-4, "weight decay", ge=0.0)
    schedule: Literal["cosine", "none"] = _field("cosine", "learning-rate schedule, per phase")
    augment: bool = _field(True, "random crop and flip of training batches (no flips for digits and gestures)")
    # tickets (methods lt, slt, mplt, mpslt and the transformers' pepsp/multisp)
    p: float = _field(0.5, "tickets: fraction of each prunable layer's weights pruned (k = 1 - p kept)",
                      "a number in [0, 1) (fraction of weights pruned)", ge=0.0, lt=1.0)
    weight_init: Literal["kaiming_normal", "signed_constant"] = _field(
        "kaiming_normal", "tickets: init of the frozen random weights (kaiming_normal: real-valued, so a multi-prize "
                          "ticket's sign(w)·α differs from w; signed_constant: edge-popup's best, with which a "
                          "multi-prize ticket equals the plain one)")
    dense_first: bool = _field(False, "tickets: keep the first conv dense and trained")
    dense_last: bool = _field(False, "tickets: keep the last linear dense and trained")
    global_threshold: bool = _field(False, "tickets: one |score| threshold across all layers (default: exact top-k "
                                           "per layer)")
    finetune_epochs: int = _field(0, "tickets: of the epochs, how many train the kept weights with the mask frozen, "
                                     "after the search", ge=0)
    # patch pruning (multisp-lt, multisp-slt): Stage 2 after the PEPSp search
    q: float = _field(0.3, "multisp: fraction of tokens pruned per sample in Stage 2 (keeps the top "
                           "ceil((1-q)·N) by the number of active frozen ConvPEP units feeding each)",
                      "a number in [0, 1) (fraction of tokens pruned)", ge=0.0, lt=1.0)
    patch_epochs: int = _field(1, "multisp: of the epochs, how many are Stage 2 (ConvPEP frozen, blocks trained on "
                                  "the kept tokens), after Stage 1 (PEPSp)", ge=1)
    seed: int = _field(0, "seed of initialisation, shuffling and augmentation")
    device: Literal["auto", "cpu", "cuda"] = _field("auto", "where to train")
    neuron_backend: Literal["auto", "fused", "spikingjelly"] = _field(
        "auto", "the LIF's implementation: fused (compiled forward and BPTT, bit-identical to spikingjelly's) or "
                "spikingjelly (the reference); auto = spikingjelly's CUDA kernels on GPUs; on CPU fused where the run is "
                "long enough to win back the ~6 s compilation, else spikingjelly")
    energy_table: str | None = _field(
        None, "YAML file of constants of the memory-aware energy estimate (keys of slt.energy_table."
              "MEMORY_AWARE_TABLE; the ones it leaves out keep their cited 45 nm values); None = the cited values",
        "a YAML file path")
    precision: Literal["auto", "fp32", "bf16"] = _field(
        "auto", "arithmetic of convolutions and linear layers: bf16 (autocast; membranes, BN statistics, loss and "
                "optimiser state stay float32) or fp32; auto = bf16 on CUDA and on CPUs with AMX/AVX512-BF16, "
                "else fp32 (bf16's validation accuracy is at parity with fp32's: python -m bench.parity)")

    @model_validator(mode="after")
    def _check(self):
        if self.energy_table is not None:
            from slt.energy_table import load_energy_table

            load_energy_table(self.energy_table)  # a bad file fails here, before any work
        transformer = self.model in TRANSFORMERS
        later = self.later_epochs
        if later and later >= self.epochs:
            raise ValueError(f"epochs: {self.epochs} is the run's whole budget; it must exceed the epochs after the "
                             f"search (finetune_epochs + patch_epochs = {later}) so the search gets at least one")
        if self.method_info.transformer_only and not transformer:
            raise ValueError(f"method: {self.method} needs a transformer model; allowed: {', '.join(TRANSFORMERS)}")
        if transformer:
            from slt.models.spikformer import resolve_dims

            resolve_dims(self.model, self.depth, self.embed_dim, self.heads)
            if self.width != 1.0:
                raise ValueError(f"width: {self.width}; the transformers are sized by embed_dim, depth and heads, "
                                 "keep width 1")
        else:
            for name in ("depth", "embed_dim", "heads"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: applies to the transformers only ({', '.join(TRANSFORMERS)})")
        return self

    @property
    def method_info(self) -> Method:
        return METHODS[self.method]

    @property
    def later_epochs(self) -> int:
        """Epochs of a ticket's phases after its search (fine-tuning, MultiSp's Stage 2), out of `epochs`."""
        method = self.method_info
        if not method.ticket:
            return 0
        return self.finetune_epochs + (self.patch_epochs if method.patch_pruning else 0)

    @property
    def spiking(self) -> bool:
        return self.method_info.spiking

    @property
    def is_ticket(self) -> bool:
        return self.method_info.ticket is not None

    @property
    def time_steps(self) -> int:
        """Time steps the model actually runs: T for spiking methods, 1 for ANN twins."""
        return self.T if self.spiking else 1


def _bounds(field) -> str:
    """'an integer >= 1', 'a number in the open interval (0, 1)', ... from a field's type and pydantic bounds."""
    kind = "an integer" if int in (field.annotation, *get_args(field.annotation)) else "a number"
    bound = {name: getattr(m, name) for m in field.metadata for name in ("gt", "ge", "lt", "le") if hasattr(m, name)}
    low = ("(", bound["gt"]) if "gt" in bound else ("[", bound["ge"]) if "ge" in bound else None
    high = (")", bound["lt"]) if "lt" in bound else ("]", bound["le"]) if "le" in bound else None
    if low and high:
        interval = f"{low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
        return f"{kind} in the open interval {interval}" if low[0] + high[0] == "()" else f"{kind} in {interval}"
    if low:
        return f"{kind} {'>' if low[0] == '(' else '>='} {low[1]:g}"
    return kind


def allowed(name: str) -> str:
    """What field `name` allows, as shown in one-line errors and in --help."""
    field = TrainConfig.model_fields[name]
    if field.json_schema_extra:
        return field.json_schema_extra["allowed"]
    choices = [a for a in get_args(field.annotation) if a is not type(None)]
    if get_origin(field.annotation) is Literal:
        return ", ".join(map(str, choices))
    if field.annotation is bool:
        return "true, false"
    return _bounds(field)


def make_config(**values) -> TrainConfig:
    """Validate raw values (CLI, YAML, Tune config) into a TrainConfig or raise a one-line InputError."""
    try:
        return TrainConfig(**values)
    except ValidationError as err:
        first = err.errors()[0]
        if not first["loc"]:  # raised by _check as "field: problem"
            field, message = first["msg"].removeprefix("Value error, ").split(": ", 1)
            raise InputError(field, message) from None
        field = ".".join(str(part) for part in first["loc"])
        if first["type"] == "extra_forbidden":
            raise InputError(field, f"unknown field; allowed fields: {', '.join(TrainConfig.model_fields)}") from None
        text = allowed(field) if field in TrainConfig.model_fields else first["msg"]
        raise InputError(field, f"{first.get('input')!r} is not allowed; allowed: {text}") from None
