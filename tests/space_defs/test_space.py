import dataclasses
import math
import random
import subprocess
import sys

import optuna
import pytest

from space_defs import (SPACES, DataShape, baselines, get_space, macs, param_count, parse_budget,
                        suggest_config, wrn34_r)
from space_defs.space import BLOCKS, RATIOS, InfeasibleBudget
from space_defs.trials import FixedParams, RandomParams

optuna.logging.set_verbosity(optuna.logging.WARNING)
BUDGET = 36_000_000


def within(cfg, budget=BUDGET, tolerance=0.01):
    return abs(param_count(cfg) - budget) <= tolerance * budget


@pytest.mark.parametrize("space", sorted(SPACES))
def test_ten_thousand_samples_all_meet_the_budget(space):
    rng = random.Random(1)
    configs = [suggest_config(RandomParams(rng), BUDGET, space=space) for _ in range(10_000)]
    assert all(within(c) for c in configs)
    multiple = 4 if space == "grid" else 8  # a grid point keeps its shape, in a divisor of 8 if need be
    assert all(c.channels[i] % multiple == 0 for c in configs for i in range(3))


def test_a_narrower_last_stage_is_reachable():
    rng = random.Random(2)
    configs = [suggest_config(RandomParams(rng), BUDGET) for _ in range(2000)]
    share = sum(c.widen_factors[2] < c.widen_factors[1] for c in configs) / len(configs)
    assert 0.2 < share < 0.8
    # the paper's optimum shape: depths 5-5-5, widen factors k, k, 0.4k
    cfg = suggest_config(optuna.trial.FixedTrial({**dict(zip(BLOCKS, (5, 5, 5))),
                                                  RATIOS[0]: 0.0, RATIOS[1]: math.log2(0.4)}),
                         param_count(wrn34_r()))
    assert cfg.depths == (5, 5, 5) and within(cfg, param_count(wrn34_r()))
    k1, k2, k3 = cfg.widen_factors
    assert k1 == k2 and abs(k3 / k2 - 0.4) < 0.03


def test_fixed_trial_is_deterministic_and_matches_our_stand_in():
    params = {"stage1_blocks": 3, "stage2_blocks": 6, "stage3_blocks": 2,
              "log2_k2_over_k1": 0.7, "log2_k3_over_k2": -1.2}
    a = suggest_config(optuna.trial.FixedTrial(params), "36M")
    assert a == suggest_config(FixedParams(params), "36M") and a.depths == (3, 6, 2)


@pytest.mark.parametrize("space", sorted(SPACES))
def test_real_optuna_study_only_emits_budget_configs(space):
    seen = []

    def objective(trial):
        cfg = suggest_config(trial, BUDGET, space=space)
        seen.append(cfg)
        return -abs(math.log2(cfg.widen_factors[2] / cfg.widen_factors[1]))

    sampler = (optuna.samplers.GridSampler(SPACES["grid"].grid_search_space(), seed=0)
               if space == "grid" else optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=40)
    assert len(seen) == 40 and all(within(c) for c in seen)
    assert all("/" not in name for name in study.best_params)


def test_grid_sampler_enumerates_the_whole_grid():
    space = dataclasses.replace(SPACES["grid"], grid_depths=(1, 2), grid_ratios=(-1.0, 0.5))
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(space.grid_search_space()))
    study.optimize(lambda t: param_count(suggest_config(t, "10M", space=space)), n_trials=100)
    assert len(study.trials) == space.grid_size() == 32
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 32


def test_max_macs_is_never_exceeded():
    cap = parse_budget("4G")
    rng = random.Random(3)
    configs = [suggest_config(RandomParams(rng), BUDGET, max_macs=cap) for _ in range(1000)]
    assert all(macs(c) <= cap and within(c) for c in configs)
    rng = random.Random(3)
    uncapped = [suggest_config(RandomParams(rng), BUDGET) for _ in range(1000)]
    assert sum(macs(c) > cap for c in uncapped) > 300  # the cap really binds
    assert sum(a == b for a, b in zip(configs, uncapped)) > 100  # and leaves cheap samples alone


