"""One training/evaluation epoch and a run that strings epochs together; engine-agnostic.

Everything returns plain dicts of numbers so the CLI, a Ray Tune trainable or a notebook can use it.
"""

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import nn
from tqdm.auto import tqdm

from slt.config import TrainConfig
from slt.data import Dataset, DatasetInfo, Split, load_dataset
from slt.data.pipeline import BatchPipeline, iterate_batches
from slt.energy import measure_energy
from slt.firing import FiringRates
from slt.models import build_model
from slt.models.neurons import LIF
from slt.tickets import make_ticket, sparsity_report, start_finetune


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from slt.errors import InputError

        raise InputError("device", "cuda was asked for but no CUDA device is available; allowed here: auto, cpu")
    return torch.device(name)


def _run_batches(model: nn.Module, split: Split, pipeline: BatchPipeline, *, batch_size: int, train: bool,
                 optimizer: torch.optim.Optimizer | None = None, generator: torch.Generator | None = None,
                 augment: bool = False, desc: str = "", progress: bool = False) -> dict[str, Any]:
    """The one loop behind train_epoch and evaluate."""
    model.train(train)
    total_loss, correct, seen = 0.0, 0, 0
    started = time.perf_counter()
    with FiringRates(model, LIF) as rates, torch.set_grad_enabled(train):
        bar = tqdm(iterate_batches(split, batch_size, shuffle=train, generator=generator),
                   total=math.ceil(len(split) / batch_size), desc=desc, leave=False,
                   disable=None if progress else True)  # None: only on a terminal
        for raw, labels in bar:
            inputs = pipeline(raw, augment=augment, generator=generator)
            logits = model(inputs)
            loss = F.cross_entropy(logits, labels)
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
        "firing_rates": firing,
        "mean_firing_rate": sum(firing.values()) / len(firing) if firing else None,
        "seconds": seconds,
        "images_per_s": seen / seconds,
    }


def train_epoch(model: nn.Module, split: Split, pipeline: BatchPipeline, optimizer: torch.optim.Optimizer, *,
                batch_size: int, generator: torch.Generator, augment: bool = True, progress: bool = False) -> dict:
    """One pass over `split` in random order with augmentation; returns loss, accuracy, firing rates, timing."""
    return _run_batches(model, split, pipeline, batch_size=batch_size, train=True, optimizer=optimizer,
                        generator=generator, augment=augment, desc="train", progress=progress)


def evaluate(model: nn.Module, split: Split, pipeline: BatchPipeline, *, batch_size: int,
             progress: bool = False) -> dict:
    """Loss, accuracy and firing rates on `split` without augmentation or gradients."""
    return _run_batches(model, split, pipeline, batch_size=batch_size, train=False, desc="test", progress=progress)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, epochs: int):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def build_network(cfg: TrainConfig, info: DatasetInfo) -> nn.Module:
    """The model a config asks for: SNN or ANN twin, dense or turned into a ticket."""
    image_size = cfg.image_size if (info.is_event and cfg.image_size) else info.image_size
    model = build_model(cfg.model, num_classes=info.num_classes, in_channels=info.in_channels,
                        image_size=image_size, spiking=cfg.spiking, T=cfg.time_steps, decay=cfg.decay,
                        width=cfg.width, **({"pool": cfg.pool} if cfg.model == "vgg9" else {}))
    method = cfg.method_info
    if method.ticket:
        make_ticket(model, method.ticket, cfg.p, weight_init=cfg.weight_init, dense_first=cfg.dense_first,
                    dense_last=cfg.dense_last, global_threshold=cfg.global_threshold,
                    binary_activations=method.binary_activations)
    return model


