"""The one validated configuration of a run, shared by the CLI, the trainables and the search spaces.

Validation errors become one line naming the field and what is allowed (slt.errors.InputError).
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slt.errors import InputError
from slt.methods import METHODS, Method

DATASETS = ("digits", "cifar10", "cifar100", "dvs128-gesture", "cifar10-dvs")
MODELS = ("vgg9", "resnet19", "spikformer-tiny", "spikformer-small")
TRANSFORMERS = ("spikformer-tiny", "spikformer-small")


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Literal["vgg9", "resnet19", "spikformer-tiny", "spikformer-small"] = "vgg9"
    method: str = "snn"
    dataset: Literal["digits", "cifar10", "cifar100", "dvs128-gesture", "cifar10-dvs"] = "digits"
    data_dir: str | None = None
    label_kind: Literal["fine", "coarse"] = "fine"  # CIFAR-100 labels
    image_size: int | None = Field(default=None, ge=8)  # digits: upsampled size; events: resized frames
    subset: int | None = Field(default=None, ge=1)  # first N per split, stratified
    epochs: int = Field(default=2, ge=1)
    T: int = Field(default=4, ge=1)
    decay: float = Field(default=0.5, gt=0.0, lt=1.0)
    width: float = Field(default=1.0, gt=0.0)
    pool: Literal["max", "avg"] = "max"
    # transformers: None = the preset (tiny: 12, 192, 3; small: 12, 384, 6)
    depth: int | None = Field(default=None, ge=1)
    embed_dim: int | None = Field(default=None, ge=8)
    heads: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=64, ge=1)
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(default=2e-3, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=5e-4, ge=0.0)
    schedule: Literal["cosine", "none"] = "cosine"
    augment: bool = True
    # tickets (methods lt, slt, mplt, mpslt)
    p: float = Field(default=0.5, ge=0.0, lt=1.0)  # fraction of each prunable layer's weights pruned
    weight_init: Literal["signed_constant", "kaiming_normal"] = "signed_constant"
    dense_first: bool = False  # keep the first conv dense (trained normally)
    dense_last: bool = False  # keep the classifier's last linear dense
    global_threshold: bool = False  # one |score| threshold across layers instead of top-k per layer
    finetune_epochs: int = Field(default=0, ge=0)  # after the search: freeze the mask, train kept weights
    # patch pruning (multisp-lt, multisp-slt): Stage 2 after the PEPSp search
    q: float = Field(default=0.3, ge=0.0, lt=1.0)  # fraction of tokens pruned per sample
    patch_epochs: int = Field(default=1, ge=1)  # epochs of Stage 2
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _check(self):
        if self.method not in METHODS:
            raise ValueError(f"method: unknown method {self.method!r}; allowed: {', '.join(METHODS)}")
        transformer = self.model in TRANSFORMERS
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
    def spiking(self) -> bool:
        return self.method_info.spiking

    @property
    def is_ticket(self) -> bool:
        return self.method_info.ticket is not None

    @property
    def time_steps(self) -> int:
        """Time steps the model actually runs: T for spiking methods, 1 for ANN twins."""
        return self.T if self.spiking else 1


# What each constrained field allows, as shown in one-line errors.
ALLOWED = {
    "model": ", ".join(MODELS),
    "dataset": ", ".join(DATASETS),
    "label_kind": "fine, coarse",
    "image_size": "an integer >= 8",
    "subset": "an integer >= 1 (images per split)",
    "epochs": "an integer >= 1",
    "T": "an integer >= 1",
    "decay": "a number in the open interval (0, 1)",
    "width": "a number > 0",
    "pool": "max, avg",
    "depth": "an integer >= 1 (transformer blocks)",
    "embed_dim": "an integer >= 8, a multiple of 8 and of heads",
    "heads": "an integer >= 1 that divides embed_dim",
    "batch_size": "an integer >= 1",
    "optimizer": "sgd, adam",
    "lr": "a number > 0",
    "momentum": "a number in [0, 1)",
    "weight_decay": "a number >= 0",
    "schedule": "cosine, none",
    "augment": "true, false",
    "p": "a number in [0, 1) (fraction of weights pruned)",
    "weight_init": "signed_constant, kaiming_normal",
    "dense_first": "true, false",
    "dense_last": "true, false",
    "global_threshold": "true, false",
    "finetune_epochs": "an integer >= 0",
    "q": "a number in [0, 1) (fraction of tokens pruned)",
    "patch_epochs": "an integer >= 1",
    "seed": "an integer",
    "device": "auto, cpu, cuda",
}


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
        allowed = ALLOWED.get(field, first["msg"])
        raise InputError(field, f"{first.get('input')!r} is not allowed; allowed: {allowed}") from None
