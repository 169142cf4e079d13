"""python -m search.gridreport --storage data/digits-grid-60K: what a recorded grid says.

Per config, means over the training seeds of the selected epoch's validation robust and clean
accuracy and of the test PGD-20 and clean accuracy of its best.pt, ranked with ties shown as
ties; the noise, from a config + seed fit; then the paper's questions: does the most robust
config beat the uniform WRN of the same budget (on validation and on test, in standard errors
of the difference), and is its last stage narrower than its middle one (and, over the whole
grid, what a reduced last stage does on average); what an early ASHA rung sees; and whether a
one-seed sweep's pick, and its top few confirmed on the other seed, is the best by the seeds'
mean, on the grid and on simulated smaller sweeps. Markdown on stdout (docs/DIGITS_GRID.md
holds its output for the shipped table).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from space_defs import WRNConfig, format_count, macs, param_count
from space_defs.cli import Parser, UsageError

from ..db.ranking import NOISE_Z, Gap, within_noise
from .stats import SeedFit, expected_max, pearson, rank_label, spearman
from .table import Table


@dataclass(frozen=True)
class Measure:
    """One quantity of one config: its value per training seed, in the order of the seeds."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)


@dataclass(frozen=True)
class Grid:
    table: Table
    val_robust: dict[WRNConfig, Measure]
    val_clean: dict[WRNConfig, Measure]
    test: dict[str, dict[WRNConfig, Measure]]  # attack -> config -> per seed

    @classmethod
    def load(cls, storage: str, sweeps: Sequence[str] | None = None) -> Grid:
        from ..db import list_sweeps, load_evals, load_trials

        table = Table.load(storage, sweeps)
        sweeps = list(sweeps or list_sweeps(storage))
        trials = load_trials(storage, sweeps).set_index(["sweep", "trial_id"])
        test: dict[str, dict[WRNConfig, dict[int, float]]] = {}
        for e in load_evals(storage, sweeps).to_dict("records"):
            trial = trials.loc[(e["sweep"], e["trial_id"])].to_dict()
            per_seed = test.setdefault(e["attack"], {}).setdefault(WRNConfig.from_dict(trial), {})
            per_seed[int(trial["seed"])] = e["accuracy"]
        curves = table.curves
        return cls(table, {k: Measure(tuple(c.best for c in v)) for k, v in curves.items()},
                   {k: Measure(tuple(c.selected[1] for c in v)) for k, v in curves.items()},
                   {a: {k: Measure(tuple(v[s] for s in sorted(v))) for k, v in per.items()}
                    for a, per in test.items()})

    @property
    def uniform(self) -> WRNConfig:
        return self.table.spec.uniform_baseline()

    @cached_property
    def seed_ids(self) -> tuple[int, ...]:
        return tuple(c.seed for c in next(iter(self.table.curves.values())))

    @staticmethod
    def fit(measures: dict[WRNConfig, Measure]) -> SeedFit | None:
        """The config + seed fit of a measure every config has for every seed."""
        if len({len(m.values) for m in measures.values()}) != 1:
            return None
        return SeedFit.of([m.values for m in measures.values()])

    def noise(self, measures: dict[WRNConfig, Measure]) -> float:
        """Standard error of a difference of two config means, from the config + seed fit."""
        fit = self.fit(measures)
        return math.nan if fit is None else fit.diff_se

    def compare(self, measures: dict[WRNConfig, Measure], a: WRNConfig, b: WRNConfig) -> str:
        """``a`` minus ``b`` in points, its standard error, z and the verdict."""
        if a not in measures or b not in measures:
            return "not measured"
        return Gap(measures[a].mean - measures[b].mean, self.noise(measures)).describe()

    def seed_offsets(self, measures: dict[WRNConfig, Measure]) -> str:
        """'seed 0 minus seed 1: +0.86 points, t = 2.8' for each seed after the first."""
        fit = self.fit(measures)
        if fit is None or fit.seeds < 2:
            return "one seed: no offset measured"
        parts = []
        for j in range(1, fit.seeds):
            diff, t = fit.seed_contrast(j)
            parts.append(f"seed {self.seed_ids[0]} minus seed {self.seed_ids[j]}: "
                         f"{100 * diff:+.2f} points, t = {t:.1f}")
        return "; ".join(parts)

    def render(self) -> str:
        t, spec = self.table, self.table.spec
        pgd = self.test.get("pgd20", {})
        clean = self.test.get("clean", {})
        ranked, uniform, n = t.ranked, self.uniform, len(t.curves)
        lines = [f"Grid {spec.name.rsplit('-s', 1)[0]}: {n} configs x {t.seeds} "
                 f"training seeds, {spec.recipe.method} on {spec.dataset}, budget "
                 f"{format_count(spec.budget)} params, {spec.recipe.epochs} epochs, validation "
                 f"PGD-{spec.recipe.val_attack_steps} on {spec.recipe.val_size} images, test "
                 f"PGD-20 on the test split; accuracies in % (mean over seeds, the seeds' "
                 "values in brackets); configs with equal validation robust means share a rank.",
                 "",
                 "| rank | depths | channels | widen factors | params | MACs | val robust | "
                 "val clean | test PGD-20 | test clean |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for cfg in ranked:
            marks = " (uniform WRN)" if cfg == uniform else ""
            lines.append(
                f"| {rank_label(*t.ranks[cfg])} | {'-'.join(map(str, cfg.depths))}{marks} | "
                f"{'-'.join(map(str, cfg.channels))} | {_widen(cfg)} | "
                f"{format_count(param_count(cfg))} | {format_count(macs(cfg))} | "
                f"{_cell(self.val_robust.get(cfg))} | {_cell(self.val_clean.get(cfg))} | "
                f"{_cell(pgd.get(cfg))} | {_cell(clean.get(cfg))} |")
        top = t.top
        fit = t.fit
        average = statistics.fmean(map(t.score, ranked))
        lines += [
            "", f"Noise, from a config + seed fit (a score = the config's effect + the training "
            f"seed's, shared by every config of that seed, + the rest): the seeds' offsets are "
            f"{self.seed_offsets(self.val_robust)} on validation robust accuracy (the validation "
            f"PGD's random start is drawn from the training seed) and "
            f"{self.seed_offsets(pgd)} on test PGD-20; the rest gives the standard error of a "
            f"difference of two config means: {100 * self.noise(self.val_robust):.1f} points "
            f"on validation robust accuracy and {100 * self.noise(pgd):.1f} on test PGD-20. "
            f"A difference under {NOISE_Z:g} of them is within noise.", "",
            f"- The most robust on validation: {_names(top)}"
            f"{', tied' if len(top) > 1 else ''} at {100 * t.score(top[0]):.2f}% "
            f"(rank {rank_label(*t.ranks[top[0]])}); the uniform WRN of the same budget: "
            f"{uniform.label}, {100 * t.score(uniform):.2f}%, rank "
            f"{rank_label(*t.ranks[uniform])} of {n}.",
            f"- The best is the largest of {n} noisy means: were all {n} configs equally robust, "
            f"the largest mean would still lie {100 * expected_max(n) * fit.mean_se:.1f} points "
            f"({expected_max(n):.2f} standard errors of a mean) above their average of "
            f"{100 * average:.1f}%; the best lies {100 * (t.score(top[0]) - average):.1f} points "
            f"above it. Its lead is in part selection (winner's curse): a rerun would likely "
            f"score it lower.",
            f"- Within noise of the best on validation: {sum(map(t.near_best, ranked))} of the "
            f"{n} configs.",
        ]
        for best in top:
            for what, measures in (("validation robust", self.val_robust), ("test PGD-20", pgd),
                                   ("test clean", clean)):
                lines.append(f"- {best.label} minus uniform, {what}: "
                             f"{self.compare(measures, best, uniform)}.")
        for best in top:
            k = best.widen_factors
            lines.append(f"- {best.label}'s last stage is "
                         f"{'narrower' if k[2] < k[1] else 'not narrower'} than its middle one "
                         f"(widen factor {k[2]:.2g} vs {k[1]:.2g}).")
        narrower = [c for c in ranked if grid_point(c)[4] < 0]
        wider = [c for c in ranked if c not in narrower]
        rung = spec.grace_epochs
        early = [c.robust[rung - 1] for cfg in ranked for c in t.curves[cfg]]
        final = [c.best for cfg in ranked for c in t.curves[cfg]]
        lines += [
            f"- Over the grid, the {len(narrower)} configs whose last stage is narrower than the "
            f"middle one (k3 about k2 / 2) average {_avg(self.val_robust, narrower)} validation "
            f"robust and {_avg(pgd, narrower)} test PGD-20; the other {len(wider)}: "
            f"{_avg(self.val_robust, wider)} and {_avg(pgd, wider)}.",
            f"- Validation and test agree loosely across configs: the correlation of the config "
            f"means of validation robust and test PGD-20 accuracy is "
            f"{pearson([self.val_robust[c].mean for c in ranked], [pgd[c].mean for c in ranked]):.2f}."
            if pgd else "- No test PGD-20 recorded.",
            f"- What ASHA's first rung sees (epoch {rung}, its grace period at the sweep's "
            f"defaults): the rank correlation of the {len(early)} single trials' validation robust "
            f"accuracy at epoch {rung} with their final score (the selected epoch's) is "
            f"{spearman(early, final):.2f}; of the config means at epoch {rung} and at the end, "
            f"{spearman(_means(early, t.seeds), _means(final, t.seeds)):.2f}; of the seeds' "
            f"final scores, config by config, {self._seed_rank_correlation()}.",
            f"- Cost: {self._seed_cost()}; the replay's clock charges each epoch of a config the "
            f"median over its seeds of the recorded seconds.",
            "", "Each choice of the grid on its own: the configs' means at each value, averaged "
            "over the rest of the grid (+- the s.e. of that average, from the configs' spread):",
            "", "| choice | value | configs | val robust | test PGD-20 |", "|---|---|---|---|---|"]
        for i, name in enumerate(POINT):
            for value in sorted({grid_point(c)[i] for c in ranked}):
                cfgs = [c for c in ranked if grid_point(c)[i] == value]
                lines.append(f"| {name} | {value:g} | {len(cfgs)} | {_avg(self.val_robust, cfgs)} | "
                             f"{_avg(pgd, cfgs)} |")
        return "\n".join(lines + self._confirming())

    def _confirming(self, configs: int = 8, draws: int = 2000, top: int = 3) -> list[str]:
        """Is a one-seed sweep's argmax, or the best by the mean of its ``top`` confirmed on the
        other seed, the best by the seeds' mean: on the grid, and over ``draws`` random sub-sweeps
        of ``configs`` of its configs."""
        t, n = self.table, len(self.table.curves)
        if t.seeds < 2 or n <= configs:
            return []
        other = "the other seed" if t.seeds == 2 else "the other seeds"
        orders = [seed_ranking(t, j) for j in range(t.seeds)]
        lines = ["", "### Confirming the single-seed argmax", "",
                 f"A sweep of one seed picks its most robust config (ties to the higher clean "
                 f"accuracy, then to fewer parameters, as search.db.ranking orders a sweep); is "
                 f"that, or the best by the seeds' mean of its top {top} confirmed on {other}, "
                 f"the best by the mean, or within noise of it (less than {NOISE_Z:g} x "
                 f"{100 * t.noise:.1f} points below it, the noise above)?", ""]
        for j, (seed, order) in enumerate(zip(self.seed_ids, orders)):
            top_score = t.curves[order[0]][j].best
            tied = [c for c in order if t.curves[c][j].best == top_score]
            lines.append(
                f"- Seed {seed} alone: its most robust {_list(tied)} "
                f"{'tie ' if len(tied) > 1 else ''}at {100 * top_score:.2f}%"
                f"{f' ({tied[0].label} first)' if len(tied) > 1 else ''}; by the mean "
                f"{'they rank' if len(tied) > 1 else 'it ranks'} "
                f"{', '.join(rank_label(*t.ranks[c]) for c in tied)} of {n}: "
                f"{sum(map(t.near_best, tied))} of {len(tied)} within noise of the best.")
        lines.append(f"- The single-seed argmax (a tie's first) is within noise of the best by the "
                     f"mean for {sum(t.near_best(o[0]) for o in orders)} of {t.seeds} seeds, the "
                     f"best itself for {sum(t.ranks[o[0]][0] == 1 for o in orders)}.")
        for seed, order in zip(self.seed_ids, orders):
            shortlist = order[:top]
            pick = min(shortlist, key=t.ranked.index)
            lines.append(
                f"- Seed {seed}'s top {top} ({_list(shortlist)}) confirmed on {other}: the best of "
                f"them by the mean is {pick.label}, rank {rank_label(*t.ranks[pick])}: "
                f"{'the best' if t.ranks[pick][0] == 1 else 'not the best'} of all {n}; the best "
                f"minus it: {Gap(t.score(t.best) - t.score(pick), t.noise).describe()}.")
        lines += [
            f"- With {t.seeds} seeds this is partly circular: the confirmed score and the best it "
            f"is judged against are means over the same seeds, so it measures how often "
            f"confirmation recovers the {t.seeds}-seed answer, not the truth.", "",
            f"Simulated smaller sweeps: {draws} random sub-sweeps of {configs} of the {n} configs "
            f"(numpy seed 0; the same sub-sweeps for each seed), each judged against its own best "
            f"by the seeds' mean with the grid's noise; % of the sub-sweeps +- the binomial s.e. "
            f"of the simulation:", "",
            f"| one seed | its argmax: the best | within noise | its top {top} confirmed: the "
            f"best | within noise |", "|---|---|---|---|---|"]
        rank = [t.ranks[c][0] for c in t.ranked]
        mean = [t.score(c) for c in t.ranked]
        for seed, order in zip(self.seed_ids, orders):
            found = sub_sweeps([order.index(c) for c in t.ranked], rank, mean, t.noise,
                               configs=configs, draws=draws, top=top).mean(axis=0)
            lines.append(f"| seed {seed} | " + " | ".join(
                f"{100 * p:.1f}% +- {100 * math.sqrt(p * (1 - p) / draws):.1f}" for p in found)
                + " |")
        return lines

    def _seed_rank_correlation(self) -> str:
        if len(self.seed_ids) < 2:
            return "not measured (one seed)"
        curves = self.table.curves.values()
        return ", ".join(f"{spearman([c[0].best for c in curves], [c[j].best for c in curves]):.2f}"
                         for j in range(1, len(self.seed_ids)))

    def _seed_cost(self) -> str:
        """How the seeds' recorded seconds of the same configs compare."""
        if len(self.seed_ids) < 2:
            return "one seed"
        curves = self.table.curves.values()
        return "; ".join(
            f"seed {self.seed_ids[0]}'s epochs took "
            f"{statistics.median(sum(c[0].seconds) / sum(c[j].seconds) for c in curves):.2f}x "
            f"seed {self.seed_ids[j]}'s (median over the configs: the same configs, under other "
            f"load on the machine)" for j in range(1, len(self.seed_ids)))


def seed_ranking(table: Table, j: int) -> list[WRNConfig]:
    """The configs as a sweep of the ``j``-th seed alone ranks them: by its validation robust
    accuracy, ties to the higher clean accuracy, then to fewer parameters (the order of
    search.db.ranking.most_robust)."""
    return sorted(table.ranked, key=lambda c: (*table.curves[c][j].selected, -param_count(c)),
                  reverse=True)


def sub_sweeps(place: Sequence[int], rank: Sequence[int], mean: Sequence[float], noise: float, *,
               configs: int = 8, draws: int = 2000, top: int = 3, seed: int = 0) -> np.ndarray:
    """Per random sub-sweep of ``configs`` of a grid's configs (``draws`` of them): whether one
    seed's argmax is the sub-sweep's best by the seeds' mean, whether it is within noise of
    that best, whether the best by the mean of the seed's ``top`` is the best, and whether it is
    within noise. Per config: ``place``, its place in the seed's ranking (0 first, ties broken);
    ``rank``, its rank by the mean (tied configs share it); ``mean``, its mean."""
    place, rank, mean = np.asarray(place), np.asarray(rank), np.asarray(mean, dtype=float)
    rng = np.random.default_rng(seed)
    found = np.empty((draws, 4), dtype=bool)
    for d in range(draws):
        sub = rng.choice(len(place), configs, replace=False)
        shortlist = sub[np.argsort(place[sub])[:top]]
        best, argmax = sub[np.argmin(rank[sub])], shortlist[0]
        confirmed = shortlist[np.argmin(rank[shortlist])]
        found[d] = (rank[argmax] == rank[best], within_noise(mean[best] - mean[argmax], noise),
                    rank[confirmed] == rank[best],
                    within_noise(mean[best] - mean[confirmed], noise))
    return found


POINT = ("stage 1 blocks", "stage 2 blocks", "stage 3 blocks", "log2 k2/k1", "log2 k3/k2")


def grid_point(cfg: WRNConfig) -> tuple[float, ...]:
    """The grid coordinates of a config: its depths and its widen-factor ratios (log2, to the
    nearest half: a shape is kept within a few percent)."""
    k = cfg.widen_factors
    return (*map(float, cfg.depths), round(2 * math.log2(k[1] / k[0])) / 2,
            round(2 * math.log2(k[2] / k[1])) / 2)


def _list(cfgs: Sequence[WRNConfig]) -> str:
    labels = [c.label for c in cfgs]
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"


def _widen(cfg: WRNConfig) -> str:
    return "-".join(f"{w:.2g}" for w in cfg.widen_factors)


def _names(cfgs: Sequence[WRNConfig]) -> str:
    return " and ".join(f"{c.label} (widen factors {_widen(c)})" for c in cfgs)


def _means(values: list[float], per: int) -> list[float]:
    """Means of consecutive groups of ``per`` values (a config's seeds)."""
    return [statistics.fmean(values[i:i + per]) for i in range(0, len(values), per)]


def _cell(m: Measure | None) -> str:
    if m is None:
        return "-"
    return f"{100 * m.mean:.2f} [{', '.join(f'{100 * v:.1f}' for v in m.values)}]"


def _avg(measures: dict[WRNConfig, Measure], cfgs: list[WRNConfig]) -> str:
    """Mean over configs and its standard error (the configs' spread: it includes the seeds')."""
    values = [measures[c].mean for c in cfgs if c in measures]
    if len(values) < 2:
        return "-"
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values))
    return f"{100 * mean:.1f}% +- {100 * se:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m search.gridreport", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--storage", required=True, help="storage root of the recorded grid sweeps")
    p.add_argument("--sweeps", help="comma-separated (default: every sweep under --storage)")
    args = p.parse_args(argv)
    try:
        grid = Grid.load(args.storage, args.sweeps.split(",") if args.sweeps else None)
    except (UsageError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(grid.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
