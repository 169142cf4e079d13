"""python -m search.replay --storage data/digits-grid-60K: search strategies replayed on a
recorded grid sweep, in the compute they would have cost.

A recorded table holds every config of a grid, trained to the end once per training seed, with
each epoch's validation accuracies and seconds. Each strategy runs through the sweep's own code
path (Tune, search.tuner's StudySearch over the same define-by-run space, its sampler and ASHA
built from the same SweepSpec fields) with a trainable that looks the learning curve up instead
of training, and a simulated clock: a trial's epoch costs the seconds it took when recorded.

- Only recorded points are replayed: the searcher's space is the recorded grid (its depths and
  width ratios), so every config a strategy proposes was really trained. Answering unrecorded
  configs from their nearest neighbour would score a strategy on accuracies nobody measured.
- A config proposed again gets another recorded seed's curve (drawn per trial from the replay's
  seed), as retraining it would.
- One trial runs at a time, so a replay is deterministic per seed and every decision sees every
  earlier result; simulated hours are compute (the sum of the epochs consumed), which is what a
  cluster bills, whatever the concurrency.
- A trial reports only where a decision can be taken (ASHA's rungs and its last epoch): neither
  ASHA nor the sampler reads the epochs between, and it keeps a 64-trial replay to seconds.

The score of a strategy at simulated time t: its incumbent is the config of its best trial
trained to the end so far (by that trial's best validation robust accuracy, as a sweep's summary
picks it); regret is the table's best mean (over seeds) minus the incumbent's mean. The target is
reached when the incumbent is within noise of the best: its mean is less than two standard
errors of a difference of two config means below the best's (the seeds' pooled spread).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from space_defs import WRNConfig
from space_defs.cli import Parser, UsageError, integer

from .spec import SweepSpec

HOUR = 3600.0


@dataclass(frozen=True)
class Curve:
    """One recorded training run of one config: per epoch, validation robust and clean accuracy
    and the seconds it took."""

    seed: int
    robust: tuple[float, ...]
    clean: tuple[float, ...]
    seconds: tuple[float, ...]

    @property
    def selected(self) -> tuple[float, float]:
        """Validation robust and clean accuracy of the epoch the run selects (its best.pt: the
        highest robust accuracy, ties by clean)."""
        return max(zip(self.robust, self.clean))

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
        """The finished trials of ``sweeps`` (default: every sweep under ``storage``), which
        must be one grid recorded with different training seeds."""
        from .db import list_sweeps, load_epochs, load_trials
        from .sweepdir import SweepDir

        sweeps = list(sweeps or list_sweeps(storage))
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
        spec = specs[0]
        if len({_unseeded(s) for s in specs}) > 1:
            raise UsageError(f"sweeps {', '.join(sweeps)} differ in more than their seed: "
                             "replay one recorded grid at a time")
        if spec.space != "grid":
            raise UsageError(f"sweep {spec.name} searched the {spec.space} space: the replay needs "
                             "a grid recording (--space grid), so that every config it proposes "
                             "was trained")
        trials = load_trials(storage, sweeps)
        trials = trials[trials["status"] == "finished"]
        epochs = load_epochs(storage, sweeps).sort_values("epoch")
        by_trial = {key: rows for key, rows in epochs.groupby(["sweep", "trial_id"])}
        curves: dict[WRNConfig, list[Curve]] = {}
        for t in trials.to_dict("records"):
            rows = by_trial[(t["sweep"], t["trial_id"])]
            if len(rows) != t["epochs_planned"]:
                continue
            curves.setdefault(WRNConfig.from_dict(t), []).append(Curve(
                int(t["seed"]), *(tuple(map(float, rows[c])) for c in
                                  ("val_robust_acc", "val_clean_acc", "epoch_seconds"))))
        expected = spec.search_space().grid_size()
        if len(curves) != expected:
            raise UsageError(f"{storage} holds {len(curves)} of the grid's {expected} configs "
                             "trained to the end: finish the recording first")
        return cls(spec, {k: tuple(sorted(v, key=lambda c: c.seed)) for k, v in curves.items()})

    # -- what the table says -----------------------------------------------------------------
    def score(self, cfg: WRNConfig) -> float:
        """The config's full-fidelity score: its selected validation robust accuracy, mean over
        seeds."""
        return sum(c.best for c in self.curves[cfg]) / len(self.curves[cfg])

    def rank_key(self, cfg: WRNConfig) -> tuple[float, float]:
        """Mean selected validation robust accuracy, ties broken by its clean accuracy."""
        curves = self.curves[cfg]
        return self.score(cfg), sum(c.selected[1] for c in curves) / len(curves)

    @property
    def best(self) -> WRNConfig:
        return max(self.curves, key=self.rank_key)

    @property
    def seeds(self) -> int:
        return min(len(c) for c in self.curves.values())

    @property
    def noise(self) -> float:
        """Standard error of the difference of two configs' means, from the seeds' pooled
        spread (NaN with one seed)."""
        return pooled_se([[c.best for c in curves] for curves in self.curves.values()])

    def near_best(self, cfg: WRNConfig) -> bool:
        return self.score(self.best) - self.score(cfg) < 2 * self.noise

    @property
    def grid_seconds(self) -> float:
        """What the grid sweep costs: every config trained once (its seeds' mean)."""
        return sum(sum(sum(c.seconds) for c in curves) / len(curves) for curves in self.curves.values())


def pooled_se(groups: Sequence[Sequence[float]]) -> float:
    """Standard error of a difference of two group means, from every group's spread about its
    own mean (pooled), with the smallest group's size (NaN without a repeated value)."""
    dof = sum(len(g) - 1 for g in groups)
    if dof < 1:
        return math.nan
    var = sum((x - sum(g) / len(g)) ** 2 for g in groups for x in g) / dof
    return math.sqrt(2 * var / min(len(g) for g in groups))


def _unseeded(spec: SweepSpec) -> str:
    """The spec less what may differ between the recordings of one table."""
    return dataclasses.replace(spec, name="table", seed=0, trials=1, final_eval=0,
                               recipe=dataclasses.replace(spec.recipe, seed=0)).to_json()


@dataclass(frozen=True)
class Strategy:
    """A way to search: a sampler, with or without ASHA."""

    name: str
    sampler: str  # search.spec.SAMPLERS
    asha: bool = False

    def spec(self, recorded: SweepSpec, *, seed: int, trials: int, grace_period: int,
             reduction_factor: int) -> SweepSpec:
        return dataclasses.replace(
            recorded, name=f"replay-{self.name.replace('+', '-')}-{seed}", seed=seed, trials=trials,
            sampler=self.sampler, scheduler="asha" if self.asha else "none", max_concurrent=1,
            grace_period=grace_period if self.asha else 0,
            reduction_factor=reduction_factor, final_eval=0)


STRATEGIES = {s.name: s for s in (Strategy("grid", "grid"), Strategy("random", "random"),
                                  Strategy("tpe", "tpe"), Strategy("tpe+asha", "tpe", asha=True),
                                  Strategy("random+asha", "random", asha=True))}


def milestones(spec: SweepSpec) -> frozenset[int]:
    """Epochs where ASHA may stop a trial (grace x factor^k), and the last."""
    epochs, points = spec.recipe.epochs, {spec.recipe.epochs}
    if spec.scheduler == "asha":
        t = spec.grace_epochs
        while t < epochs:
            points.add(t)
            t *= spec.reduction_factor
    return frozenset(points)


@dataclass(frozen=True)
class NumberedSpace:
    """The sweep's define-by-run space, each config also carrying the Optuna trial's number
    (the order the trials ran in: one at a time)."""

    space: Any  # search.tuner.DefineByRun

    def __call__(self, trial) -> dict[str, Any]:
        return {**self.space(trial), NUMBER: trial.number}


NUMBER = "optuna_number"


def replay_trial(config: dict[str, Any], *, curves: dict, report_at: frozenset[int],
                 seed: int) -> None:
    """The trainable: the recorded curve of ``config``, reported at ``report_at``."""
    from ray import tune

    config = dict(config)
    index = config.pop(NUMBER)
    runs = curves[WRNConfig.from_dict(config)]
    curve = runs[random.Random(seed * 1_000_003 + index).randrange(len(runs))]
    spent = 0.0
    for epoch, (robust, clean, seconds) in enumerate(zip(curve.robust, curve.clean, curve.seconds), 1):
        spent += seconds
        if epoch in report_at:
            tune.report({"epoch": epoch, "val_robust_acc": robust, "val_clean_acc": clean,
                         "recorded_seconds": spent, "curve_seed": curve.seed, "index": index})


class ComputeCap:
    """A Tune stopper that ends the replay once its trials have consumed ``seconds``."""

    def __new__(cls, seconds: float):
        from ray.tune import Stopper

        class _Cap(Stopper):
            def __init__(self):
                self.spent: dict[str, float] = {}

            def __call__(self, trial_id: str, result: dict) -> bool:
                self.spent[trial_id] = result["recorded_seconds"]
                return False

            def stop_all(self) -> bool:
                return sum(self.spent.values()) >= seconds

        return _Cap()


@dataclass(frozen=True)
class Event:
    """A trial of a replay, in the order it ran."""

    index: int
    arch: WRNConfig
    curve_seed: int
    epochs: int
    seconds: float  # recorded seconds of the epochs it consumed
    hours: float  # simulated compute when it ended: every earlier trial's and its own
    incumbent: WRNConfig | None
    regret: float  # table best's score minus the incumbent's (none yet: minus the worst config's)


def replay(table: Table, strategy: Strategy, seed: int, *, budget_seconds: float,
           grace_period: int = 0, reduction_factor: int = 4, baselines: bool = True,
           storage_path: str) -> list[Event]:
    """One replay of ``strategy`` until its trials have consumed ``budget_seconds``; with
    ``baselines``, a sampler other than the grid runs the sweep's baselines first, as a sweep
    does."""
    import optuna
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.search import ConcurrencyLimiter

    from .tuner import (DefineByRun, StudySearch, directions, objective, queue_baselines, sampler,
                        scheduler)

    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # result.json only, as a sweep
    spec = strategy.spec(table.spec, seed=seed, trials=20 * len(table.curves),
                         grace_period=grace_period, reduction_factor=reduction_factor)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name=spec.name, directions=directions(spec))
    if baselines:
        queue_baselines(study, spec)
    metric, mode = objective(spec)
    searcher = StudySearch(space=NumberedSpace(DefineByRun(spec.to_json())), metric=metric, mode=mode,
                           sampler=sampler(spec, seed), study_name=spec.name, storage=storage)
    trainable = tune.with_resources(
        tune.with_parameters(replay_trial, curves=table.curves, report_at=milestones(spec), seed=seed),
        {"cpu": 0.01})
    results = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=1),
                                    scheduler=scheduler(spec), num_samples=spec.trials,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=spec.name, storage_path=storage_path, verbose=0,
                                  stop=ComputeCap(budget_seconds), callbacks=[JsonLoggerCallback()],
                                  failure_config=tune.FailureConfig(fail_fast=True),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    ).fit()
    if results.errors:
        raise RuntimeError(f"replay {spec.name} failed: {results.errors[0]}")
    ran = sorted((r for r in results if r.metrics), key=lambda r: r.metrics["index"])
    return events(table, [(WRNConfig.from_dict({k: v for k, v in r.config.items() if k != NUMBER}),
                           int(r.metrics["curve_seed"]),
                           int(r.metrics["epoch"]), float(r.metrics["recorded_seconds"])) for r in ran])


