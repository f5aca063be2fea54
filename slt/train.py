"""One training/evaluation epoch and a run that strings epochs together; engine-agnostic.

Everything returns plain dicts of numbers so the CLI, a Ray Tune trainable or a notebook can use it.
"""

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import nn
from tqdm.auto import tqdm

from slt.config import TRANSFORMERS, TrainConfig
from slt.data import Dataset, DatasetInfo, Split, load_dataset
from slt.data.pipeline import BatchPipeline, iterate_batches
from slt.energy import measure_energy
from slt.energy_table import load_energy_table
from slt.firing import FiringRates
from slt.models import build_model, count_parameters
from slt.models.neurons import LIF, set_neuron_backend
from slt.tickets import make_ticket, sparsity_report, start_finetune
from slt.tickets.patches import kept_tokens, start_patch_pruning


logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from slt.errors import InputError

        raise InputError("device", "cuda was asked for but no CUDA device is available; allowed here: auto, cpu")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 matrix or vector units (AMX-BF16, AVX512-BF16): Linux's /proc/cpuinfo flags."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """The dtype convolutions and linear layers run in: bfloat16 or float32 ("auto": bf16 where the
    hardware has it, on CUDA or on a CPU with AMX/AVX512-BF16)."""
    if name == "auto":
        bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16()
        return torch.bfloat16 if bf16 else torch.float32
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[name]


# Measured by bench.train_step on these 2-core machines: the fused LIF saves ~10 ns per neuron and time step of
# a training step (forward + backward) against spikingjelly's, and its first call in a process costs ~6 s of
# compilation with inductor's on-disk cache warm (~35 s the first time on a machine).
FUSED_SAVES_S = 10e-9
FUSED_COMPILE_S = 6.0


def resolve_neuron_backend(cfg: TrainConfig, neuron_steps: Callable[[], float] | None = None) -> str:
    """The LIF implementation. "auto": spikingjelly's on a GPU (its CUDA kernels); on CPU the fused one when the
    run's LIF work (`neuron_steps()`: neurons x time steps per image x images the run passes; only asked here)
    saves more time than compiling it costs, else spikingjelly's (a short run on small images would spend
    longer compiling)."""
    if cfg.neuron_backend != "auto":
        return cfg.neuron_backend
    if resolve_device(cfg.device).type == "cuda":
        return "spikingjelly"
    return "fused" if neuron_steps is None or neuron_steps() * FUSED_SAVES_S > FUSED_COMPILE_S else "spikingjelly"


def _run_batches(model: nn.Module, split: Split, pipeline: BatchPipeline, *, batch_size: int, train: bool,
                 optimizer: torch.optim.Optimizer | None = None, generator: torch.Generator | None = None,
                 augment: bool = False, desc: str = "", progress: bool = False,
                 dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The one loop behind train_epoch and evaluate; `dtype` bfloat16 runs the forward under autocast."""
    model.train(train)
    device = split.labels.device
    total_loss, correct, seen = 0.0, 0, 0
    started = time.perf_counter()
    with FiringRates(model, LIF) as rates, torch.set_grad_enabled(train):
        bar = tqdm(iterate_batches(split, batch_size, shuffle=train, generator=generator),
                   total=math.ceil(len(split) / batch_size), desc=desc, leave=False,
                   disable=None if progress else True)  # None: only on a terminal
        for raw, labels in bar:
            inputs = pipeline(raw, augment=augment, generator=generator)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                logits = model(inputs)
            loss = F.cross_entropy(logits.float(), labels)  # float32: the loss and its gradient's scale
            if train:
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training loss is {loss.item()} after {seen} images")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            functional.reset_net(model)
            total_loss += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        firing = rates.rates()
    seconds = time.perf_counter() - started
    return {
        "loss": total_loss / seen,
        "accuracy": correct / seen,
        "firing_rates": firing,  # per LIF layer: output spikes per neuron per time step
        "mean_firing_rate": sum(firing.values()) / len(firing) if firing else None,  # their unweighted mean
        "seconds": seconds,
        "images_per_s": seen / seconds,
    }


