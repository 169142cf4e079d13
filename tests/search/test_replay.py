"""search.replay on a small recorded grid: deterministic per seed, through the sweep's own Tune
experiment (search.tuner.build_tuner: the queued baselines run first), and its simulated clock
charges each epoch consumed one cost per config (the median of its seeds' seconds)."""

from __future__ import annotations

import datetime as dt
import math
import statistics
import subprocess
import sys

import pandas as pd
import pytest

from search.db.schema import EpochRow, EvalRow, TrialRow
from search.db.store import TrialStore
from search.grid.replay import events, hours_to, strategy_spec
from search.grid.table import Curve, Table
from search.spec import demo
from search.strategy import decision_epochs
from space_defs import macs, param_count, suggest_config
from space_defs.trials import FixedParams

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
EPOCHS = 8


def grid_spec(seed: int):
    return demo(name=f"tiny-grid-s{seed}", seed=seed, space="grid", grid_depths=(1, 2),
                grid_ratios=(-1.0, 0.0), trials=32, recipe=dict(epochs=EPOCHS))


def record_grid(storage, seeds=(0, 1)) -> dict:
    """A recorded grid as search.run writes it (sweep.json and the trial database), with curves
    whose plateau depends on the config and whose epochs each cost a config-specific time."""
    points = {}
    for seed in seeds:
        spec = grid_spec(seed)
        (storage / spec.name).mkdir(parents=True)
        (storage / spec.name / "sweep.json").write_text(spec.to_json())
        space = spec.search_space()
        trials, epochs, evals = [], [], []
        for i, point in enumerate(_grid_points(space)):
            cfg = suggest_config(FixedParams(point), spec.budget, space=space, tolerance=spec.tolerance)
            plateau = 0.3 + 0.05 * (cfg.depths[0] + 2 * cfg.depths[1]) + 0.01 * ((i * 7 + seed) % 3)
            seconds = 1.0 + i / 10 + seed / 10  # the same config: slower under seed 0's load
            tid = f"t{i:02d}"
            points[cfg] = plateau
            trials.append(TrialRow(
                sweep=spec.name, trial_id=tid, status="finished", space=spec.space, **cfg.to_dict(),
                params=param_count(cfg), macs=macs(cfg), budget=spec.budget, dataset=spec.dataset,
                method=spec.recipe.method, epochs_planned=EPOCHS, eps=spec.recipe.eps, seed=seed,
                recipe_json="{}", epochs_done=EPOCHS, started_at=T0, updated_at=T0))
            for attack, acc in (("clean", plateau + 0.3), ("pgd20", plateau - 0.05)):
                evals.append(EvalRow(sweep=spec.name, trial_id=tid, attack=attack, split="test",
                                     accuracy=acc, n_examples=397, recorded_at=T0))
            for e in range(1, EPOCHS + 1):
                robust = plateau * (1 - math.exp(-e / 3))
                epochs.append(EpochRow(sweep=spec.name, trial_id=tid, epoch=e, val_robust_acc=robust,
                                       val_clean_acc=min(1.0, robust + 0.3), epoch_seconds=seconds,
                                       recorded_at=T0))
        with TrialStore(str(storage), spec.name) as store:
            store.write(trials=trials, epochs=epochs, evals=evals)
    return points


def _grid_points(space):
    import itertools

    grid = space.grid_search_space()
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def test_the_table_knows_its_best_its_noise_and_what_the_grid_costs(tmp_path):
    record_grid(tmp_path)
    table = Table.load(str(tmp_path))
    assert len(table.curves) == 32 and table.seeds == 2
    best = table.best
    assert best.depths[:2] == (2, 2)  # the plateau grows with the first two stages' depth
    # seconds per epoch: 1 + i/10 + seed/10 for the i-th grid point, EPOCHS epochs each; the
    # clock charges the median over the seeds
    assert table.cost(table.best) == pytest.approx([table.cost(table.best)[0]] * EPOCHS)
    assert table.grid_seconds == pytest.approx(sum(EPOCHS * (1 + i / 10 + 0.05) for i in range(32)))
    assert 0 < table.noise < 0.05 and table.near_best(best)


def test_events_add_up_the_recorded_epochs_they_consumed(tmp_path):
    record_grid(tmp_path)
    table = Table.load(str(tmp_path))
    cfgs = list(table.curves)
    ran = [(cfgs[3], 0, EPOCHS), (cfgs[5], 1, 2), (table.best, 1, EPOCHS)]
    out = events(table, [(c, s, n, sum(table.cost(c)[:n])) for c, s, n in ran])
    expected = [sum(table.cost(c)[:n]) for c, s, n in ran]
    assert expected[0] == pytest.approx(EPOCHS * statistics.median(
        [sum(k.seconds) / EPOCHS for k in table.curves[cfgs[3]]]))  # whichever seed's curve ran
    assert [e.seconds for e in out] == pytest.approx(expected)
    assert out[-1].hours == pytest.approx(sum(expected) / 3600)
    assert out[0].incumbent == cfgs[3] and out[1].incumbent == cfgs[3]  # 2 epochs: not an incumbent
    assert out[-1].incumbent == table.best and out[-1].regret == 0
    assert hours_to(out, table.near_best) is not None
    with pytest.raises(RuntimeError, match="reported"):
        events(table, [(cfgs[0], 0, EPOCHS, 1.0)])  # a trial that claims a cost it was not charged