def events(table: Table, trials: Sequence[tuple[WRNConfig, int, int, float]]) -> list[Event]:
    """The replay's trials (config, curve seed, epochs consumed, their recorded seconds) in the
    order they ran, with the simulated clock and the incumbent after each."""
    full = table.spec.recipe.epochs
    out, spent, incumbent, observed = [], 0.0, None, -math.inf
    best, worst = table.score(table.best), min(map(table.score, table.curves))
    for index, (arch, curve_seed, epochs, seconds) in enumerate(trials):
        curve = next(c for c in table.curves[arch] if c.seed == curve_seed)
        if not math.isclose(seconds, sum(curve.seconds[:epochs]), rel_tol=1e-9):
            raise RuntimeError(f"trial {index} reported {seconds} s for {epochs} epochs of a "
                                 f"curve that recorded {sum(curve.seconds[:epochs])} s")
        spent += seconds
        if epochs == full and curve.best > observed:
            incumbent, observed = arch, curve.best
        regret = best - (table.score(incumbent) if incumbent else worst)
        out.append(Event(index, arch, curve_seed, epochs, seconds, spent / HOUR, incumbent, regret))
    return out


def hours_to(run: Sequence[Event], hit) -> float | None:
    """Simulated hours until ``hit(incumbent)`` (e.g. ``table.near_best``); None: never."""
    return next((e.hours for e in run if e.incumbent is not None and hit(e.incumbent)), None)


