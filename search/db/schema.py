"""The trial database's one schema: a frozen dataclass per table, its fields' types and units.

The Parquet (pyarrow) schema of every table is derived from these dataclasses, so a column is
added, renamed or documented here and nowhere else (the epoch metrics: in trainer.report's
EpochReport; the statuses: in trainer.status). Bump ``SCHEMA_VERSION`` when a change is not a pure
addition of a nullable column.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pyarrow as pa

from trainer.report import FRACTION, METRICS, SECONDS, EpochReport
from trainer.status import Status

SCHEMA_VERSION = 1
METADATA_KEY = b"robust_arch_search"  # Parquet key-value metadata: {"schema_version", "table"}

UTC = "UTC"
SEARCH, CONFIRM = "search", "confirm"  # TrialRow.role: proposed by the sampler; a finalist's seed

_ARROW_TYPES = {
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    dt.datetime: pa.timestamp("us", tz="UTC"),
}


def col(unit: str = "", doc: str = "", **kw: Any) -> Any:
    """A column: a dataclass field carrying its unit and description into the Parquet schema."""
    return field(metadata={"unit": unit, "doc": doc}, **kw)


class _Row:
    """Normalises and checks a row at construction, so a bad value fails in the driver, not
    in a reader months later."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            base, nullable = column_type(type(self), f.name)
            value = getattr(self, f.name)
            if value is None or (nullable and isinstance(value, float) and math.isnan(value)):
                if not nullable:
                    raise ValueError(f"{type(self).__name__}.{f.name} is required, got {value!r}")
                object.__setattr__(self, f.name, None)
                continue
            object.__setattr__(self, f.name, _coerce(type(self).__name__, f.name, base, value))
            if f.metadata["unit"] == FRACTION and not (0.0 <= value <= 1.0 or math.isnan(value)):
                raise ValueError(f"{type(self).__name__}.{f.name} is a fraction in [0, 1], got {value!r}")

    @classmethod
    def from_record(cls, record: dict[str, Any]):
        """A row read back through pandas, which turns nulls into NaN/NaT and widens an
        integer column holding any null to float."""
        values = {}
        for f in dataclasses.fields(cls):
            value = record[f.name]
            if value is None or value != value:  # NaN, NaT
                value = None
            elif column_type(cls, f.name)[0] is int and isinstance(value, float) and value.is_integer():
                value = int(value)
            values[f.name] = value
        return cls(**values)


def _coerce(row: str, name: str, base: type, value: Any) -> Any:
    if base is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if base is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if base is str and isinstance(value, str):
        return value
    if base is dt.datetime and isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{row}.{name} must be timezone-aware (UTC), got naive {value!r}")
        return value.astimezone(dt.timezone.utc)
    raise TypeError(f"{row}.{name} must be {base.__name__}, got {type(value).__name__} {value!r}")


