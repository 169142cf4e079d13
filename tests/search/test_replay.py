"""search.replay on a small recorded grid: deterministic per seed, through the sweep's own Tune
experiment (search.tune.tuner.build_tuner: the queued baselines run first), and its simulated clock
charges each epoch consumed one cost per config (the median of its seeds' seconds)."""

from __future__ import annotations

import statistics

import pytest

from search.grid.replay import events, strategy_spec
from search.grid.summary import hours_to
from search.grid.table import Curve, Table
from search.spec import demo
from search.tune.strategy import decision_epochs
from tests.harness.grid import EPOCHS, run_replay, record_grid


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
    out = run_replay(tmp_path, "--sweeps", "tiny-grid-s0,sampled", out=tmp_path / "o")
    assert out.returncode == 2 and out.stderr.strip().startswith("error: sweeps tiny-grid-s0, sampled differ")
    assert not (tmp_path / "o").exists()
    out = run_replay(tmp_path, "--sweeps", "sampled", out=tmp_path / "o")
    assert out.returncode == 2 and "needs a grid recording" in out.stderr


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
