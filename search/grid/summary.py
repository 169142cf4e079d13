"""What the replays of each strategy add up to: simulated hours until the incumbent is within
noise of the table's best, and until it is the best itself, as medians over replays with their
quartiles and a 95% interval for the median (the replays' own spread: a strategy's median moves
that much by chance alone); events.parquet, summary.parquet and regret.png."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from space_defs import WRNConfig

from .stats import median_interval
from .table import HOUR, Table

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Event:
    """A trial of a replay, in the order it ran."""

    index: int
    arch: WRNConfig
    curve_seed: int
    epochs: int
    seconds: float  # simulated seconds of the epochs it consumed
    hours: float  # simulated compute when it ended: every earlier trial's and its own
    incumbent: WRNConfig | None
    regret: float  # table best's score minus the incumbent's (none yet: minus the worst config's)



def hours_to(run: Sequence[Event], hit) -> float | None:
    """Simulated hours until ``hit(incumbent)`` (e.g. ``table.near_best``); None: never."""
    return next((e.hours for e in run if e.incumbent is not None and hit(e.incumbent)), None)


def summarise(table: Table, runs: dict[str, list[list[Event]]]) -> pd.DataFrame:
    """A row per strategy: for each target (``near``: within noise of the best; ``best``: one
    of the configs tied for the best), how many replays reached it, and the median, quartiles
    and 95% interval of the median of the simulated hours until they did (a replay that never
    did counts as never, inf, not as left out)."""
    import pandas as pd

    grid_hours = table.grid_seconds / HOUR
    targets = {"near": table.near_best, "best": lambda cfg: cfg in table.top}
    rows = []
    for name, seeds in runs.items():
        row = dict(strategy=name, replays=len(seeds),
                   median_trials=statistics.median([float(len(run)) for run in seeds]))
        for target, hit in targets.items():
            hours = [math.inf if h is None else h for h in (hours_to(run, hit) for run in seeds)]
            low, high = median_interval(hours)
            row.update({f"{target}_reached": sum(h < math.inf for h in hours),
                        f"{target}_median_hours": statistics.median(hours),
                        f"{target}_q25_hours": _quantile(hours, 0.25),
                        f"{target}_q75_hours": _quantile(hours, 0.75),
                        f"{target}_ci_low_hours": low, f"{target}_ci_high_hours": high,
                        f"{target}_median_of_grid": statistics.median(hours) / grid_hours})
        rows.append(row)
    return pd.DataFrame(rows)


def _quantile(values: list[float], q: float) -> float:
    """Nearest rank (never reached: inf)."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def write_results(table: Table, runs: dict[str, list[list[Event]]], out: Path) -> pd.DataFrame:
    """events.parquet (every trial of every replay), summary.parquet (a row per strategy) and
    regret.png; returns the summary."""
    import pandas as pd

    from trainer.atomic import atomic_path

    from ..db.plots import regret_curves

    rows = [dict(strategy=name, seed=seed, index=e.index, arch=e.arch.label, curve_seed=e.curve_seed,
                 epochs=e.epochs, seconds=e.seconds, hours=e.hours,
                 incumbent=e.incumbent.label if e.incumbent else None, regret=e.regret,
                 near_best=e.incumbent is not None and table.near_best(e.incumbent))
            for name, seeds in runs.items() for seed, run in enumerate(seeds) for e in run]
    summary = summarise(table, runs)
    out.mkdir(parents=True, exist_ok=True)
    for name, df in (("events.parquet", pd.DataFrame(rows)), ("summary.parquet", summary)):
        with atomic_path(out / name) as tmp:
            df.to_parquet(tmp, index=False)
    regret_curves(pd.DataFrame(rows), out / "regret.png", grid_hours=table.grid_seconds / HOUR)
    return summary


def render(table: Table, summary: pd.DataFrame) -> str:
    """The summary as text: per target, the median simulated hours, its share of the grid's
    compute, the 95% interval of the median, the quartiles and the replays that reached it."""
    lines = [f"simulated hours until the incumbent is within noise of the best / is the best "
             f"(median over replays, its 95% interval, quartiles; the whole grid costs "
             f"{table.grid_seconds / HOUR:.2f} h):",
             f"{'strategy':<13}{'within noise':>13}{'of grid':>8}{'95% CI':>12}{'25-75%':>12}"
             f"{'reached':>8}{'the best':>10}{'of grid':>8}{'95% CI':>12}{'25-75%':>12}"
             f"{'reached':>8}{'trials':>7}"]
    for r in summary.to_dict("records"):
        cells = []
        for target, width in (("near", 13), ("best", 10)):
            median, low, high, q25, q75 = (r[f"{target}_{k}_hours"] for k in
                                           ("median", "ci_low", "ci_high", "q25", "q75"))
            reached = f"{r[f'{target}_reached']}/{r['replays']}"
            cells.append(f"{median:>{width}.3f}{r[f'{target}_median_of_grid']:>8.0%}"
                         f"{low:>6.3f}-{high:<5.3f}{q25:>6.3f}-{q75:<5.3f}{reached:>8}")
        lines.append(f"{r['strategy']:<13}{''.join(cells)}{r['median_trials']:>7.0f}")
    return "\n".join(lines)