def train_epoch(model: nn.Module, split: Split, pipeline: BatchPipeline, optimizer: torch.optim.Optimizer, *,
                batch_size: int, generator: torch.Generator, augment: bool = True, progress: bool = False,
                dtype: torch.dtype = torch.float32) -> dict:
    """One pass over `split` in random order with augmentation; returns loss, accuracy, firing rates, timing."""
    return _run_batches(model, split, pipeline, batch_size=batch_size, train=True, optimizer=optimizer,
                        generator=generator, augment=augment, desc="train", progress=progress, dtype=dtype)


def evaluate(model: nn.Module, split: Split, pipeline: BatchPipeline, *, batch_size: int,
             progress: bool = False, desc: str = "test", dtype: torch.dtype = torch.float32) -> dict:
    """Loss, accuracy and firing rates on `split` without augmentation or gradients."""
    return _run_batches(model, split, pipeline, batch_size=batch_size, train=False, desc=desc, progress=progress,
                        dtype=dtype)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, epochs: int):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def model_options(cfg: TrainConfig) -> dict:
    """Architecture options beyond the common ones: VGG-9's pooling, the transformers' depth/embed_dim/heads."""
    if cfg.model == "vgg9":
        return {"pool": cfg.pool}
    if cfg.model in TRANSFORMERS:
        return {"depth": cfg.depth, "embed_dim": cfg.embed_dim, "heads": cfg.heads}
    return {}


def build_network(cfg: TrainConfig, info: DatasetInfo) -> nn.Module:
    """The model a config asks for: SNN or ANN twin, dense or turned into a ticket."""
    image_size = cfg.image_size or info.image_size  # the pipeline resizes the stored inputs to it
    model = build_model(cfg.model, num_classes=info.num_classes, in_channels=info.in_channels,
                        image_size=image_size, spiking=cfg.spiking, T=cfg.time_steps, decay=cfg.decay,
                        width=cfg.width, neuron_backend=resolve_neuron_backend(cfg), **model_options(cfg))
    method = cfg.method_info
    if method.ticket == "biprop" and cfg.weight_init == "signed_constant":
        logger.warning("slt: warning: weight_init signed_constant makes every |w| of a layer equal, so %s's "
                       "sign(w)·α·mask is w·mask: the multi-prize ticket equals the plain one", cfg.method)
    if method.ticket:
        make_ticket(model, method.ticket, cfg.p, weight_init=cfg.weight_init, dense_first=cfg.dense_first,
                    dense_last=cfg.dense_last, global_threshold=cfg.global_threshold,
                    binary_activations=method.binary_activations, only=method.scope)
    return model


@dataclass(frozen=True)
class Phase:
    """A stretch of training with its own epochs, optimiser and schedule; `enter` changes the model first."""

    name: str
    epochs: int
    enter: Callable[[nn.Module], None] | None = None


def plan_phases(cfg: TrainConfig) -> list[Phase]:
    """Dense: train. Tickets: search (PEPSp: "pepsp"), then optionally finetune; MultiSp then "multisp".
    The phases share the run's budget of `epochs` (equal budgets for every method compared)."""
    method = cfg.method_info
    if not method.ticket:
        return [Phase("train", cfg.epochs)]
    later = []
    if cfg.finetune_epochs:
        later.append(Phase("finetune", cfg.finetune_epochs, start_finetune))
    if method.patch_pruning:
        later.append(Phase("multisp", cfg.patch_epochs, partial(start_patch_pruning, q=cfg.q)))
    return [Phase(method.search_phase, cfg.epochs - cfg.later_epochs), *later]