def test_baselines_are_the_uniform_and_reduced_last_stage_wrn_at_the_budget():
    uniform, reduced = baselines(BUDGET)
    assert uniform.depths == (4, 4, 4) and reduced.depths == (5, 5, 5)
    assert within(uniform) and within(reduced)
    assert reduced.channels[2] < reduced.channels[1]
    assert [b.depths for b in baselines(BUDGET, space="uniform")] == [(4, 4, 4), (5, 5, 5)]
    grid = SPACES["grid"]
    for point in grid.baseline_params():
        assert all(point[n] in grid.grid_search_space()[n] for n in point)


@pytest.mark.parametrize("budget, match", [
    ("10K", "cannot be met|too small"), ("100G", "too large"),
])
def test_budget_outside_the_space_is_an_error_before_any_trial(budget, match):
    with pytest.raises(InfeasibleBudget, match=match):
        SPACES["per_stage"].check(parse_budget(budget))


def test_check_passes_for_feasible_budgets_and_catches_impossible_mac_caps():
    for budget in ("1M", "36M", "200M"):
        SPACES["per_stage"].check(parse_budget(budget))
    with pytest.raises(InfeasibleBudget, match="max MACs"):
        SPACES["per_stage"].check(BUDGET, max_macs=parse_budget("1M"))


def test_small_data_space_for_the_demo():
    space = dataclasses.replace(SPACES["per_stage"], depth_range=(1, 2), multiple=4).for_data(
        DataShape(in_channels=1, num_classes=10, input_size=8))
    space.check(50_000)
    rng = random.Random(0)
    cfg = suggest_config(RandomParams(rng), 50_000, space=space)
    assert cfg.data.input_size == 8 and cfg.data.in_channels == 1 and within(cfg, 50_000)


def test_unknown_space_and_bad_tolerance():
    with pytest.raises(ValueError, match="unknown space"):
        get_space("nope")
    with pytest.raises(ValueError, match="tolerance"):
        SPACES["uniform"].check(BUDGET, tolerance=0)


def test_importing_space_defs_pulls_in_no_framework():
    code = ("import sys, space_defs, space_defs.__main__; "
            "print(sorted(m for m in ('torch', 'ray', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_previews_and_rejects_bad_input():
    run = lambda *a: subprocess.run([sys.executable, "-m", "space_defs", *a],  # noqa: E731
                                    capture_output=True, text=True)
    ok = run("--budget", "36M", "-n", "3")
    assert ok.returncode == 0 and ok.stdout.count("sample") == 3 and "baseline" in ok.stdout
    for args in (("--budget", "36MB"), ("--budget", "10K"), ("--budget", "36M", "-n", "0")):
        bad = run(*args)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "error:" in bad.stderr


@pytest.mark.parametrize("budget", [30_000, 60_000, 100_000, 36_000_000])
def test_baselines_keep_their_shape_at_small_budgets(budget):
    from space_defs.space import SHAPE_SLACK, shape_error

    space = dataclasses.replace(SPACES["per_stage"], depth_range=(1, 2), multiple=4)
    if budget < 1e6:
        space = space.for_data(DataShape(in_channels=1, num_classes=10, input_size=8))
    uniform, reduced = baselines(budget, space=space)
    assert within(uniform, budget) and within(reduced, budget)
    slack = SHAPE_SLACK if budget > 1e6 else 0.1  # at 6-20 channels a channel is 5-15%
    assert shape_error(uniform, (0.0, 0.0)) <= slack  # 1:2:4 (widen factors k, k, k)
    assert shape_error(reduced, (0.0, math.log2(8 / 20))) <= slack  # k, k, 0.4k
    # the sweep's define-by-run function trains exactly these for the enqueued baseline points
    assert [suggest_config(FixedParams(p), budget, space=space) for p in space.baseline_params()] == \
        [uniform, reduced]
    # at 60K, rounding to multiples of 4 would have made the uniform WRN c12-12-40
    if budget == 60_000:
        assert uniform.channels == (9, 19, 37)