# -- the command ---------------------------------------------------------------------------------
def parser() -> Parser:
    p = Parser(prog="python -m search.replay", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--storage", required=True, help="storage root of the recorded sweeps, e.g. data/digits-grid-60K")
    a("--sweeps", help="comma-separated recorded sweeps (default: every sweep under --storage)")
    a("--strategies", default="grid,random,tpe,tpe+asha",
      help=f"comma-separated, from {', '.join(STRATEGIES)} (default: grid,random,tpe,tpe+asha)")
    a("--seeds", type=integer, default=20, help="replays per strategy, seeds 0..N-1 (default: 20)")
    a("--grace-period", type=integer, default=SweepSpec.grace_period,
      help="ASHA's grace period in epochs; 0 = a quarter of them (default: the sweep default, 0)")
    a("--reduction-factor", type=integer, default=SweepSpec.reduction_factor,
      help=f"ASHA's reduction factor (default: the sweep default, {SweepSpec.reduction_factor})")
    a("--budget", type=float, default=1.0,
      help="compute of each replay, in multiples of the whole grid's (default: 1.0)")
    a("--without-baselines", action="store_true",
      help="start the samplers from nothing, not from the sweep's baselines (the uniform WRN "
           "and the reduced last stage) as a sweep does")
    a("--out", default="replay", help="folder for summary.parquet, events.parquet and regret.png "
                                      "(default: ./replay)")
    a("--address", help="Ray cluster address, or 'local' for an embedded Ray (search.run's rule)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        names = [s.strip() for s in args.strategies.split(",") if s.strip()]
        unknown = [n for n in names if n not in STRATEGIES]
        if unknown or not names:
            raise UsageError(f"unknown strategy {', '.join(unknown) or '(none)'}; choose from "
                             f"{', '.join(STRATEGIES)}")
        if args.seeds < 1 or args.budget <= 0 or args.reduction_factor < 2 or args.grace_period < 0:
            raise UsageError("--seeds and --budget must be positive, --reduction-factor at least 2, "
                             "--grace-period at least 0")
        sweeps = [s.strip() for s in args.sweeps.split(",")] if args.sweeps else None
        table = Table.load(args.storage, sweeps)
        if args.grace_period > table.spec.recipe.epochs:
            raise UsageError(f"--grace-period must be at most the {table.spec.recipe.epochs} epochs")
    except ValueError as e:  # UsageError, and a bad spec in a sweep.json
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .cluster import find_target, ray_session
    from .driver import quiet_libraries

    quiet_libraries()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a used-up grid re-proposing a point: expected
    print(describe(table))
    runs: dict[str, list[list[Event]]] = {}
    with ray_session(find_target(args.address)), tempfile.TemporaryDirectory(prefix="replay-") as tmp:
        for name in names:
            start = time.perf_counter()
            runs[name] = [replay(table, STRATEGIES[name], seed,
                                 budget_seconds=args.budget * table.grid_seconds,
                                 grace_period=args.grace_period,
                                 reduction_factor=args.reduction_factor,
                                 baselines=not args.without_baselines, storage_path=tmp)
                          for seed in range(args.seeds)]
            print(f"{name}: {args.seeds} replays in {time.perf_counter() - start:.1f} s", flush=True)
    summary = write_results(table, runs, Path(args.out))
    print(render(table, summary))
    print(f"written: {Path(args.out) / 'summary.parquet'}, events.parquet, regret.png")
    return 0


def describe(table: Table) -> str:
    best = table.best
    return (f"table {table.spec.name}: {len(table.curves)} configs x {table.seeds} seeds, "
            f"{table.spec.recipe.epochs} epochs; the grid costs {table.grid_seconds / HOUR:.2f} "
            f"hours; best {label(best)}: val robust {table.score(best):.1%} (mean of seeds), "
            f"noise (s.e. of a difference) {table.noise:.1%}; within noise of it: "
            f"{sum(map(table.near_best, table.curves))} configs")


def label(cfg: WRNConfig) -> str:
    return f"d{'-'.join(map(str, cfg.depths))} c{'-'.join(map(str, cfg.channels))}"


def write_results(table: Table, runs: dict[str, list[list[Event]]], out: Path):
    """events.parquet (every trial of every replay), summary.parquet (a row per strategy) and
    regret.png; returns the summary."""
    import pandas as pd

    from trainer.atomic import atomic_path

    from .db.plots import regret_curves

    rows = [dict(strategy=name, seed=seed, index=e.index, arch=label(e.arch), curve_seed=e.curve_seed,
                 epochs=e.epochs, seconds=e.seconds, hours=e.hours,
                 incumbent=label(e.incumbent) if e.incumbent else None, regret=e.regret,
                 near_best=e.incumbent is not None and table.near_best(e.incumbent))
            for name, seeds in runs.items() for seed, run in enumerate(seeds) for e in run]
    grid_hours = table.grid_seconds / HOUR
    targets = {"near": table.near_best, "best": lambda cfg: cfg == table.best}
    summary = []
    for name, seeds in runs.items():
        row = dict(strategy=name, replays=len(seeds),
                   median_trials=statistics.median([float(len(run)) for run in seeds]))
        for target, hit in targets.items():
            # a replay that never reached it counts as never (inf), not as left out
            hours = [math.inf if h is None else h for h in (hours_to(run, hit) for run in seeds)]
            row.update({f"{target}_reached": sum(h < math.inf for h in hours),
                        f"{target}_median_hours": statistics.median(hours),
                        f"{target}_q25_hours": _quantile(hours, 0.25),
                        f"{target}_q75_hours": _quantile(hours, 0.75),
                        f"{target}_median_of_grid": statistics.median(hours) / grid_hours})
        summary.append(row)
    summary = pd.DataFrame(summary)
    out.mkdir(parents=True, exist_ok=True)
    for name, df in (("events.parquet", pd.DataFrame(rows)), ("summary.parquet", summary)):
        with atomic_path(out / name) as tmp:
            df.to_parquet(tmp, index=False)
    regret_curves(pd.DataFrame(rows), out / "regret.png", grid_hours=grid_hours)
    return summary


def _quantile(values: list[float], q: float) -> float:
    """Nearest rank (never reached: inf)."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def render(table: Table, summary) -> str:
    """The summary as text: simulated hours (median, quartiles over replays) until the incumbent
    is within noise of the table's best, and until it is the best itself."""
    lines = [f"simulated hours until the incumbent is within noise of the best / is the best "
             f"(median and quartiles over replays; the whole grid costs "
             f"{table.grid_seconds / HOUR:.2f} h):",
             f"{'strategy':<13}{'within noise':>13}{'of grid':>8}{'25-75%':>12}{'reached':>8}"
             f"{'the best':>10}{'of grid':>8}{'25-75%':>12}{'reached':>8}{'trials':>7}"]
    for r in summary.to_dict("records"):
        cells = []
        for target, width in (("near", 13), ("best", 10)):
            median, q25, q75 = (r[f"{target}_{k}"] for k in ("median_hours", "q25_hours", "q75_hours"))
            reached = f"{r[f'{target}_reached']}/{r['replays']}"
            cells.append(f"{median:>{width}.2f}{r[f'{target}_median_of_grid']:>8.0%}"
                         f"{q25:>6.2f}-{q75:<5.2f}{reached:>8}")
        lines.append(f"{r['strategy']:<13}{''.join(cells)}{r['median_trials']:>7.0f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