@dataclass(frozen=True, kw_only=True)
class TrialRow(_Row):
    """One trial of a sweep: its architecture, recipe, cost, outcome so far and provenance."""

    sweep: str = col(doc="sweep name (a directory under the storage root)")
    trial_id: str = col(doc="Ray Tune trial id, unique within the sweep")
    status: str = col(doc="one of " + ", ".join(Status) + " (trainer.status.Status)")
    space: str = col(doc="name of the search space the config was drawn from")
    depth1: int = col("blocks", "residual blocks in stage 1")
    depth2: int = col("blocks", "residual blocks in stage 2")
    depth3: int = col("blocks", "residual blocks in stage 3")
    channel1: int = col("channels", "output channels of stage 1")
    channel2: int = col("channels", "output channels of stage 2")
    channel3: int = col("channels", "output channels of stage 3")
    stem_channels: int = col("channels", "output channels of the stem conv")
    in_channels: int = col("channels", "image channels")
    num_classes: int = col("classes")
    input_size: int = col("pixels", "side of the square input image")
    params: int = col("parameters", "trainable parameters of the model")
    macs: int = col("MACs", "multiply-accumulates of one forward pass of one image")
    budget: int = col("parameters", "parameter budget the sweep searched under")
    dataset: str = col(doc="dataset name, e.g. cifar10")
    method: str = col(doc="adversarial training method, e.g. pgd_at, trades")
    epochs_planned: int = col("epochs", "length of the full training schedule")
    eps: float = col("fraction of pixel range", "L-inf training radius, e.g. 8/255")
    seed: int = col(doc="training seed of the trial (weights, data order, attacks)")
    role: str | None = col(doc="search: proposed by the sampler, one of --trials; confirm: a "
                               "finalist or the uniform baseline trained on another seed "
                               "(--confirm), not one of --trials; null in rows written before "
                               "it was recorded: search", default="search")
    baseline: str | None = col(doc="uniform: the config is the uniform WRN baseline of the "
                                   "budget (what --confirm compares with); else null",
                               default=None)
    recipe_json: str = col(doc="the whole training recipe as JSON")
    val_size: int | None = col("images", "images the val_robust_* accuracies are measured on "
                                          "(val_clean_*: the whole selection split)",
                               default=None)
    selected_on: str | None = col(doc="split the val_* columns and best.pt come from: 'val', "
                                      "held out of the training set, or 'test', the "
                                      "references' protocol (optimistic: selected on test "
                                      "data); null in rows written before it was recorded: "
                                      "'val'", default="val")
    epochs_done: int = col("epochs", "epochs trained so far", default=0)
    best_val_robust_acc: float | None = col(
        FRACTION, "validation robust accuracy of the selected epoch so far (best_val_robust_epoch)",
        default=None)
    best_val_robust_epoch: int | None = col(
        "epoch", "the selected epoch, whose weights are best.pt: the highest validation robust "
                 "accuracy (ties: clean), or for method standard the highest clean accuracy "
                 "(ties: robust); trainer.recipe.Recipe.selected_by", default=None)
    best_val_clean_acc: float | None = col(FRACTION, "validation clean accuracy at "
                                                     "best_val_robust_epoch", default=None)
    last_val_robust_acc: float | None = col(FRACTION, "validation robust accuracy at last_epoch",
                                            default=None)
    last_val_clean_acc: float | None = col(FRACTION, "validation clean accuracy at last_epoch",
                                           default=None)
    last_epoch: int | None = col("epoch", "last epoch with a validation result", default=None)
    train_seconds: float = col(SECONDS, "wall time spent training", default=0.0)
    eval_seconds: float = col(SECONDS, "wall time spent evaluating", default=0.0)
    gpu_hours: float = col("GPU-hours", "accelerator time charged to the trial", default=0.0)
    device_name: str | None = col(doc="accelerator name, e.g. NVIDIA H100", default=None)
    code_version: str | None = col(doc="git describe of the code that trained it", default=None)
    library_versions: str = col(doc="JSON object: library name -> version", default="{}")
    started_at: dt.datetime = col(UTC, "when the trial started")
    updated_at: dt.datetime = col(UTC, "when this row was produced")
    error: str | None = col(doc="error message of a failed trial", default=None)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.status not in _STATUS_VALUES:
            raise ValueError(f"TrialRow.status must be one of {', '.join(Status)}, got {self.status!r}")
        object.__setattr__(self, "status", str(self.status))  # a plain str, not the enum member


_STATUS_VALUES = frozenset(s.value for s in Status)


def _metric(name: str) -> tuple[str, Any, Any]:
    meta = next(f.metadata for f in dataclasses.fields(EpochReport) if f.name == name)
    return name, float | None, col(meta["unit"], meta["doc"], default=None)


