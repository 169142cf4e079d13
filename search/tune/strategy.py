"""Search strategies, each named once: the samplers (what proposes the next config) and the
schedulers (what stops weak trials early), with the epochs at which a scheduler takes its
decisions. SweepSpec checks its ``sampler`` and ``scheduler`` against these names; the sweep's
tuner and the replay build both from here. Light to import: optuna and ray load when a factory
runs.

To add a strategy, add its factory here: the flags, the spec's checks, the tuner and the replay
(``python -m search.replay --strategies``) follow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import internals

SweepSpec = Any  # search.spec.SweepSpec, which checks its names against these: not imported here


def _tpe(spec: SweepSpec, seed: int):
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, spec.trials // 3)))


def _random(spec: SweepSpec, seed: int):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _grid(spec: SweepSpec, seed: int):
    from .grid_order import GridOrder

    return GridOrder(spec.search_space().grid_search_space(), seed=seed)


# name -> (spec, seed) -> an Optuna sampler
SAMPLERS: dict[str, Callable[[SweepSpec, int], Any]] = {"tpe": _tpe, "random": _random, "grid": _grid}


@dataclass(frozen=True)
class Scheduler:
    """A Tune trial scheduler on epochs, and where it decides."""

    build: Callable[[SweepSpec], Any]  # spec -> a Tune TrialScheduler
    rungs: Callable[[Any], tuple[int, ...]]  # the built scheduler -> epochs where it may stop a trial


def _asha(spec: SweepSpec):
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="epoch", metric=spec.metrics[0], mode=spec.modes[0],
                         max_t=spec.recipe.epochs, grace_period=spec.grace_epochs,
                         reduction_factor=spec.reduction_factor)


def _asha_rungs(scheduler) -> tuple[int, ...]:
    """The milestones Ray's ASHA computed from its own parameters (grace x factor^k, below
    max_t), read from it rather than computed again."""
    return internals.asha_milestones(scheduler)


def _fifo(spec: SweepSpec):
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


# name -> how to build it and read its rungs; "none": every trial runs its whole schedule
SCHEDULERS: dict[str, Scheduler] = {"asha": Scheduler(_asha, _asha_rungs),
                                    "none": Scheduler(_fifo, lambda scheduler: ())}


def sampler(spec: SweepSpec, seed: int):
    """The spec's sampler, seeded."""
    return SAMPLERS[spec.sampler](spec, seed)


def scheduler(spec: SweepSpec):
    """The spec's trial scheduler."""
    return SCHEDULERS[spec.scheduler].build(spec)


def decision_epochs(spec: SweepSpec) -> frozenset[int]:
    """The epochs whose results a search decision can read: the scheduler's rungs and the last
    epoch (where a trial's final score is told to the sampler)."""
    entry = SCHEDULERS[spec.scheduler]
    return frozenset({*entry.rungs(entry.build(spec)), spec.recipe.epochs})


def strategy_name(sampler_name: str, scheduler_name: str) -> str:
    """'tpe', 'tpe+asha': the sampler, plus the scheduler unless it is none."""
    return sampler_name if scheduler_name == "none" else f"{sampler_name}+{scheduler_name}"


# every combination, by name -> (sampler, scheduler): the samplers alone first
STRATEGIES: dict[str, tuple[str, str]] = {
    strategy_name(a, b): (a, b) for b in sorted(SCHEDULERS, key=lambda b: b != "none")
    for a in SAMPLERS}
