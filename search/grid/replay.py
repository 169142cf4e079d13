"""python -m search.replay --storage data/digits-grid-60K: search strategies replayed on a
recorded grid sweep, in the compute they would have cost.

A recorded table holds every config of a grid, trained to the end once per training seed, with
each epoch's validation accuracies and seconds. Each strategy (search.tune.strategy) runs as a sweep
does, through the Tune experiment search.tune.tuner.build_tuner builds (the same StudySearch over the
same define-by-run space, sampler, scheduler and recorder), with one difference: its trainable
looks the learning curve up instead of training, and the compute it reports is a simulated
clock's.

- Only recorded points are replayed: the searcher's space is the recorded grid (its depths and
  width ratios), so every config a strategy proposes was really trained. Answering unrecorded
  configs from their nearest neighbour would score a strategy on accuracies nobody measured.
- A config proposed again gets another recorded seed's curve (drawn per trial from the replay's
  seed), as retraining it would.
- The clock charges an epoch of a config the median over the seeds of its recorded seconds: one
  cost per config and epoch, whichever seed's curve a trial draws (a recording's seconds also
  measure what else loaded the machine while it ran).
- One trial runs at a time, so a replay is deterministic per seed and every decision sees every
  earlier result; simulated hours are compute (the sum of the epochs consumed), which is what a
  cluster bills, whatever the concurrency.
- A trial reports only where a decision can be taken (search.tune.strategy.decision_epochs: the
  scheduler's rungs and the last epoch): neither ASHA nor the sampler reads the epochs between,
  and it keeps a 64-trial replay to seconds.

The score of a strategy at simulated time t: its incumbent is the config of its best trial
trained to the end so far (by that trial's selected validation robust accuracy, as a sweep's
summary picks it); regret is the table's best mean (over seeds) minus the incumbent's mean. The
target is reached when the incumbent is within noise of the best (search.db.ranking's verdict,
with the table's noise from its config + seed fit), and the best itself when the incumbent is
one of the configs tied for the best mean.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import math
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from space_defs import WRNConfig
from space_defs.cli import Parser, UsageError, integer

from .. import internals
from ..spec import SweepSpec
from ..tune.strategy import STRATEGIES, decision_epochs
from .summary import Event
from .table import HOUR, Table


def strategy_spec(recorded: SweepSpec, strategy: str, *, seed: int, trials: int,
                  grace_period: int, reduction_factor: int) -> SweepSpec:
    """The sweep a replay of ``strategy`` (a search.tune.strategy.STRATEGIES name) runs: the
    recorded sweep's, with the strategy's sampler and scheduler, one trial at a time."""
    sampler, scheduler = STRATEGIES[strategy]
    return dataclasses.replace(
        recorded, name=f"replay-{strategy.replace('+', '-')}-{seed}", seed=seed, trials=trials,
        sampler=sampler, scheduler=scheduler, max_concurrent=1, cpus_per_trial=0.01, gpus_per_trial=0.0,
        grace_period=grace_period if scheduler != "none" else 0,
        reduction_factor=reduction_factor, final_eval=0, confirm=0)


@dataclass(frozen=True)
class Lookup:
    """The replay's trainable, with search.trial.trainable.train_trial's signature: the recorded curve
    of the config, reported at the spec's decision epochs, in simulated seconds. The curve is
    drawn from the config's recorded seeds by the replay's seed and the trial's number in the
    sweep's study (the one trial running: a replay runs one at a time)."""

    table: Table = field(repr=False)
    storage: str  # where the replay's sweeps live

    def __call__(self, config: dict, *, spec: SweepSpec, data_dir: str, fence=None) -> None:
        from ray import tune

        from ..sweep.files import SweepDir

        arch = WRNConfig.from_dict(config)
        runs, cost = self.table.curves[arch], self.table.cost(arch)
        number = running_trial(SweepDir(self.storage, spec.name).uri)
        curve = runs[random.Random(spec.seed * 1_000_003 + number).randrange(len(runs))]
        report_at, spent = decision_epochs(spec), 0.0
        for epoch, (robust, clean, seconds) in enumerate(zip(curve.robust, curve.clean, cost), 1):
            spent += seconds
            if epoch in report_at:
                tune.report({"epoch": epoch, "val_robust_acc": robust, "val_clean_acc": clean,
                             "epoch_seconds": seconds, "simulated_seconds": spent,
                             "curve_seed": curve.seed, "index": number})


def running_trial(sweep_uri: str) -> int:
    """The number of the one running trial of the sweep's study."""
    import optuna

    from ..sweep.study import open_study_storage

    storage = open_study_storage(sweep_uri)
    [study] = storage.get_all_studies()
    [trial] = storage.get_all_trials(internals.study_id(study), deepcopy=False,
                                     states=(optuna.trial.TrialState.RUNNING,))
    return trial.number


