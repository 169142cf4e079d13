"""search.run's summary: the best, how it compares with the uniform baseline, and the noise."""

import datetime as dt

from search.db.schema import TrialRow
from search.db.store import TrialStore
from search.run import summary
from search.spec import demo
from space_defs import WRNConfig, baselines, macs, param_count

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


def _row(spec, trial_id, cfg, status, robust=None, clean=None, epoch=None, done=None):
    done = spec.recipe.epochs if done is None else done
    return TrialRow(
        sweep=spec.name, trial_id=trial_id, status=status, space=spec.space, **cfg.to_dict(),
        params=param_count(cfg), macs=macs(cfg), budget=spec.budget, dataset=spec.dataset,
        method=spec.recipe.method, epochs_planned=spec.recipe.epochs, eps=spec.recipe.eps, seed=0,
        recipe_json="{}", val_size=spec.recipe.val_size, epochs_done=done, best_val_robust_acc=robust,
        best_val_clean_acc=clean, best_val_robust_epoch=epoch, started_at=T0, updated_at=T0)


def test_summary_compares_the_best_with_the_uniform_baseline_and_keeps_epochs_whole(tmp_path):
    spec = demo()
    uniform = baselines(spec.budget, space=spec.search_space())[0]
    other = WRNConfig(depths=(1, 1, 2), channels=(44, 32, 16), data=uniform.data)
    rows = [_row(spec, "a", uniform, "finished", 0.60, 0.95, 18),
            _row(spec, "b", other, "finished", 0.70, 0.97, 20),
            _row(spec, "c", other, "lost", done=3)]  # a lost trial: its best epoch is null
    with TrialStore(str(tmp_path), spec.name) as store:
        store.write(trials=rows)
    text = summary(spec, str(tmp_path))
    e = spec.recipe.epochs
    assert f"epoch 20 of {e}" in text and f"epoch 18 of {e}" in text and ".0 of" not in text
    assert "uniform baseline d2-2-2 c9-19-37" in text
    # 70% vs 60% on 200 images each: +10.0 points, s.e. sqrt(.7*.3/200 + .6*.4/200) = 4.7
    assert "val robust: +10.0 points +- 4.7" in text and "better, z = 2.1" in text
    assert "val clean: +2.0 points" in text and "within noise" in text


def test_summary_says_when_the_baseline_was_not_trained_fully(tmp_path):
    spec = demo(name="d2")
    uniform = baselines(spec.budget, space=spec.search_space())[0]
    other = WRNConfig(depths=(1, 1, 2), channels=(44, 32, 16), data=uniform.data)
    with TrialStore(str(tmp_path), spec.name) as store:
        store.write(trials=[_row(spec, "a", uniform, "stopped_early", 0.3, 0.8, 5, done=5),
                            _row(spec, "b", other, "finished", 0.70, 0.97, 40)])
    assert "stopped early after 5 epochs, not comparable" in summary(spec, str(tmp_path))


def test_when_the_uniform_baseline_is_best_the_runner_up_is_compared_with_it(tmp_path):
    spec = demo(name="d3")
    uniform, reduced = baselines(spec.budget, space=spec.search_space())
    with TrialStore(str(tmp_path), spec.name) as store:
        store.write(trials=[_row(spec, "a", uniform, "finished", 0.775, 0.98, 36),
                            _row(spec, "b", reduced, "finished", 0.76, 0.98, 40)])
    text = summary(spec, str(tmp_path))
    assert "the best is the uniform baseline d2-2-2 c9-19-37 itself; the runner-up: d2-2-2 c15-30-23" in text
    assert "runner-up - uniform, val robust: -1.5 points +- 4.2" in text and "within noise, z = -0.4" in text


def test_a_sweep_that_selects_on_the_test_split_says_so_and_the_noise_is_the_test_sizes(tmp_path):
    spec = demo(name="d4", recipe={"select_on": "test", "val_size": None})
    assert spec.recipe.val_size == 397  # all of the test split, the size actually used
    uniform, reduced = baselines(spec.budget, space=spec.search_space())
    with TrialStore(str(tmp_path), spec.name) as store:
        store.write(trials=[_row(spec, "a", uniform, "finished", 0.60, 0.95, 36),
                            _row(spec, "b", reduced, "finished", 0.70, 0.97, 40)])
    text = summary(spec, str(tmp_path))
    assert "selected on the TEST split" in text and "optimistic" in text
    assert "397 images each" in text and "seed-to-seed spread is not in it" in text
