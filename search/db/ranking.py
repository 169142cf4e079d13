"""Rankings of trials: which are comparable, which is most robust, and by how much."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from space_defs import WRNConfig
from trainer.status import Status, standard_error

from .pareto import numeric_column
from .schema import SEARCH

GROUP = ("dataset", "budget", "method")  # trials are only compared within one of these


def roles(trials: pd.DataFrame) -> pd.Series:
    """Each trial's role, ``search`` or ``confirm`` (rows written before roles were: search)."""
    if "role" not in trials:
        return pd.Series(SEARCH, index=trials.index)
    return trials["role"].fillna(SEARCH)


def full_fidelity(df: pd.DataFrame) -> pd.DataFrame:
    """Trials trained to the full schedule, the one definition of "fully trained" (the summary,
    queries and the replay's table use it): ASHA-stopped and running ones are not comparable."""
    full = (df["status"] == Status.FINISHED) | (df["epochs_done"] >= df["epochs_planned"])
    return df[full.to_numpy(dtype=bool)]


NOISE_Z = 2.0  # a difference smaller than this many standard errors is "within noise"


def within_noise(diff: Any, se: Any) -> Any:
    """The one noise verdict: ``|diff| < NOISE_Z * se``, or no difference at all (elementwise
    for arrays; with an unknown standard error, NaN, only no difference is)."""
    diff = np.abs(np.asarray(diff, dtype=float))
    return (diff < NOISE_Z * np.asarray(se, dtype=float)) | (diff == 0)


@dataclass(frozen=True)
class Gap:
    """A difference ``a - b`` of two accuracies (fractions) and its standard error."""

    diff: float
    se: float

    @property
    def z(self) -> float:
        if self.se > 0:
            return self.diff / self.se
        return math.copysign(math.inf, self.diff) if self.diff else 0.0

    @property
    def verdict(self) -> str:
        if within_noise(self.diff, self.se):
            return "within noise"
        return "better" if self.diff > 0 else "worse"

    def describe(self, note: str = "") -> str:
        """'+2.0 points +- 1.2 (1 s.e.NOTE; within noise, z = 1.6)'."""
        if math.isnan(self.se):
            return f"{100 * self.diff:+.1f} points (noise unknown)"
        return (f"{100 * self.diff:+.1f} points +- {100 * self.se:.1f} (1 s.e.{note}; "
                f"{self.verdict}, z = {self.z:.1f})")


def top(df: pd.DataFrame, by: str = "val_robust_acc", n: int = 10, ascending: bool = False) -> pd.DataFrame:
    """The n trials with the largest (``ascending``: smallest) value of a numeric column."""
    column = numeric_column(df, by)
    return df.sort_values(column, ascending=ascending, na_position="last", kind="stable").head(n)


def most_robust(df: pd.DataFrame) -> pd.DataFrame:
    """Trials with a validation robust accuracy, most robust first; ties go to the higher clean
    accuracy, then to fewer parameters, then to the earlier trial id (so reruns agree)."""
    scored = df[df["best_val_robust_acc"].notna().to_numpy(dtype=bool)]
    return scored.sort_values(["best_val_robust_acc", "best_val_clean_acc", "params", "trial_id"],
                              ascending=[False, False, True, True], na_position="last", kind="stable")


@dataclass(frozen=True)
class Ranking:
    """The most robust trials of one (dataset, budget, method), best first, with the gap of
    every runner-up to the best in accuracy points and whether that gap is within noise."""

    dataset: str
    budget: int
    method: str
    n_trials: int
    table: pd.DataFrame  # trial rows plus se_pts, gap_pts, gap_z, within_noise


def best(df: pd.DataFrame, runners_up: int = 4) -> list[Ranking]:
    """Per (dataset, budget, method): the trial with the highest best_val_robust_acc and its
    runners-up. Pass full-fidelity trials (``full_fidelity``) for a fair comparison."""
    rankings = []
    for key, group in most_robust(df).groupby(list(GROUP), sort=True):
        ranked = group.head(runners_up + 1)
        acc = ranked["best_val_robust_acc"].to_numpy(dtype=float)
        se = standard_error(acc, ranked["val_size"].to_numpy(dtype=float, na_value=np.nan))
        gap_se = np.sqrt(se[0] ** 2 + se ** 2)
        table = ranked.assign(se_pts=100 * se, gap_pts=100 * (acc[0] - acc),
                              gap_z=(acc[0] - acc) / gap_se,
                              within_noise=within_noise(acc[0] - acc, gap_se))
        rankings.append(Ranking(str(key[0]), int(key[1]), str(key[2]), len(group), table))
    return rankings


def clean_images(df: pd.DataFrame) -> np.ndarray:
    """Images each trial's val_clean_* accuracies are measured on: the whole selection split
    (its dataset's validation split, or the test split where it was selected on test); NaN for
    a dataset this code does not know."""
    from trainer.datasets import DATASETS

    on = df["selected_on"].fillna("val") if "selected_on" in df else pd.Series("val", index=df.index)
    return np.array([np.nan if d not in DATASETS else
                     float(DATASETS[d].test_size if s == "test" else DATASETS[d].val_size)
                     for d, s in zip(df["dataset"], on)])


def val_errors(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(robust, clean): the binomial standard error of each trial's best_val_* accuracies."""
    robust = standard_error(df["best_val_robust_acc"].to_numpy(dtype=float),
                            df["val_size"].to_numpy(dtype=float, na_value=np.nan))
    return robust, standard_error(df["best_val_clean_acc"].to_numpy(dtype=float), clean_images(df))


def arch_label(df: pd.DataFrame) -> pd.Series:
    """Each trial's ``WRNConfig.label``, e.g. 'd5-5-5 c320-640-512'."""
    columns = [f"depth{i}" for i in (1, 2, 3)] + [f"channel{i}" for i in (1, 2, 3)]
    labels = [WRNConfig(depths=row[:3], channels=row[3:]).label
              for row in df[columns].itertuples(index=False)]
    return pd.Series(labels, index=df.index, dtype=str)