EpochRow = dataclasses.make_dataclass(
    "EpochRow",
    [("sweep", str, col(doc="sweep name")),
     ("trial_id", str, col(doc="Ray Tune trial id")),
     ("epoch", int, col("epoch", "1-based epoch number")),
     *map(_metric, METRICS),  # null when the trial did not report it
     ("recorded_at", dt.datetime, col(UTC, "when this row was produced"))],
    bases=(_Row,), frozen=True, kw_only=True,
    namespace={"__module__": __name__,
               "__doc__": "One epoch of one trial: the learning curve (trainer.report.METRICS)."})


@dataclass(frozen=True, kw_only=True)
class EvalRow(_Row):
    """One final evaluation of one trial under one attack."""

    sweep: str = col(doc="sweep name")
    trial_id: str = col(doc="Ray Tune trial id")
    seed: int | None = col(doc="training seed of the trial evaluated (its trials row's)",
                           default=None)
    attack: str = col(doc="attack name, e.g. clean, pgd20, autoattack")
    split: str = col(doc="data split evaluated, e.g. test")
    accuracy: float = col(FRACTION, "accuracy under the attack")
    n_examples: int = col("images", "examples evaluated")
    seconds: float | None = col(SECONDS, "wall time of the trial's whole evaluation (all its "
                                         "attacks; the same in each of its rows)", default=None)
    recorded_at: dt.datetime = col(UTC, "when this row was produced")
    attack_seconds: float | None = col(SECONDS, "wall time of this attack alone (a cascade "
                                                "attack such as autoattack runs only on the "
                                                "points the attacks before it left)", default=None)
    eps: float | None = col("fraction of pixel range", "L-inf radius attacked at (the one the "
                                                       "model was trained at unless told)",
                            default=None)
    step_size: float | None = col("fraction of pixel range", "step of this attack (pgd, cw, "
                                  "fgsm; null for clean and autoattack, whose APGD adapts its "
                                  "own)", default=None)
    steps: int | None = col("iterations", "iterations of this attack (0 for clean; null for "
                                          "autoattack, a cascade of its own budgets)",
                            default=None)
    protocol: str | None = col(doc="evaluation protocol, one of trainer.protocols.PROTOCOLS "
                                   "(default, robustwrn); null in rows written before protocols "
                                   "were recorded, which ran the default", default="default")


@dataclass(frozen=True)
class Table:
    """A table of the database: its name (a directory), row type and primary key."""

    name: str
    row: type
    key: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.row))

    @property
    def schema(self) -> pa.Schema:
        return arrow_schema(self.row)

    def to_arrow(self, rows: typing.Sequence[Any]) -> pa.Table:
        return pa.Table.from_pydict({c: [getattr(r, c) for r in rows] for c in self.columns},
                                    schema=self.schema)


TRIALS = Table("trials", TrialRow, ("sweep", "trial_id"))
EPOCHS = Table("epochs", EpochRow, ("sweep", "trial_id", "epoch"))
EVALS = Table("evals", EvalRow, ("sweep", "trial_id", "attack", "split", "protocol"))
TABLES = {t.name: t for t in (TRIALS, EPOCHS, EVALS)}


@cache
def column_type(row: type, name: str) -> tuple[type, bool]:
    """(python base type, nullable) of a column, from the dataclass annotation."""
    hint = typing.get_type_hints(row)[name]
    if isinstance(hint, types.UnionType):
        args = [a for a in hint.__args__ if a is not type(None)]
        return args[0], len(args) < len(hint.__args__)
    return hint, False


@cache
def arrow_schema(row: type) -> pa.Schema:
    fields = []
    for f in dataclasses.fields(row):
        base, nullable = column_type(row, f.name)
        meta = {k: v for k, v in f.metadata.items() if v}
        fields.append(pa.field(f.name, _ARROW_TYPES[base], nullable=nullable, metadata=meta))
    return pa.schema(fields)


def file_metadata(table: Table) -> dict[bytes, bytes]:
    return {METADATA_KEY: json.dumps({"schema_version": SCHEMA_VERSION, "table": table.name}).encode()}