def test_a_replay_reports_where_its_strategy_decides():
    recorded = demo(recipe=dict(epochs=80))
    spec = strategy_spec(recorded, "tpe+asha", seed=0, trials=4, grace_period=5, reduction_factor=3)
    assert (spec.sampler, spec.scheduler, spec.max_concurrent) == ("tpe", "asha", 1)
    assert decision_epochs(spec) == {5, 15, 45, 80}
    assert decision_epochs(strategy_spec(recorded, "tpe", seed=0, trials=4, grace_period=5,
                                         reduction_factor=3)) == {80}


def test_a_table_that_is_not_a_finished_grid_is_refused(tmp_path):
    record_grid(tmp_path, seeds=(0,))
    per_stage = demo(name="sampled")
    (tmp_path / "sampled").mkdir()
    (tmp_path / "sampled" / "sweep.json").write_text(per_stage.to_json())
    out = _replay(tmp_path, "--sweeps", "tiny-grid-s0,sampled", out=tmp_path / "o")
    assert out.returncode == 2 and out.stderr.strip().startswith("error: sweeps tiny-grid-s0, sampled differ")
    assert not (tmp_path / "o").exists()
    out = _replay(tmp_path, "--sweeps", "sampled", out=tmp_path / "o")
    assert out.returncode == 2 and "needs a grid recording" in out.stderr


def _replay(storage, *args, out, address="local"):
    return subprocess.run([sys.executable, "-m", "search.replay", "--storage", str(storage),
                           "--out", str(out), "--address", address, *args],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.system
def test_replays_are_deterministic_per_seed_and_run_through_tune_and_optuna(tmp_path, ray_address):
    record_grid(tmp_path)
    table = Table.load(str(tmp_path))
    args = ("--strategies", "tpe+asha,grid", "--seeds", "2", "--grace-period", "2",
            "--reduction-factor", "2", "--budget", "0.5")
    runs = []
    for name in ("a", "b"):
        done = _replay(tmp_path, *args, out=tmp_path / name, address=ray_address)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(pd.read_parquet(tmp_path / name / "events.parquet"))
    assert (tmp_path / "a" / "regret.png").stat().st_size > 10_000
    pd.testing.assert_frame_equal(runs[0], runs[1])  # the same seed replays the same search
    ev = runs[0]
    tpe = ev[ev.strategy == "tpe+asha"]
    # TPE's queued baselines ran first: the uniform WRN shape, then the reduced last stage
    assert list(tpe[tpe["index"] == 0]["arch"]) == ["d2-2-2 c" + "-".join(
        map(str, table.spec.search_space().solve_shape((2, 2, 2), (0.0, 0.0), table.spec.budget,
                                                      table.spec.tolerance).channels))] * 2
    assert set(tpe["epochs"]) <= {2, 4, EPOCHS} and (tpe["epochs"] < EPOCHS).any()  # ASHA stopped some
    grid = ev[ev.strategy == "grid"]
    assert (grid["epochs"] == EPOCHS).all() and grid.groupby("seed")["arch"].apply(
        lambda a: a.is_unique).all()  # the grid visits each point at most once
    assert not grid[grid.seed == 0]["arch"].reset_index(drop=True).equals(
        grid[grid.seed == 1]["arch"].reset_index(drop=True))  # its order depends on the seed
    # the clock: each trial costs its config's seconds of the epochs it consumed, and the budget
    # (half the grid) is spent by the end, give or take the last trial
    for (_, _), run in ev.groupby(["strategy", "seed"]):
        recorded = [sum(table.cost(_cfg(table, a))[:n]) for a, n in zip(run["arch"], run["epochs"])]
        assert list(run["seconds"]) == pytest.approx(recorded)
        assert run["hours"].iloc[-1] * 3600 == pytest.approx(sum(recorded))
        assert 0.5 * table.grid_seconds <= sum(recorded) <= 0.5 * table.grid_seconds + max(recorded)
    summary = pd.read_parquet(tmp_path / "a" / "summary.parquet")
    assert list(summary["strategy"]) == ["tpe+asha", "grid"] and (summary["replays"] == 2).all()
    assert (summary["best_median_hours"] >= summary["near_median_hours"]).all()


def _cfg(table: Table, arch: str):
    return next(c for c in table.curves if c.label == arch)


def test_the_grid_report_compares_the_best_with_the_uniform_wrn_in_standard_errors(tmp_path):
    from search.grid.report import Grid, main

    points = record_grid(tmp_path)
    grid = Grid.load(str(tmp_path))
    best, uniform = grid.table.best, grid.uniform
    assert uniform.depths == (2, 2, 2) and uniform in points
    # plateaus 0.3 + 0.05 (d1 + 2 d2) + 0.01 x (0..2) per seed; test PGD-20 = plateau - 0.05
    diff = grid.val_robust[best].mean - grid.val_robust[uniform].mean
    assert grid.compare(grid.val_robust, best, uniform).startswith(f"{100 * diff:+.1f} points")
    assert grid.compare(grid.test["pgd20"], best, uniform).startswith(f"{100 * diff:+.1f} points")
    assert main(["--storage", str(tmp_path)]) == 0


def test_a_curve_selects_its_best_epoch_like_a_run_does():
    from trainer.recipe import Recipe

    robust, clean = (0.1, 0.5, 0.5, 0.4), (0.2, 0.6, 0.9, 0.95)
    assert Curve(0, robust, clean, (1, 1, 1, 1)).selected == (0.5, 0.9)
    # a standard (non-robust) run selects by clean accuracy, as its best.pt does
    standard = Recipe(method="standard").selected_by
    assert Curve(0, robust, clean, (1, 1, 1, 1), selected_by=standard).selected == (0.4, 0.95)
