"""python -m search.gridreport --storage data/digits-grid-60K: what a recorded grid says.

Per config, means over the training seeds of the selected epoch's validation robust and clean
accuracy and of the test PGD-20 and clean accuracy of its best.pt; then the paper's questions:
does the most robust config beat the uniform WRN of the same budget (on validation and on test,
in standard errors of the difference, from the seeds' pooled spread), and is its last stage
narrower than its middle one (and, over the whole grid, what a reduced last stage does on
average). Markdown on stdout (docs/DIGITS_GRID.md holds its output for the shipped table).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from space_defs import WRNConfig, baselines, format_count, macs, param_count
from space_defs.cli import Parser, UsageError

from .replay import Table, label, pooled_se


@dataclass(frozen=True)
class Measure:
    """One quantity of one config: its value per training seed."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)


def noise(measures: dict[WRNConfig, Measure]) -> float:
    """Standard error of a difference of two config means, from every config's seed spread."""
    return pooled_se([m.values for m in measures.values()])


@dataclass(frozen=True)
class Grid:
    table: Table
    val_robust: dict[WRNConfig, Measure]
    val_clean: dict[WRNConfig, Measure]
    test: dict[str, dict[WRNConfig, Measure]]  # attack -> config -> per seed

    @classmethod
    def load(cls, storage: str, sweeps: Sequence[str] | None = None) -> Grid:
        from .db import list_sweeps, load_evals, load_trials

        table = Table.load(storage, sweeps)
        sweeps = list(sweeps or list_sweeps(storage))
        best_clean = {k: Measure(tuple(c.selected[1] for c in v)) for k, v in table.curves.items()}
        trials = load_trials(storage, sweeps).set_index(["sweep", "trial_id"])
        test: dict[str, dict[WRNConfig, list[float]]] = {}
        for e in load_evals(storage, sweeps).to_dict("records"):
            cfg = WRNConfig.from_dict(trials.loc[(e["sweep"], e["trial_id"])].to_dict())
            test.setdefault(e["attack"], {}).setdefault(cfg, []).append(e["accuracy"])
        return cls(table, {k: Measure(tuple(c.best for c in v)) for k, v in table.curves.items()},
                   best_clean, {a: {k: Measure(tuple(v)) for k, v in per.items()}
                                for a, per in test.items()})

    @property
    def uniform(self) -> WRNConfig:
        spec = self.table.spec
        return baselines(spec.budget, space=spec.search_space(), max_macs=spec.max_macs,
                         tolerance=spec.tolerance)[0]

    def compare(self, measures: dict[WRNConfig, Measure], a: WRNConfig, b: WRNConfig) -> str:
        """``a`` minus ``b`` in points, its standard error, z and the verdict."""
        if a not in measures or b not in measures:
            return "not measured"
        diff = measures[a].mean - measures[b].mean
        se = noise(measures)
        z = diff / se if se > 0 else math.nan
        if math.isnan(z):
            return f"{100 * diff:+.1f} points (noise unknown: one seed)"
        verdict = "within noise" if abs(z) < 2 else ("better" if z > 0 else "worse")
        return f"{100 * diff:+.1f} points +- {100 * se:.1f} (1 s.e.; z = {z:.1f}, {verdict})"

    def render(self) -> str:
        t, spec = self.table, self.table.spec
        pgd = self.test.get("pgd20", {})
        clean = self.test.get("clean", {})
        ranked = sorted(t.curves, key=t.rank_key, reverse=True)
        lines = [f"Grid {spec.name.rsplit('-s', 1)[0]}: {len(t.curves)} configs x {t.seeds} "
                 f"training seeds, {spec.recipe.method} on {spec.dataset}, budget "
                 f"{format_count(spec.budget)} params, {spec.recipe.epochs} epochs, validation "
                 f"PGD-{spec.recipe.val_attack_steps} on {spec.recipe.val_size} images, test "
                 f"PGD-20 on the test split; accuracies in % (mean over seeds, the seeds' "
                 "values in brackets).", "",
                 "| rank | depths | channels | widen factors | params | MACs | val robust | "
                 "val clean | test PGD-20 | test clean |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for i, cfg in enumerate(ranked, 1):
            k = "-".join(f"{w:.2g}" for w in cfg.widen_factors)
            marks = " (uniform WRN)" if cfg == self.uniform else ""
            lines.append(
                f"| {i} | {'-'.join(map(str, cfg.depths))}{marks} | {'-'.join(map(str, cfg.channels))} "
                f"| {k} | {format_count(param_count(cfg))} | {format_count(macs(cfg))} | "
                f"{_cell(self.val_robust.get(cfg))} | {_cell(self.val_clean.get(cfg))} | "
                f"{_cell(pgd.get(cfg))} | {_cell(clean.get(cfg))} |")
        best, uniform = ranked[0], self.uniform
        k = best.widen_factors
        narrower = [c for c in t.curves if grid_point(c)[4] < 0]
        wider = [c for c in t.curves if c not in narrower]
        lines += [
            "", f"Noise: the standard error of a difference of two config means is "
            f"{100 * noise(self.val_robust):.1f} points on validation robust "
            f"accuracy and {100 * noise(pgd):.1f} on test PGD-20 (pooled over "
            f"all {len(t.curves)} configs' seeds).", "",
            f"- The most robust on validation: {label(best)} (widen factors "
            f"{'-'.join(f'{w:.2g}' for w in k)}); the uniform WRN of the same budget: "
            f"{label(uniform)}, rank {ranked.index(uniform) + 1} of {len(ranked)}.",
            f"- Best minus uniform, validation robust: {self.compare(self.val_robust, best, uniform)}.",
            f"- Best minus uniform, test PGD-20: {self.compare(pgd, best, uniform)}.",
            f"- Best minus uniform, test clean: {self.compare(clean, best, uniform)}.",
            f"- Its last stage is {'narrower' if k[2] < k[1] else 'not narrower'} than its middle "
            f"one (widen factor {k[2]:.2g} vs {k[1]:.2g}).",
            f"- Over the grid, the {len(narrower)} configs whose last stage is narrower than the "
            f"middle one (k3 about k2 / 2) average {_avg(self.val_robust, narrower)} validation "
            f"robust and {_avg(pgd, narrower)} test PGD-20; the other {len(wider)}: "
            f"{_avg(self.val_robust, wider)} and {_avg(pgd, wider)}.", "",
            "Each choice of the grid on its own: the configs' means at each value, averaged over "
            "the rest of the grid (+- the s.e. of that average, from the configs' spread):", "",
            "| choice | value | configs | val robust | test PGD-20 |", "|---|---|---|---|---|"]
        for i, name in enumerate(POINT):
            for value in sorted({grid_point(c)[i] for c in t.curves}):
                cfgs = [c for c in t.curves if grid_point(c)[i] == value]
                lines.append(f"| {name} | {value:g} | {len(cfgs)} | {_avg(self.val_robust, cfgs)} | "
                             f"{_avg(pgd, cfgs)} |")
        return "\n".join(lines)


POINT = ("stage 1 blocks", "stage 2 blocks", "stage 3 blocks", "log2 k2/k1", "log2 k3/k2")


def grid_point(cfg: WRNConfig) -> tuple[float, ...]:
    """The grid coordinates of a config: its depths and its widen-factor ratios (log2, to the
    nearest half: a shape is kept within a few percent)."""
    k = cfg.widen_factors
    return (*map(float, cfg.depths), round(2 * math.log2(k[1] / k[0])) / 2,
            round(2 * math.log2(k[2] / k[1])) / 2)


def _cell(m: Measure | None) -> str:
    if m is None:
        return "-"
    return f"{100 * m.mean:.1f} [{', '.join(f'{100 * v:.1f}' for v in m.values)}]"


def _avg(measures: dict[WRNConfig, Measure], cfgs: list[WRNConfig]) -> str:
    """Mean over configs and its standard error (the configs' spread: it includes the seeds')."""
    values = [measures[c].mean for c in cfgs if c in measures]
    if len(values) < 2:
        return "-"
    mean = sum(values) / len(values)
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))
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
