"""The training recipe: every knob of one adversarial training run, with its unit.

Defaults are RobustWRN's (Huang et al., NeurIPS 2021, its configs/*.yaml): SGD 0.1 / 0.9 /
2e-4, lr x0.1 at 75% and x0.01 at 90% of the epochs, gradient norm clipped at 5, 10-step PGD
with eps 8/255 and step 2/255 on CIFAR, TRADES beta 6, batch 128, random crop and flip. Where
ours differs from that code (docs/EVALUATION.md lists it): model selection on a held-out
validation split of the training set (45,000 CIFAR images trained on) instead of on the test
split (50,000 trained on; ``select_on="test"`` reproduces that), and the input normalisation
inside the model (the references feed [0, 1] images to the first convolution).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from space_defs.cli import option

from .datasets import DatasetSpec
from .method_names import METHODS, Method

SELECTIONS = ("val", "test")
SCHEDULES = ("piecewise", "cosine")
AMP_DTYPES = ("auto", "bf16", "none")


@dataclass(frozen=True)
class Recipe:
    method: str = option("trades", help=" | ".join(f"{m.name}: {m.help}" for m in METHODS.values()))
    epochs: int = option(100, help="epochs of the full schedule")
    batch_size: int = option(128, help="images per SGD step")
    lr: float = option(0.1, help="initial SGD learning rate")
    momentum: float = option(0.9, help="SGD momentum")
    weight_decay: float = option(2e-4, help="L2 penalty on all parameters; 5e-4 is the other "
                                             "common choice")
    schedule: str = option("piecewise", help="piecewise: lr x0.1 at 75% and x0.01 at 90% of "
                                               "the epochs | cosine")
    grad_clip: float | None = option(5.0, help="max global L2 norm of the gradient; none = no "
                                                 "clipping")
    eps: float | None = option(None, help="L-inf training radius in [0, 1] pixel units, e.g. "
                                            "8/255; none = the dataset's")
    step_size: float | None = option(None, help="PGD step in [0, 1] pixel units; none = the "
                                                  "dataset's")
    steps: int = option(10, help="PGD iterations per training batch")
    beta: float = option(6.0, help="TRADES / MART robustness weight (unused by pgd_at)")
    val_attack_steps: int = option(10, help="PGD iterations of the per-epoch validation attack")
    val_step_size: float | None = option(None, help="its step in [0, 1] pixel units; none = the "
                                                     "training step, or eps/4 when training is "
                                                     "single-step (whose step of eps or more "
                                                     "would make PGD a weak attack)")
    val_size: int | None = option(None, help="validation images attacked each epoch, the "
                                              "split's first N; none = all of it")
    ema_decay: float | None = option(None, help="weight EMA decay per SGD step, e.g. 0.999; "
                                                  "none = no EMA")
    amp: str = option("auto", help="auto: bf16 autocast on GPU, fp32 on CPU | bf16 | none")
    # Never on CPU: torch 2.14.1's CPU conv backward corrupts the heap in channels_last for
    # some narrow stages (4 channels), killing the process.
    channels_last: bool = option(True, help="NHWC memory format on GPU (tensor cores)")
    collapse_drop: float = option(0.5, help="relative fall of val PGD accuracy from its best "
                                              "that, beyond the validation noise and with rising "
                                              "training accuracy, counts as catastrophic "
                                              "overfitting (trainer.status)")
    select_on: str = option("val", help="val: pick the best epoch on a validation split held "
                                         "out of the training set | test: the references' "
                                         "protocol, train on the whole training set and pick on "
                                         "the test split (its test numbers are then optimistic)")
    train_subset: int | None = option(None, help="train on only the first N images of the "
                                                  "training split (a smoke test or a pilot); "
                                                  "none = all of it")
    seed: int = option(0, help="seeds the weights, data order, augmentation and attacks")

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"Recipe: {what}")

        need(isinstance(self.method, str) and self.method in METHODS,
             f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        need(self.schedule in SCHEDULES,
             f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        need(self.amp in AMP_DTYPES, f"amp must be one of {', '.join(AMP_DTYPES)}, got {self.amp!r}")
        need(self.select_on in SELECTIONS,
             f"select_on must be one of {', '.join(SELECTIONS)}, got {self.select_on!r}")
        for name in ("epochs", "batch_size", "steps", "val_attack_steps", "val_size", "train_subset"):
            value = getattr(self, name)
            need((value is None and name in ("val_size", "train_subset"))
                 or (isinstance(value, int) and not isinstance(value, bool) and value >= 1),
                 f"{name} must be a positive integer, got {value!r}")
        need(_finite(self.lr) and self.lr > 0, f"lr must be a positive number, got {self.lr!r}")
        need(_finite(self.momentum) and 0 <= self.momentum < 1,
             f"momentum must be in [0, 1), got {self.momentum!r}")
        need(_finite(self.weight_decay) and self.weight_decay >= 0,
             f"weight_decay must be >= 0, got {self.weight_decay!r}")
        need(self.grad_clip is None or (_finite(self.grad_clip) and self.grad_clip > 0),
             f"grad_clip must be positive or None, got {self.grad_clip!r}")
        for name in ("eps", "step_size", "val_step_size"):
            value = getattr(self, name)
            need(value is None or (_finite(value) and 0 < value <= 1),
                 f"{name} must be in (0, 1] (pixel units; 8/255 = {8 / 255:.4f}) or None, got {value!r}")
        need(_finite(self.beta) and self.beta >= 0, f"beta must be >= 0, got {self.beta!r}")
        need(self.ema_decay is None or (_finite(self.ema_decay) and 0 < self.ema_decay < 1),
             f"ema_decay must be in (0, 1) or None, got {self.ema_decay!r}")
        need(_finite(self.collapse_drop) and 0 < self.collapse_drop <= 1,
             f"collapse_drop must be in (0, 1], got {self.collapse_drop!r}")
        need(isinstance(self.seed, int) and not isinstance(self.seed, bool),
             f"seed must be an integer, got {self.seed!r}")

    def for_dataset(self, spec: DatasetSpec) -> Recipe:
        """This recipe with eps, step sizes and the validation images attacked filled in from the
        dataset where left as None (``val_size``: all of the selection split, at most that), so
        that a saved recipe says what a run really did."""
        selection = self.selection_images(spec)
        eps = spec.eps if self.eps is None else self.eps
        step = spec.step_size if self.step_size is None else self.step_size
        val_step = self.val_step_size or (step if self.steps > 1 else eps / 4)
        return dataclasses.replace(
            self, eps=eps, step_size=step, val_step_size=val_step,
            val_size=selection if self.val_size is None else min(self.val_size, selection))

    def selection_images(self, spec: DatasetSpec) -> int:
        """Images of the split the best epoch is chosen on: the held-out validation split, or
        the test split with ``select_on="test"``."""
        return spec.val_size if self.select_on == "val" else spec.test_size

    def training_images(self, spec: DatasetSpec) -> int:
        """Images of the training split (less the validation hold-out unless selecting on the
        test split), at most ``train_subset``."""
        pool = spec.train_size - (spec.val_size if self.select_on == "val" else 0)
        return pool if self.train_subset is None else min(self.train_subset, pool)

    @property
    def training_method(self) -> Method:
        """The method's entry (trainer.method_names): its function, cost and selection rule."""
        return METHODS[self.method]

    @property
    def trains_on_attack(self) -> bool:
        """Whether training examples are adversarial (every method but ``standard``)."""
        return self.training_method.trains_on_attack

    @property
    def selected_by(self) -> tuple[str, ...]:
        """Model selection: the per-epoch metrics (``EpochReport`` fields), most important first,
        whose highest values pick the best epoch (its weights are best.pt; the database's best_*
        columns describe it); each method's entry says them. Robust methods by validation robust
        accuracy, then clean; the non-robust ``standard`` by clean accuracy, then robust (its PGD
        accuracy is ~0 noise, which would select a half-trained early epoch). See
        ``trainer.report.best_epoch``."""
        return self.training_method.selected_by

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``."""
        if self.schedule == "cosine":
            return 0.5 * self.lr * (1 + math.cos(math.pi * epoch / self.epochs))
        return self.lr * (0.01 if epoch >= 0.9 * self.epochs else 0.1 if epoch >= 0.75 * self.epochs else 1.0)

    def to_dict(self) -> dict[str, Any]:
        """Flat dict of plain values (for Tune configs and Parquet rows)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, flat: dict[str, Any]) -> Recipe:
        """Inverse of ``to_dict``; extra keys are ignored so a whole trial row can be passed."""
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name in flat:
                value = _plain(flat[f.name])
                if f.type == "int" and isinstance(value, float) and value.is_integer():
                    value = int(value)
                kw[f.name] = value
        return cls(**kw)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _plain(value: Any) -> Any:
    """numpy scalars to python; NaN (how Parquet float columns hold None) to None."""
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value
