"""Rankings of trials: which are comparable, which is most robust, and by how much."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trainer.status import Status

from .pareto import numeric_column

GROUP = ("dataset", "budget", "method")  # trials are only compared within one of these


def full_fidelity(df: pd.DataFrame) -> pd.DataFrame:
    """Trials trained to the full schedule: ASHA-stopped and running ones are not comparable."""
    full = (df["status"] == Status.FINISHED) | (df["epochs_done"] >= df["epochs_planned"])
    return df[full.to_numpy(dtype=bool)]


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


def standard_error(acc: Any, n: Any) -> Any:
    """Binomial standard error sqrt(p (1 - p) / n) of an accuracy measured on n examples."""
    acc = np.asarray(acc, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(acc * (1 - acc) / n)


@dataclass(frozen=True)
class Ranking:
    """The most robust trials of one (dataset, budget, method), best first, with the gap of
    every runner-up to the best in accuracy points and whether that gap is within noise."""

    dataset: str
    budget: int
    method: str
    n_trials: int
    table: pd.DataFrame  # trial rows plus se_pts, gap_pts, gap_z


def best(df: pd.DataFrame, runners_up: int = 4) -> list[Ranking]:
    """Per (dataset, budget, method): the trial with the highest best_val_robust_acc and its
    runners-up. Pass full-fidelity trials (``full_fidelity``) for a fair comparison."""
    rankings = []
    for key, group in most_robust(df).groupby(list(GROUP), sort=True):
        ranked = group.head(runners_up + 1)
        acc = ranked["best_val_robust_acc"].to_numpy(dtype=float)
        se = standard_error(acc, ranked["val_size"].to_numpy(dtype=float, na_value=np.nan))
        table = ranked.assign(se_pts=100 * se, gap_pts=100 * (acc[0] - acc),
                              gap_z=(acc[0] - acc) / np.sqrt(se[0] ** 2 + se ** 2))
        rankings.append(Ranking(str(key[0]), int(key[1]), str(key[2]), len(group), table))
    return rankings


def arch_label(df: pd.DataFrame) -> pd.Series:
    """'d5-5-5 c320-640-512': blocks and channels per stage (the form search.run accepts)."""
    def joined(prefix: str) -> pd.Series:
        return df[f"{prefix}1"].astype(str) + "-" + df[f"{prefix}2"].astype(str) + "-" + df[f"{prefix}3"].astype(str)

    return ("d" + joined("depth") + " c" + joined("channel")).astype(str)
