"""search.tune.strategy: one registry of samplers and schedulers; SweepSpec checks its names against
it, the tuner builds from it, and a scheduler's decision epochs are read from the scheduler."""

import dataclasses

import optuna
import pytest

from search.spec import demo
from search.tune.strategy import SAMPLERS, SCHEDULERS, STRATEGIES, decision_epochs, sampler, scheduler


def test_the_spec_accepts_exactly_the_registered_names():
    for name in SAMPLERS:
        space = "grid" if name == "grid" else "per_stage"
        assert demo(sampler=name, space=space).sampler == name
    for name in SCHEDULERS:
        assert demo(scheduler=name).scheduler == name
    with pytest.raises(ValueError, match="unknown sampler 'cma'; choose one of tpe, random, grid"):
        demo(sampler="cma")
    with pytest.raises(ValueError, match="unknown scheduler 'hyperband'"):
        demo(scheduler="hyperband")


def test_every_sampler_and_scheduler_builds_and_every_pair_is_a_strategy():
    grid = demo(space="grid", grid_depths=(1, 2), grid_ratios=(-1.0, 0.0))
    for name in SAMPLERS:
        spec = dataclasses.replace(grid, sampler=name)
        assert isinstance(sampler(spec, seed=0), optuna.samplers.BaseSampler)
    for name in SCHEDULERS:
        scheduler(dataclasses.replace(grid, scheduler=name))
    assert STRATEGIES["tpe+asha"] == ("tpe", "asha") and STRATEGIES["random"] == ("random", "none")
    assert len(STRATEGIES) == len(SAMPLERS) * len(SCHEDULERS)


def test_ashas_decision_epochs_are_the_rungs_the_scheduler_itself_computed():
    spec = demo(recipe=dict(epochs=80), scheduler="asha", grace_period=5, reduction_factor=3)
    assert decision_epochs(spec) == {5, 15, 45, 80}
    # the sweep default: a quarter of the epochs, factor 4 (its last rung is the last epoch)
    assert decision_epochs(dataclasses.replace(spec, grace_period=0, reduction_factor=4)) == {20, 80}
    assert decision_epochs(dataclasses.replace(spec, scheduler="none")) == {80}
