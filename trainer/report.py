"""What ``fit`` reports after every epoch (torch-free: the sweep's driver reads it too).

Each field carries its unit and meaning (``field.metadata["unit"]``, ``["doc"]``), so the
database's epoch table can be derived from it; ``METRICS`` is the one list of per-epoch metrics.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .status import Status

FRACTION = "fraction in [0, 1]"
SECONDS = "s"


def _col(unit: str, doc: str, **kw: Any) -> Any:
    return dataclasses.field(metadata={"unit": unit, "doc": doc}, **kw)


@dataclass(frozen=True)
class EpochReport:
    epoch: int = _col("epoch", "1-based epoch number")
    train_loss: float = _col("", "mean training objective over the epoch")
    train_clean_acc: float = _col(FRACTION, "training accuracy on clean inputs")
    train_adv_acc: float = _col(FRACTION, "training accuracy on the training attack's examples "
                                          "(= clean for method 'standard')")
    val_clean_acc: float = _col(FRACTION, "clean accuracy on the whole validation split")
    val_robust_acc: float = _col(FRACTION, "PGD accuracy on the recipe's fixed validation subset")
    lr: float = _col("", "SGD learning rate of the epoch")
    train_seconds: float = _col(SECONDS, "wall time of the training epoch")
    eval_seconds: float = _col(SECONDS, "wall time of the validation")
    images_per_s: float = _col("images/s", "training throughput")
    epoch_seconds: float = _col(SECONDS, "training plus validation (not the checkpoint write)")
    status: Status = _col("", "the run's status after this epoch")
    checkpoint_dir: str | None = _col("", "holds the checkpoint written after this epoch",
                                      default=None)
    note: str = _col("", "something the user should know, e.g. an unreadable checkpoint was "
                         "skipped", default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))  # a checkpoint holds plain str

    def metrics(self) -> dict[str, float]:
        """The epoch and every metric as plain floats (flat names, as Tune and Parquet want them)."""
        return {"epoch": float(self.epoch), **{m: float(getattr(self, m)) for m in METRICS}}


METRICS: tuple[str, ...] = tuple(name for name, kind in typing.get_type_hints(EpochReport).items()
                                 if kind is float)


R = TypeVar("R", EpochReport, Mapping)


def best_epoch(epochs: Iterable[R], selected_by: Sequence[str]) -> R | None:
    """Model selection: the first epoch with the highest ``selected_by`` metrics (compared in
    order; ``Recipe.selected_by`` gives them), skipping diverged epochs. ``epochs`` are
    EpochReports or mappings of metric names to values (e.g. the sweep driver's results), so
    the trainer's best.pt and the database's best columns follow this one rule."""
    def value(e: R, name: str) -> Any:
        return e[name] if isinstance(e, Mapping) else getattr(e, name)

    def key(e: R) -> tuple[float, ...]:
        values = (value(e, m) for m in selected_by)  # a missing value (None, NaN) never wins
        return tuple(-math.inf if v is None or math.isnan(v) else float(v) for v in values)

    healthy = [e for e in epochs if not isinstance(e, EpochReport) or e.status != Status.DIVERGED]
    return max(healthy, key=key, default=None)
