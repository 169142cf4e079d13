"""A recorded grid: every config of a grid sweep trained to the end once per training seed, with
each epoch's validation accuracies and seconds (data/digits-grid-60K ships one)."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from space_defs import WRNConfig
from space_defs.cli import UsageError
from trainer.report import best_epoch

from ..db.ranking import within_noise
from ..spec import SweepSpec
from .stats import SeedFit, tie_ranks

HOUR = 3600.0  # seconds


@dataclass(frozen=True)
class Curve:
    """One recorded training run of one config: per epoch, validation robust and clean accuracy
    and the seconds it took; ``selected_by`` is its recipe's model-selection rule."""

    seed: int
    robust: tuple[float, ...]
    clean: tuple[float, ...]
    seconds: tuple[float, ...]
    selected_by: tuple[str, ...] = ("val_robust_acc", "val_clean_acc")  # Recipe.selected_by

    @property
    def selected(self) -> tuple[float, float]:
        """Validation robust and clean accuracy of the epoch the run selects (its best.pt, by
        trainer.report.best_epoch)."""
        epochs = [{"val_robust_acc": r, "val_clean_acc": c} for r, c in zip(self.robust, self.clean)]
        chosen = best_epoch(epochs, self.selected_by)
        return chosen["val_robust_acc"], chosen["val_clean_acc"]

    @property
    def best(self) -> float:
        return self.selected[0]


@dataclass(frozen=True)
class Table:
    """A recorded grid: the sweep's spec and every config's curves, one per training seed."""

    spec: SweepSpec
    curves: dict[WRNConfig, tuple[Curve, ...]]

    @classmethod
    def load(cls, storage: str, sweeps: Sequence[str] | None = None) -> Table:
        """The fully trained trials of ``sweeps`` (default: every sweep under ``storage``),
        which must be one grid recorded with different training seeds."""
        from ..db import full_fidelity, list_sweeps, load_epochs, load_trials

        sweeps = list(sweeps or list_sweeps(storage))
        spec = recorded_spec(storage, sweeps)
        trials = full_fidelity(load_trials(storage, sweeps))
        epochs = load_epochs(storage, sweeps).sort_values("epoch")
        by_trial = {key: rows for key, rows in epochs.groupby(["sweep", "trial_id"])}
        curves: dict[WRNConfig, list[Curve]] = {}
        for t in trials.to_dict("records"):
            rows = by_trial.get((t["sweep"], t["trial_id"]), ())
            if len(rows) != t["epochs_planned"]:  # an epoch row missing: no whole curve
                continue
            curves.setdefault(WRNConfig.from_dict(t), []).append(Curve(
                int(t["seed"]), *(tuple(map(float, rows[c])) for c in
                                  ("val_robust_acc", "val_clean_acc", "epoch_seconds")),
                selected_by=spec.recipe.selected_by))
        expected = spec.search_space().grid_size()
        if len(curves) != expected:
            raise UsageError(f"{storage} holds {len(curves)} of the grid's {expected} configs "
                             "trained to the end: finish the recording first")
        seeds = {tuple(sorted(c.seed for c in v)) for v in curves.values()}
        if len(seeds) > 1:
            raise UsageError(f"{storage}: the configs were trained with different seeds "
                             f"({' / '.join(map(str, sorted(seeds)))}): finish the recording first")
        return cls(spec, {k: tuple(sorted(v, key=lambda c: c.seed)) for k, v in curves.items()})

    # -- what the table says -----------------------------------------------------------------
    def score(self, cfg: WRNConfig) -> float:
        """The config's full-fidelity score: its selected validation robust accuracy, mean over
        seeds."""
        return statistics.fmean(c.best for c in self.curves[cfg])

    def rank_key(self, cfg: WRNConfig) -> tuple[float, float]:
        """Mean selected validation robust accuracy, ties ordered by its clean accuracy."""
        return self.score(cfg), statistics.fmean(c.selected[1] for c in self.curves[cfg])

    @cached_property
    def ranked(self) -> list[WRNConfig]:
        return sorted(self.curves, key=self.rank_key, reverse=True)

    @cached_property
    def ranks(self) -> dict[WRNConfig, tuple[int, int]]:
        """Each config's rank by score, as the range of ranks it shares with ties."""
        return dict(zip(self.ranked, tie_ranks([self.score(c) for c in self.ranked])))

    @property
    def best(self) -> WRNConfig:
        """The first of the most robust (a tie is ordered by clean accuracy: see ``top``)."""
        return self.ranked[0]

    @cached_property
    def top(self) -> tuple[WRNConfig, ...]:
        """Every config tied for the best score."""
        return tuple(c for c in self.ranked if self.ranks[c][0] == 1)

    @property
    def seeds(self) -> int:
        return min(len(c) for c in self.curves.values())

    @cached_property
    def fit(self) -> SeedFit:
        """The config + seed fit of the configs' selected validation robust accuracies."""
        return SeedFit.of([[c.best for c in self.curves[cfg]] for cfg in self.ranked])

    @property
    def noise(self) -> float:
        """Standard error of the difference of two configs' means (NaN with one seed)."""
        return self.fit.diff_se

    def near_best(self, cfg: WRNConfig) -> bool:
        return bool(within_noise(self.score(self.best) - self.score(cfg), self.noise))

    def cost(self, cfg: WRNConfig) -> tuple[float, ...]:
        """What each epoch of ``cfg`` costs on the simulated clock: the median over its seeds of
        the recorded seconds (one run's seconds include whatever else loaded the machine)."""
        return tuple(map(statistics.median, zip(*(c.seconds for c in self.curves[cfg]))))

    @property
    def grid_seconds(self) -> float:
        """What the grid sweep costs: every config trained once."""
        return sum(sum(self.cost(cfg)) for cfg in self.curves)


def recorded_spec(storage: str, sweeps: list[str]) -> SweepSpec:
    """The spec of the recorded grid ``sweeps`` (one grid, differing only in seeds)."""
    from ..sweep.files import SweepDir

    if not sweeps:
        raise UsageError(f"no recorded sweep under {storage}: record one with search.run "
                         "(e.g. data/digits-grid-60K/record.sh)")
    specs = []
    for name in sweeps:
        sweep = SweepDir(storage, name)
        text = sweep.read("sweep.json")
        if text is None:
            raise UsageError(f"{sweep.uri} holds no sweep.json: not a recorded sweep")
        specs.append(SweepSpec.from_json(text))
    if len({_unseeded(s) for s in specs}) > 1:
        raise UsageError(f"sweeps {', '.join(sweeps)} differ in more than their seed: "
                         "replay one recorded grid at a time")
    spec = specs[0]
    if spec.space != "grid":
        raise UsageError(f"sweep {spec.name} searched the {spec.space} space: the replay needs "
                         "a grid recording (--space grid), so that every config it proposes "
                         "was trained")
    return spec


def _unseeded(spec: SweepSpec) -> str:
    """The spec less what may differ between the recordings of one table."""
    return dataclasses.replace(spec, name="table", seed=0, trials=1, final_eval=0, confirm=0,
                               recipe=dataclasses.replace(spec.recipe, seed=0)).to_json()
