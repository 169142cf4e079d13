"""python -m search.gridreport --storage data/digits-grid-60K: what a recorded grid says.

Per config, means over the training seeds of the selected epoch's validation robust and clean
accuracy and of the test PGD-20 and clean accuracy of its best.pt, ranked with ties shown as
ties; the noise, from a config + seed fit; then the paper's questions: does the most robust
config beat the uniform WRN of the same budget (on validation and on test, in standard errors
of the difference), and is its last stage narrower than its middle one (and, over the whole
grid, what a reduced last stage does on average); and what an early ASHA rung sees. Markdown on
stdout (docs/DIGITS_GRID.md holds its output for the shipped table).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from space_defs import WRNConfig, baselines, format_count, macs, param_count
from space_defs.cli import Parser, UsageError

from ..db.ranking import NOISE_Z, Gap
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
        spec = self.table.spec
        return baselines(spec.budget, space=spec.search_space(), max_macs=spec.max_macs,
                         tolerance=spec.tolerance)[0]

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
        return "\n".join(lines)

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


POINT = ("stage 1 blocks", "stage 2 blocks", "stage 3 blocks", "log2 k2/k1", "log2 k3/k2")


def grid_point(cfg: WRNConfig) -> tuple[float, ...]:
    """The grid coordinates of a config: its depths and its widen-factor ratios (log2, to the
    nearest half: a shape is kept within a few percent)."""
    k = cfg.widen_factors
    return (*map(float, cfg.depths), round(2 * math.log2(k[1] / k[0])) / 2,
            round(2 * math.log2(k[2] / k[1])) / 2)


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