class TrainingRun:
    """Model, optimiser, schedule, data and RNG of one run; `run_epoch()` advances it by one epoch.

    The run is a list of phases (plan_phases) sharing its `epochs`, each with a fresh optimiser and
    schedule: dense methods "train" for `epochs`; ticket methods search the mask ("search", or "pepsp"
    for the transformer's ConvPEP ticket), then with `finetune_epochs` freeze the mask and train the
    kept weights ("finetune"); MultiSp then freezes the ConvPEP and trains the rest on the top
    ⌈(1 - q)·N⌉ tokens for `patch_epochs` ("multisp").
    Every epoch is evaluated on the validation split (what searchers read; also where firing rates
    and energy are measured) and on the test split (recorded and reported, never used to choose).
    `state_dict()` holds everything needed to continue bit-for-bit after a restart.
    """

    def __init__(self, cfg: TrainConfig, dataset: Dataset | None = None, *, progress: bool = False):
        self.cfg = cfg
        self.progress = progress
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_precision(cfg.precision, self.device)
        if dataset is None:
            dataset = load_dataset(cfg.dataset, cfg.data_dir, frames=cfg.T, image_size=cfg.image_size,
                                   label_kind=cfg.label_kind, subset=cfg.subset, val_fraction=cfg.val_fraction)
        if dataset.val is None:
            raise ValueError("dataset has no validation split: read it with slt.data.load_dataset")
        self.info = dataset.info
        self.train_split = dataset.train.to(self.device)
        self.val_split = dataset.val.to(self.device)
        self.test_split = dataset.test.to(self.device)
        torch.manual_seed(cfg.seed)
        self.model = build_network(cfg, self.info).to(self.device)
        self.pipeline = BatchPipeline(self.info, self.device, image_size=cfg.image_size)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.phases = plan_phases(cfg)
        self.total_epochs = sum(phase.epochs for phase in self.phases)
        self.neuron_backend = None
        if cfg.spiking:
            self.neuron_backend = resolve_neuron_backend(cfg, self._neuron_steps)
            set_neuron_backend(self.model, self.neuron_backend)
        self.phase_index = 0
        self._new_optimizer(self.phases[0].epochs)
        self.epoch = 0  # epochs completed, over all phases
        self.history: list[dict] = []

    def _neuron_steps(self) -> float:
        """LIF outputs (neurons x time steps) per image, times the images the whole run passes: training
        (forward + backward) plus validation and test every epoch (forward only, about a third of the work)."""
        set_neuron_backend(self.model, "spikingjelly")  # counting must not compile the fused LIF
        raw, _ = next(iterate_batches(self.train_split, 1, shuffle=False))
        training = self.model.training
        self.model.eval()  # no BN statistics move
        with torch.no_grad(), FiringRates(self.model, LIF) as rates:
            self.model(self.pipeline(raw, augment=False))
            per_image = sum(count for _, count in rates.totals().values())
        functional.reset_net(self.model)
        self.model.train(training)
        images = len(self.train_split) + (len(self.val_split) + len(self.test_split)) / 3
        return per_image * images * self.total_epochs

    def _new_optimizer(self, epochs: int) -> None:
        self.optimizer = make_optimizer([p for p in self.model.parameters() if p.requires_grad], self.cfg)
        self.scheduler = make_scheduler(self.optimizer, self.cfg, epochs)

    def enter_phase(self, index: int) -> None:
        """Set the model up for phase `index`, entering every phase before it in order."""
        while self.phase_index < index:
            self.phase_index += 1
            phase = self.phases[self.phase_index]
            if phase.enter is not None:
                phase.enter(self.model)
            self._new_optimizer(phase.epochs)

    @property
    def phase(self) -> str:
        return self.phases[self.phase_index].name

    @property
    def done(self) -> bool:
        return self.epoch >= self.total_epochs

    def run_epoch(self) -> dict:
        """Train one epoch, step the schedule, evaluate; returns this epoch's metrics."""
        phase_end = sum(phase.epochs for phase in self.phases[:self.phase_index + 1])
        if self.epoch >= phase_end and self.phase_index + 1 < len(self.phases):
            self.enter_phase(self.phase_index + 1)
        lr = self.optimizer.param_groups[0]["lr"]
        train = train_epoch(self.model, self.train_split, self.pipeline, self.optimizer,
                            batch_size=self.cfg.batch_size, generator=self.generator,
                            augment=self.cfg.augment, progress=self.progress, dtype=self.dtype)
        self.scheduler.step()
        val = evaluate(self.model, self.val_split, self.pipeline, batch_size=self.cfg.batch_size,
                       progress=self.progress, desc="val", dtype=self.dtype)
        test = evaluate(self.model, self.test_split, self.pipeline, batch_size=self.cfg.batch_size,
                        progress=self.progress, dtype=self.dtype)
        self.epoch += 1
        metrics = {
            "epoch": self.epoch,
            "phase": self.phase,
            "lr": lr,
            "train_loss": train["loss"],
            "train_accuracy": train["accuracy"],
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "test_loss": test["loss"],
            "test_accuracy": test["accuracy"],
            "mean_firing_rate": val["mean_firing_rate"],
            "firing_rates": val["firing_rates"],
            "epoch_time_s": train["seconds"] + val["seconds"] + test["seconds"],
            "train_images_per_s": train["images_per_s"],
        }
        self.history.append(metrics)
        return metrics

    def data_description(self) -> dict:
        """What the run trained and was scored on: the dataset's name (with its subset), where it was read,
        a digest of the three splits' contents (sha256 of inputs and labels, 16 hex digits) and their sizes."""
        import hashlib

        digest = hashlib.sha256()
        for split in (self.train_split, self.val_split, self.test_split):
            digest.update(split.inputs.cpu().contiguous().numpy().tobytes())
            digest.update(split.labels.cpu().contiguous().numpy().tobytes())
        cfg = self.cfg
        name = cfg.dataset + (f"-{cfg.label_kind}" if cfg.dataset == "cifar100" else "")
        name += f" subset {cfg.subset}" if cfg.subset else ""
        name += f" {cfg.image_size}px" if cfg.image_size else ""
        return {"name": name, "source": cfg.data_dir or f"sklearn.datasets.load_{cfg.dataset}",
                "digest": digest.hexdigest()[:16], "train": len(self.train_split), "validation": len(self.val_split),
                "test": len(self.test_split)}

    def summary(self) -> dict:
        """Final figures of the run so far: validation and test accuracy (and the ticket's before later
        phases), sparsity, tokens."""
        last = self.history[-1]
        result = {
            "method": self.cfg.method,
            "time_steps": self.cfg.time_steps,
            "precision": "bf16" if self.dtype == torch.bfloat16 else "fp32",  # what `auto` resolved to
            "neuron_backend": self.neuron_backend,  # likewise (None: an ANN)
            "total_epochs": self.total_epochs,
            "params": count_parameters(self.model),
            "train_size": len(self.train_split),
            "val_size": len(self.val_split),
            "test_size": len(self.test_split),
            "val_accuracy": last["val_accuracy"],
            "val_loss": last["val_loss"],
            "test_accuracy": last["test_accuracy"],
            "test_loss": last["test_loss"],
            "train_accuracy": last["train_accuracy"],
            "mean_firing_rate": last["mean_firing_rate"],
            "firing_rates": last["firing_rates"],
        }
        method = self.cfg.method_info
        if method.ticket:
            searched = [h for h in self.history if h["phase"] == method.search_phase]
            if searched:
                result["ticket_val_accuracy"] = searched[-1]["val_accuracy"]
                result["ticket_test_accuracy"] = searched[-1]["test_accuracy"]
            result["p"] = self.cfg.p
            result["kept_fraction"] = 1.0 - self.cfg.p
            result["sparsity"] = sparsity_report(self.model)
        if method.patch_pruning:
            tokens = self.model.num_tokens
            result.update(q=self.cfg.q, tokens=tokens, tokens_kept=kept_tokens(tokens, self.cfg.q))
        return result

    def energy(self, batch: int = 256, **constants) -> dict:
        """Energy per image (slt.energy.measure_energy) on the first `batch` validation images (a Pareto
        search reads it, so it is measured where searchers may look)."""
        inputs = self.pipeline(self.val_split.inputs[:batch], augment=False)
        constants.setdefault("table", load_energy_table(self.cfg.energy_table))
        return measure_energy(self.model, inputs, spiking=self.cfg.spiking, T=self.cfg.time_steps, **constants)

    def state_dict(self) -> dict:
        return {
            "config": self.cfg.model_dump(),
            "epoch": self.epoch,
            "phase_index": self.phase_index,
            "history": self.history,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "generator": self.generator.get_state()},
        }

    def load_state_dict(self, state: dict) -> None:
        # checkpoints written before phases were a list said only whether fine-tuning had started
        self.enter_phase(state.get("phase_index", int(state.get("finetuning", False))))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["generator"])
        self.epoch = state["epoch"]
        self.history = list(state["history"])