class TrainingRun:
    """Model, optimiser, schedule, data and RNG of one run; `run_epoch()` advances it by one epoch.

    Dense methods train for `epochs`. Ticket methods search the mask for `epochs` ("search" phase),
    then, with `finetune_epochs`, freeze the mask and train the kept weights ("finetune" phase).
    `state_dict()` holds everything needed to continue bit-for-bit after a restart.
    """

    def __init__(self, cfg: TrainConfig, dataset: Dataset | None = None, *, progress: bool = False):
        self.cfg = cfg
        self.progress = progress
        self.device = resolve_device(cfg.device)
        if dataset is None:
            dataset = load_dataset(cfg.dataset, cfg.data_dir, frames=cfg.T, image_size=cfg.image_size,
                                   label_kind=cfg.label_kind, subset=cfg.subset)
        self.info = dataset.info
        self.train_split = dataset.train.to(self.device)
        self.test_split = dataset.test.to(self.device)
        torch.manual_seed(cfg.seed)
        self.model = build_network(cfg, self.info).to(self.device)
        self.pipeline = BatchPipeline(self.info, self.device, image_size=cfg.image_size)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.finetune_epochs = cfg.finetune_epochs if cfg.is_ticket else 0
        self.total_epochs = cfg.epochs + self.finetune_epochs
        self.finetuning = False
        self._new_optimizer(cfg.epochs)
        self.epoch = 0  # epochs completed, over both phases
        self.history: list[dict] = []

    def _new_optimizer(self, epochs: int) -> None:
        self.optimizer = make_optimizer([p for p in self.model.parameters() if p.requires_grad], self.cfg)
        self.scheduler = make_scheduler(self.optimizer, self.cfg, epochs)

    def _start_finetune(self) -> None:
        start_finetune(self.model)
        self.finetuning = True
        self._new_optimizer(self.finetune_epochs)

    @property
    def phase(self) -> str:
        if self.finetuning:
            return "finetune"
        return "search" if self.cfg.is_ticket else "train"

    @property
    def done(self) -> bool:
        return self.epoch >= self.total_epochs

    def run_epoch(self) -> dict:
        """Train one epoch, step the schedule, evaluate; returns this epoch's metrics."""
        if self.epoch == self.cfg.epochs and self.finetune_epochs and not self.finetuning:
            self._start_finetune()
        lr = self.optimizer.param_groups[0]["lr"]
        train = train_epoch(self.model, self.train_split, self.pipeline, self.optimizer,
                            batch_size=self.cfg.batch_size, generator=self.generator,
                            augment=self.cfg.augment, progress=self.progress)
        self.scheduler.step()
        test = evaluate(self.model, self.test_split, self.pipeline, batch_size=self.cfg.batch_size,
                        progress=self.progress)
        self.epoch += 1
        metrics = {
            "epoch": self.epoch,
            "phase": self.phase,
            "lr": lr,
            "train_loss": train["loss"],
            "train_accuracy": train["accuracy"],
            "test_loss": test["loss"],
            "test_accuracy": test["accuracy"],
            "mean_firing_rate": test["mean_firing_rate"],
            "firing_rates": test["firing_rates"],
            "epoch_time_s": train["seconds"] + test["seconds"],
            "train_images_per_s": train["images_per_s"],
        }
        self.history.append(metrics)
        return metrics

    def summary(self) -> dict:
        """Final figures of the run so far: accuracy (and the ticket's before fine-tuning), sparsity."""
        last = self.history[-1]
        result = {
            "method": self.cfg.method,
            "time_steps": self.cfg.time_steps,
            "test_accuracy": last["test_accuracy"],
            "test_loss": last["test_loss"],
            "train_accuracy": last["train_accuracy"],
            "mean_firing_rate": last["mean_firing_rate"],
            "firing_rates": last["firing_rates"],
        }
        if self.cfg.is_ticket:
            searched = [h for h in self.history if h["phase"] == "search"]
            if searched:
                result["ticket_test_accuracy"] = searched[-1]["test_accuracy"]
            result["p"] = self.cfg.p
            result["kept_fraction"] = 1.0 - self.cfg.p
            result["sparsity"] = sparsity_report(self.model)
        return result

    def energy(self, batch: int = 256, **constants) -> dict:
        """Energy per image (slt.energy.measure_energy) on the first `batch` test images."""
        inputs = self.pipeline(self.test_split.inputs[:batch], augment=False)
        return measure_energy(self.model, inputs, spiking=self.cfg.spiking, T=self.cfg.time_steps, **constants)

    def state_dict(self) -> dict:
        return {
            "config": self.cfg.model_dump(),
            "epoch": self.epoch,
            "finetuning": self.finetuning,
            "history": self.history,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "generator": self.generator.get_state()},
        }

    def load_state_dict(self, state: dict) -> None:
        if state["finetuning"] and not self.finetuning:
            self._start_finetune()
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["generator"])
        self.epoch = state["epoch"]
        self.history = list(state["history"])