class ComputeCap:
    """A Tune stopper that ends the replay once its trials have consumed ``seconds``."""

    def __new__(cls, seconds: float):
        from ray.tune import Stopper

        class _Cap(Stopper):
            def __init__(self):
                self.spent: dict[str, float] = {}

            def __call__(self, trial_id: str, result: dict) -> bool:
                self.spent[trial_id] = result["simulated_seconds"]
                return False

            def stop_all(self) -> bool:
                return sum(self.spent.values()) >= seconds

        return _Cap()


def replay(table: Table, strategy: str, seed: int, *, budget_seconds: float, storage: str,
           grace_period: int = 0, reduction_factor: int = 4, baselines: bool = True) -> list[Event]:
    """One replay of ``strategy`` until its trials have consumed ``budget_seconds``, as a sweep
    under ``storage``; with ``baselines``, a sampler other than the grid runs the sweep's
    baselines first, as a sweep does."""
    from ..sweep.files import Segment, SweepDir
    from ..tune.tuner import build_tuner

    spec = strategy_spec(table.spec, strategy, seed=seed, trials=20 * len(table.curves),
                         grace_period=grace_period, reduction_factor=reduction_factor)
    tuner = build_tuner(spec, SweepDir(storage, spec.name), Segment("tune-1", spec.trials),
                        first=baselines, data_dir="", restore=False,
                        trainable=Lookup(table, storage), stop=ComputeCap(budget_seconds))
    with contextlib.redirect_stdout(io.StringIO()):  # the recorder's line per trial event
        results = tuner.fit()
    if results.errors:
        raise RuntimeError(f"replay {spec.name} failed: {results.errors[0]}")
    ran = sorted((r for r in results if r.metrics), key=lambda r: r.metrics["index"])
    return events(table, [(WRNConfig.from_dict(r.config), int(r.metrics["curve_seed"]),
                           int(r.metrics["epoch"]), float(r.metrics["simulated_seconds"]))
                          for r in ran])


def events(table: Table, trials: Sequence[tuple[WRNConfig, int, int, float]]) -> list[Event]:
    """The replay's trials (config, curve seed, epochs consumed, their simulated seconds) in the
    order they ran, with the simulated clock and the incumbent after each."""
    full = table.spec.recipe.epochs
    out, spent, incumbent, observed = [], 0.0, None, -math.inf
    best, worst = table.score(table.best), min(map(table.score, table.curves))
    for index, (arch, curve_seed, epochs, seconds) in enumerate(trials):
        curve = next(c for c in table.curves[arch] if c.seed == curve_seed)
        charged = sum(table.cost(arch)[:epochs])
        if not math.isclose(seconds, charged, rel_tol=1e-9):
            raise RuntimeError(f"trial {index} reported {seconds} s for {epochs} epochs of a "
                               f"config whose clock charges {charged} s")
        spent += seconds
        if epochs == full and curve.best > observed:
            incumbent, observed = arch, curve.best
        regret = best - (table.score(incumbent) if incumbent else worst)
        out.append(Event(index, arch, curve_seed, epochs, seconds, spent / HOUR, incumbent, regret))
    return out


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
    from ..cluster.target import find_target
    from ..cluster.connect import ray_session
    from .summary import render, write_results

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a used-up grid re-proposing a point: expected
    print(describe(table))
    runs: dict[str, list[list[Event]]] = {}
    with ray_session(find_target(args.address)), tempfile.TemporaryDirectory(prefix="replay-") as tmp:
        for name in names:
            start = time.perf_counter()
            runs[name] = [replay(table, name, seed, budget_seconds=args.budget * table.grid_seconds,
                                 storage=tmp, grace_period=args.grace_period,
                                 reduction_factor=args.reduction_factor,
                                 baselines=not args.without_baselines)
                          for seed in range(args.seeds)]
            print(f"{name}: {args.seeds} replays in {time.perf_counter() - start:.1f} s", flush=True)
    summary = write_results(table, runs, Path(args.out))
    print(render(table, summary))
    print(f"written: {Path(args.out) / 'summary.parquet'}, events.parquet, regret.png")
    return 0


def describe(table: Table) -> str:
    best = " and ".join(c.label for c in table.top)
    return (f"table {table.spec.name}: {len(table.curves)} configs x {table.seeds} seeds, "
            f"{table.spec.recipe.epochs} epochs; the grid costs {table.grid_seconds / HOUR:.2f} "
            f"hours (each epoch of a config at the median of its seeds' seconds); best {best}: "
            f"val robust {table.score(table.best):.2%} (mean of seeds), noise (s.e. of a "
            f"difference, config + seed fit) {table.noise:.2%}; within noise of it: "
            f"{sum(map(table.near_best, table.curves))} configs")


if __name__ == "__main__":
    sys.exit(main())
