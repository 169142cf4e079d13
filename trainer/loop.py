"""``fit``: adversarially train one architecture, epoch by epoch, resumable from its checkpoint."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from space_defs.arch import WRNConfig

from . import checkpoint
from .attack_names import Attack
from .data import Split, load_splits, train_batches
from .datasets import DEFAULT_DATA_DIR, DatasetSpec, dataset_spec
from .ema import WeightEMA
from .evaluation import accuracy
from .methods import AttackBudget
from .models import build_model
from .recipe import Recipe
from .report import EpochReport, best_epoch
from .status import Status, catastrophic_overfit, diverged

CHECK_EVERY = 20  # SGD steps between NaN checks of the running loss (each check syncs a GPU)


@dataclass(frozen=True)
class FitResult:
    status: Status
    epochs_done: int
    final: EpochReport | None  # the last epoch (its val metrics and the epoch they reflect)
    best: EpochReport | None  # the selected epoch (Recipe.selected_by): best.pt's weights
    train_seconds: float  # totals over all epochs, across resumes
    eval_seconds: float
    device: str
    checkpoint_path: str | None  # checkpoint.pt (resumable state), None without checkpoint_dir
    best_model_path: str | None  # best.pt (weights of the best epoch)
    history: tuple[EpochReport, ...] = ()
    model: nn.Module | None = field(default=None, repr=False, compare=False)  # final eval weights


def fit(arch: WRNConfig, recipe: Recipe, dataset: str, *,
        report: Callable[[EpochReport], Any] | None = None,
        checkpoint_dir: str | Path | None = None, data_dir: str | Path = DEFAULT_DATA_DIR,
        device: torch.device | str | None = None) -> FitResult:
    """Train ``arch`` on ``dataset`` with ``recipe``, calling ``report`` after every epoch.

    The architecture must match the dataset's data shape (see ``trainer.datasets.adapt_arch``).
    With ``checkpoint_dir`` the full training state is written there atomically after every
    epoch, and a directory that already holds one (e.g. a copy restored by Ray Tune) is resumed
    from: the resumed run computes exactly what an uninterrupted one would (on CPU).
    """
    spec = dataset_spec(dataset)
    spec.check_arch(arch)
    recipe = recipe.for_dataset(spec)
    device = training_device(device)
    splits = load_splits(spec.name, data_dir=data_dir, device=device, select_on=recipe.select_on)
    train = splits.train.head(recipe.train_subset)
    if recipe.batch_size > len(train):
        raise ValueError(f"batch_size {recipe.batch_size} exceeds the {len(train)} training images "
                         f"of {spec.name}")
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    run = Run.start(arch, recipe, spec, device)
    note = ""
    if ckpt_dir is not None and (ckpt_dir / checkpoint.CHECKPOINT_FILE).is_file():
        try:
            state = checkpoint.load(ckpt_dir / checkpoint.CHECKPOINT_FILE)
        except Exception as e:  # noqa: BLE001 - truncated zip, bad pickle, wrong tensors...
            # A torn or corrupted checkpoint must not kill the trial on every retry: keep the
            # file for inspection and train from the start.
            corrupt = ckpt_dir / (checkpoint.CHECKPOINT_FILE + ".corrupt")
            os.replace(ckpt_dir / checkpoint.CHECKPOINT_FILE, corrupt)
            note = (f"checkpoint unreadable ({type(e).__name__}: {str(e)[:120]}); kept as "
                    f"{corrupt.name}, restarted from epoch 0")
        else:
            run.restore(state)
    elif ckpt_dir is not None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)

    while run.status == Status.RUNNING and run.epoch < recipe.epochs:
        epoch_report = run.epoch_step(train, splits.val, ckpt_dir)
        if note:
            epoch_report, note = dataclasses.replace(epoch_report, note=note), ""
        if report is not None:
            report(epoch_report)
    return run.result(ckpt_dir)


def training_device(device: torch.device | str | None = None) -> torch.device:
    """``device`` (default: CUDA when there is one) set up as fit() trains on it: cuDNN picks
    the fastest convolution for each shape (batches have one shape, so it pays once)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


