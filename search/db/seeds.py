"""A sweep's confirmed answer (``--confirm``): each confirmed config's score over its training
seeds, the paired difference of two configs over the seeds they share, and what that says.

The standard errors are over seeds, floored at the binomial noise of the images measured: with
two or three seeds the seeds' own spread is itself a noisy estimate, and it cannot be truly
smaller than the noise of the measurement it is made of. The verdict is the project's one
(search.db.ranking.within_noise).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import pandas as pd

from trainer.status import standard_error

from .ranking import Gap, clean_images, full_fidelity, most_robust, roles
from .schema import CONFIRM, SEARCH

VAL, VAL_CLEAN = "val robust", "val clean"


@dataclass(frozen=True)
class SeedScores:
    """One config's accuracy on each seed it was trained on, each measured on ``images``."""

    arch: str
    scores: tuple[tuple[int, float], ...]  # (seed, accuracy), by seed
    images: float  # images each accuracy is measured on (NaN: unknown)

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def values(self) -> list[float]:
        return [v for _, v in self.scores]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def se(self) -> float:
        """Standard error of the mean over seeds, at least the images' binomial noise."""
        return _seed_se(self.values, float(standard_error(self.mean, self.images)))

    def describe(self) -> str:
        """'80.5% +- 1.1 (seeds 0: 81.0, 1: 80.0)'."""
        seeds = ", ".join(f"{s}: {100 * v:.1f}" for s, v in self.scores)
        return f"{100 * self.mean:.1f}% +- {100 * self.se:.1f} (seeds {seeds})"


def paired_gap(a: SeedScores, b: SeedScores) -> Gap:
    """``a - b`` over the seeds both have: seed s of every config shares its data order and
    validation attack draws, so the pairs' differences cancel what the seed does to both."""
    b_of = dict(b.scores)
    diffs = [v - b_of[s] for s, v in a.scores if s in b_of]
    if not diffs:
        return Gap(math.nan, math.nan)
    floor = math.hypot(float(standard_error(a.mean, a.images)), float(standard_error(b.mean, b.images)))
    return Gap(statistics.fmean(diffs), _seed_se(diffs, floor))


def _seed_se(values: list[float], one_run_se: float) -> float:
    n = len(values)
    spread = statistics.stdev(values) / math.sqrt(n) if n > 1 else math.nan
    floor = one_run_se / math.sqrt(n)
    return floor if math.isnan(spread) else max(spread, floor)


@dataclass(frozen=True)
class Confirmation:
    """The confirmed configs of one sweep, by measure: ``VAL`` (the selected epoch's validation
    robust accuracy) and each test attack of the final evaluation."""

    scores: dict[str, dict[str, SeedScores]]  # measure -> arch -> its seeds
    single_run_best: str  # the search's argmax over single runs
    uniform: str | None  # the uniform baseline's arch, when it was confirmed
    missing: tuple[str, ...] = field(default=())  # confirmation runs without a full result

    @property
    def ranked(self) -> list[SeedScores]:
        """Confirmed configs by mean validation score, best first (ties: more seeds, then arch)."""
        return sorted(self.scores[VAL].values(), key=lambda s: (-s.mean, -s.n, s.arch))

    @property
    def best(self) -> SeedScores:
        return self.ranked[0]

    def describe(self) -> list[str]:
        ranked = self.ranked
        seeds = sorted({s for c in ranked for s, _ in c.scores})
        lines = [f"confirmed on seeds {', '.join(map(str, seeds))}: mean +- 1 s.e. over seeds (at "
                 "least the images' binomial noise)"]
        for measure, by_arch in self.scores.items():
            lines.append(f"  {_named(measure)}:")
            lines += [f"    {a}{' (uniform)' * (a == self.uniform)}: {by_arch[a].describe()}"
                      for a in (c.arch for c in ranked) if a in by_arch]
        lines += [f"  not confirmed: {m}" for m in self.missing]
        best = ranked[0]
        lines.append(f"answer: {best.arch}, the best mean val robust over {best.n} seeds")
        if best.arch != self.single_run_best:
            lines.append(f"  not the search's single-run best, {self.single_run_best}: on more "
                         "seeds it is behind")
        other = best if best.arch != self.uniform else next(iter(ranked[1:]), None)
        if self.uniform is None or other is None:
            lines.append("  no uniform baseline confirmed to compare with" if self.uniform is None
                         else "  the answer is the uniform baseline itself, the only config confirmed")
            return lines
        name = "answer"
        if other is not best:
            lines.append(f"  the answer is the uniform baseline itself; the runner-up: {other.arch}")
            name = "runner-up"
        for measure, by_arch in self.scores.items():
            if other.arch in by_arch and self.uniform in by_arch:
                a, u = by_arch[other.arch], by_arch[self.uniform]
                gap = paired_gap(a, u)
                lines.append(f"  {name} - uniform, {_named(measure)}, "
                             f"paired over {len(set(dict(a.scores)) & set(dict(u.scores)))} seeds: "
                             f"{gap.describe()}")
                if measure == VAL and gap.verdict == "within noise":
                    lines.append(f"  so these seeds do not tell {other.arch} and the uniform "
                                 "baseline apart on validation robust accuracy")
        return lines


def _named(measure: str) -> str:
    return measure if measure in (VAL, VAL_CLEAN) else f"test {measure}"


def confirmation(trials: pd.DataFrame, evals: pd.DataFrame | None = None) -> Confirmation | None:
    """The confirmed answer of one sweep's trials (with an ``arch`` column; evals: its final
    evaluations), None when nothing was confirmed."""
    role = roles(trials)
    confirmed = set(trials.loc[role == CONFIRM, "arch"])
    if not confirmed:
        return None
    search = most_robust(full_fidelity(trials[role == SEARCH]))
    runs = most_robust(full_fidelity(trials[trials["arch"].isin(confirmed)]))
    runs = runs.drop_duplicates(["arch", "seed"])
    missing = trials[(role == CONFIRM) & ~trials["trial_id"].isin(runs["trial_id"])]
    scores = {VAL: _by_arch(runs, "best_val_robust_acc", runs["val_size"]),
              VAL_CLEAN: _by_arch(runs, "best_val_clean_acc", pd.Series(clean_images(runs), runs.index))}
    if evals is not None and len(evals):
        tested = evals.drop(columns="seed", errors="ignore").merge(
            runs[["trial_id", "arch", "seed"]], on="trial_id")
        protocol = tested["protocol"].fillna("default")
        tested = tested.assign(measure=tested["attack"].where(protocol == "default",
                                                              tested["attack"] + " (" + protocol + ")"))
        for measure, rows in tested.groupby("measure", sort=False):
            scores[measure] = _by_arch(rows, "accuracy", rows["n_examples"])
    uniform = trials.loc[trials["baseline"] == "uniform", "arch"] if "baseline" in trials else []
    return Confirmation(
        scores, single_run_best=search.iloc[0]["arch"] if len(search) else "-",
        uniform=next((u for u in uniform if u in confirmed), None),
        missing=tuple(f"{r.arch} seed {int(r.seed)}: {r.status.replace('_', ' ')} after "
                      f"{int(r.epochs_done or 0)} epochs" for r in missing.itertuples()))


def _by_arch(rows: pd.DataFrame, column: str, images: pd.Series) -> dict[str, SeedScores]:
    rows = rows.assign(_images=images.astype(float)).sort_values("seed")
    return {arch: SeedScores(arch, tuple((int(s), float(v)) for s, v in zip(g["seed"], g[column])),
                             float(g["_images"].iloc[0]))
            for arch, g in rows.groupby("arch", sort=False)}
