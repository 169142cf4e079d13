"""Replays through the real Tune and Optuna: deterministic per seed."""

from __future__ import annotations

import pandas as pd
import pytest

from search.grid.table import Table
from tests.harness.grid import EPOCHS, config_of, run_replay, record_grid


def test_replays_are_deterministic_per_seed_and_run_through_tune_and_optuna(tmp_path, ray_address):
    record_grid(tmp_path)
    table = Table.load(str(tmp_path))
    args = ("--strategies", "tpe+asha,grid", "--seeds", "2", "--grace-period", "2",
            "--reduction-factor", "2", "--budget", "0.5")
    runs = []
    for name in ("a", "b"):
        done = run_replay(tmp_path, *args, out=tmp_path / name, address=ray_address)
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
        recorded = [sum(table.cost(config_of(table, a))[:n]) for a, n in zip(run["arch"], run["epochs"])]
        assert list(run["seconds"]) == pytest.approx(recorded)
        assert run["hours"].iloc[-1] * 3600 == pytest.approx(sum(recorded))
        assert 0.5 * table.grid_seconds <= sum(recorded) <= 0.5 * table.grid_seconds + max(recorded)
    summary = pd.read_parquet(tmp_path / "a" / "summary.parquet")
    assert list(summary["strategy"]) == ["tpe+asha", "grid"] and (summary["replays"] == 2).all()
    assert (summary["best_median_hours"] >= summary["near_median_hours"]).all()