@dataclass
class Run:
    """The mutable state of one training run; exactly what a checkpoint holds.

    ``fit`` drives it epoch by epoch; ``Run.start(...).train_epoch(split)`` alone is one
    epoch of SGD exactly as ``fit`` does it (``trainer.bench`` times that).
    """

    arch: WRNConfig
    recipe: Recipe
    spec: DatasetSpec
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.SGD
    ema: WeightEMA | None
    data_rng: torch.Generator  # data order and augmentation
    epoch: int = 0  # epochs done
    status: Status = Status.RUNNING
    history: list[EpochReport] = field(default_factory=list)

    @classmethod
    def start(cls, arch: WRNConfig, recipe: Recipe, spec: DatasetSpec, device: torch.device) -> Run:
        random.seed(recipe.seed)
        np.random.seed(recipe.seed)
        torch.manual_seed(recipe.seed)
        model = build_model(arch, mean=spec.mean, std=spec.std).to(device)
        if recipe.channels_last and device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                    weight_decay=recipe.weight_decay)
        ema = WeightEMA(model, recipe.ema_decay) if recipe.ema_decay is not None else None
        return cls(arch, recipe, spec, device, model, optimizer, ema,
                   torch.Generator().manual_seed(recipe.seed))

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.model

    def autocast(self) -> contextlib.AbstractContextManager:
        on_gpu = self.device.type == "cuda"
        if self.recipe.amp == "bf16" or (self.recipe.amp == "auto" and on_gpu):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def epoch_step(self, train: Split, val: Split, ckpt_dir: Path | None) -> EpochReport:
        lr = self.recipe.lr_at(self.epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        loss, clean_acc, adv_acc, images = self.train_epoch(train)
        t1 = synced_time(self.device)
        if diverged(loss, clean_acc, self.spec.data.num_classes):
            self.status = Status.DIVERGED
        if math.isfinite(loss):
            val_clean, val_robust = self.validate(val)
        else:
            val_clean = val_robust = 0.0  # the weights are not finite: nothing to measure
        t2 = synced_time(self.device)
        self.epoch += 1
        if self.status == Status.RUNNING:
            self.status = self.judge(val_robust, adv_acc)
        epoch_report = EpochReport(
            epoch=self.epoch, train_loss=loss, train_clean_acc=clean_acc, train_adv_acc=adv_acc,
            val_clean_acc=val_clean, val_robust_acc=val_robust, lr=lr, train_seconds=t1 - t0,
            eval_seconds=t2 - t1, images_per_s=images / (t1 - t0), epoch_seconds=t2 - t0,
            status=self.status, checkpoint_dir=str(ckpt_dir) if ckpt_dir is not None else None)
        self.history.append(epoch_report)
        if ckpt_dir is not None:
            self.save(ckpt_dir)
        return epoch_report

    def judge(self, val_robust: float, train_adv_acc: float) -> Status:
        past, r = self.history, self.recipe  # r.val_size: the images validate() attacked
        if r.trains_on_attack and catastrophic_overfit(
                [h.val_robust_acc for h in past] + [val_robust],
                [h.train_adv_acc for h in past] + [train_adv_acc],
                n=r.val_size, num_classes=self.spec.data.num_classes, drop=r.collapse_drop):
            return Status.CATASTROPHIC_OVERFIT
        return Status.FINISHED if self.epoch == self.recipe.epochs else Status.RUNNING

    def train_epoch(self, train: Split) -> tuple[float, float, float, int]:
        """(mean loss, clean accuracy, adversarial accuracy, images) of one epoch of SGD."""
        r = self.recipe
        method = r.training_method.loss
        budget = AttackBudget(eps=r.eps, step_size=r.step_size, steps=r.steps)
        model = self.model.train()
        totals = torch.zeros(3, device=self.device)  # loss sum, clean correct, adversarial correct
        images = 0
        for step, (x, y) in enumerate(train_batches(train, self.spec, batch_size=r.batch_size,
                                                    generator=self.data_rng), 1):
            if r.channels_last and self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with self.autocast():
                out = method(model, x, y, budget, r.beta)
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if r.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(model)
            totals += torch.stack([out.loss.detach().float() * len(y),
                                   (out.clean_logits.argmax(1) == y).sum(),
                                   (out.adv_logits.argmax(1) == y).sum()])
            images += len(y)
            if step % CHECK_EVERY == 0 and not torch.isfinite(totals[0]):
                break
        loss_sum, clean, adv = totals.tolist()
        return loss_sum / images, clean / images, adv / images, images

    def validate(self, val: Split) -> tuple[float, float]:
        """(clean accuracy on all of val, PGD accuracy on its fixed first ``val_size`` images)."""
        r = self.recipe
        model = self.eval_model
        with self.autocast():
            clean = accuracy(model, val, Attack("clean"), eps=r.eps, step_size=r.step_size)
            robust = accuracy(model, val.head(r.val_size), Attack("pgd", r.val_attack_steps),
                              eps=r.eps, step_size=r.val_step_size, seed=r.seed)
        return clean, robust

    def state(self) -> dict[str, Any]:
        return {
            "arch": self.arch.to_dict(), "recipe": self.recipe.to_dict(), "dataset": self.spec.name,
            "epoch": self.epoch, "status": self.status.value,
            "history": [_report_state(h) for h in self.history],
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.model.state_dict() if self.ema is not None else None,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                    "numpy": _numpy_state(), "python": random.getstate(),
                    "data": self.data_rng.get_state()},
        }

    def save(self, ckpt_dir: Path) -> None:
        state = self.state()
        checkpoint.save_atomic(state, ckpt_dir / checkpoint.CHECKPOINT_FILE)
        if self.best() is self.history[-1]:
            best = {k: state[k] for k in ("arch", "recipe", "dataset", "epoch")}
            best["model"] = checkpoint.eval_weights(state)
            checkpoint.save_atomic(best, ckpt_dir / checkpoint.BEST_FILE)

    def restore(self, state: dict[str, Any]) -> None:
        expected = {"arch": self.arch.to_dict(), "recipe": self.recipe.to_dict(), "dataset": self.spec.name}
        # a checkpoint written before a recipe field existed holds that field's default
        saved = {**state, "recipe": Recipe.from_dict(state["recipe"]).for_dataset(self.spec).to_dict()}
        wrong = [f"{k} {saved[k]!r}, not {v!r}" for k, v in expected.items() if saved[k] != v]
        if wrong:
            raise ValueError(f"the checkpoint directory holds a different run ({'; '.join(wrong)}); resume "
                             "with the same arch, recipe and dataset, or use an empty directory")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.model.load_state_dict(state["ema"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state((rng["numpy"][0], np.array(rng["numpy"][1], dtype=np.uint32), *rng["numpy"][2:]))
        random.setstate(rng["python"])
        self.data_rng.set_state(rng["data"])
        self.epoch, self.status = state["epoch"], Status(state["status"])
        self.history = [EpochReport(**h) for h in state["history"]]

    def best(self) -> EpochReport | None:
        """The selected epoch (``Recipe.selected_by``): its weights are best.pt."""
        return best_epoch(self.history, self.recipe.selected_by)

    def result(self, ckpt_dir: Path | None) -> FitResult:
        def path(name: str) -> str | None:
            return str(ckpt_dir / name) if ckpt_dir is not None and (ckpt_dir / name).is_file() else None

        return FitResult(
            status=self.status, epochs_done=self.epoch,
            final=self.history[-1] if self.history else None, best=self.best(),
            train_seconds=sum(h.train_seconds for h in self.history),
            eval_seconds=sum(h.eval_seconds for h in self.history),
            device=torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            checkpoint_path=path(checkpoint.CHECKPOINT_FILE), best_model_path=path(checkpoint.BEST_FILE),
            history=tuple(self.history), model=self.eval_model)


def _report_state(r: EpochReport) -> dict[str, Any]:
    """A report as plain values; the directory is not kept (a restored copy lives elsewhere)."""
    return {**dataclasses.asdict(r), "status": r.status.value, "checkpoint_dir": None}


def _numpy_state() -> tuple:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return kind, keys.tolist(), int(pos), int(has_gauss), float(cached)


def synced_time(device: torch.device) -> float:
    """``time.perf_counter()`` once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
