"""--confirm: which runs a sweep still needs, and the confirmed answer over seeds with its noise."""

import dataclasses
import datetime as dt
import math
import statistics

import pandas as pd
import pytest

from search.db.ranking import arch_label
from search.db.schema import EVALS, TRIALS, EvalRow, TrialRow
from search.db.seeds import SeedScores, confirmation, paired_gap
from search.db.store import TrialStore
from search.run import main, summary
from search.spec import demo
from search.sweep.confirm import confirmation_runs, most_confirmation_runs
from space_defs import WRNConfig, macs, param_count

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
SPEC = demo(confirm=2, confirm_seeds=3)
UNIFORM, REDUCED = SPEC.uniform_baseline(), WRNConfig(depths=(1, 1, 2), channels=(44, 32, 16),
                                                      data=SPEC.uniform_baseline().data)
OTHER = WRNConfig(depths=(2, 1, 1), channels=(20, 24, 32), data=UNIFORM.data)


def row(trial_id, cfg, seed=0, robust=0.7, status="finished", role="search", done=None, clean=0.95):
    spec = SPEC
    return TrialRow(
        sweep=spec.name, trial_id=trial_id, status=status, space=spec.space, **cfg.to_dict(),
        params=param_count(cfg), macs=macs(cfg), budget=spec.budget, dataset=spec.dataset,
        method=spec.recipe.method, epochs_planned=spec.recipe.epochs, eps=spec.recipe.eps, seed=seed,
        role=role, baseline="uniform" if cfg == UNIFORM else None, recipe_json="{}",
        val_size=spec.recipe.val_size, epochs_done=spec.recipe.epochs if done is None else done,
        best_val_robust_acc=robust, best_val_clean_acc=clean, best_val_robust_epoch=10,
        started_at=T0, updated_at=T0)


def frame(rows) -> pd.DataFrame:
    df = TRIALS.to_arrow(rows).to_pandas()
    return df.assign(arch=arch_label(df))


def test_the_top_k_configs_and_the_uniform_baseline_on_every_seed_not_yet_trained():
    rows = [row("a", UNIFORM, robust=0.60), row("b", REDUCED, robust=0.72),
            row("c", OTHER, robust=0.70), row("d", OTHER, robust=0.65)]  # sampled twice
    runs = confirmation_runs(SPEC, frame(rows))
    assert [(r.arch.label, r.seed, r.role) for r in runs] == [
        (REDUCED.label, 1, "confirm"), (REDUCED.label, 2, "confirm"),
        (OTHER.label, 1, "confirm"), (OTHER.label, 2, "confirm"),
        (UNIFORM.label, 1, "confirm"), (UNIFORM.label, 2, "confirm")]
    assert len(runs) == most_confirmation_runs(SPEC)  # no ASHA: the uniform's own run is seed 0
    # trained once, whatever its outcome, is not trained again; lost is
    rows += [row("e", REDUCED, seed=1, role="confirm"), row("f", OTHER, seed=1, role="confirm",
                                                            status="failed", robust=None),
             row("g", UNIFORM, seed=2, role="confirm", status="lost", done=3)]
    again = [(r.arch.label, r.seed) for r in confirmation_runs(SPEC, frame(rows))]
    assert again == [(REDUCED.label, 2), (OTHER.label, 2), (UNIFORM.label, 1), (UNIFORM.label, 2)]
    assert confirmation_runs(dataclasses.replace(SPEC, confirm=0), frame(rows)) == []


def test_a_uniform_baseline_asha_stopped_is_trained_on_every_seed():
    spec = dataclasses.replace(SPEC, scheduler="asha", confirm=1)
    rows = [row("a", UNIFORM, robust=0.3, status="stopped_early", done=20), row("b", OTHER)]
    runs = [(r.arch.label, r.seed) for r in confirmation_runs(spec, frame(rows))]
    assert runs == [(OTHER.label, 1), (OTHER.label, 2), (UNIFORM.label, 0), (UNIFORM.label, 1),
                    (UNIFORM.label, 2)]
    assert most_confirmation_runs(spec) == len(runs)


def test_the_seed_error_is_the_spread_over_seeds_at_least_the_images_noise():
    spread = SeedScores("x", ((0, 0.70), (1, 0.80), (2, 0.75)), images=1e6)
    assert spread.se == pytest.approx(statistics.stdev([0.70, 0.80, 0.75]) / math.sqrt(3))
    same = SeedScores("x", ((0, 0.75), (1, 0.75)), images=200)
    assert same.se == pytest.approx(math.sqrt(0.75 * 0.25 / 200) / math.sqrt(2))
    assert "75.0% +- 2.2 (seeds 0: 75.0, 1: 75.0)" == same.describe()


def test_the_paired_difference_cancels_what_a_seed_does_to_every_config():
    offsets = {0: -0.10, 1: 0.00, 2: 0.12}  # seed effects far larger than the configs' gap
    a = SeedScores("a", tuple((s, 0.70 + o + 0.03) for s, o in offsets.items()), images=1e6)
    u = SeedScores("u", tuple((s, 0.70 + o) for s, o in offsets.items()) + ((3, 0.1),), images=1e6)
    gap = paired_gap(a, u)  # seed 3 has no pair
    assert gap.diff == pytest.approx(0.03) and gap.se < 0.001 and gap.verdict == "better"
    unpaired = math.hypot(a.se, SeedScores("u", u.scores[:3], 1e6).se)
    assert unpaired > 0.05  # the same numbers compared as unpaired means: within noise
    assert math.isnan(paired_gap(a, SeedScores("v", ((9, 0.5),), 200)).diff)


def test_the_answer_is_the_best_mean_and_says_when_the_single_run_best_differs():
    rows = [row("a", UNIFORM, robust=0.70), row("b", REDUCED, robust=0.80), row("c", OTHER, robust=0.78),
            row("b1", REDUCED, 1, 0.70, role="confirm"), row("b2", REDUCED, 2, 0.71, role="confirm"),
            row("c1", OTHER, 1, 0.78, role="confirm"), row("c2", OTHER, 2, 0.77, role="confirm"),
            row("a1", UNIFORM, 1, 0.69, role="confirm"), row("a2", UNIFORM, 2, 0.71, role="confirm",
                                                              status="catastrophic_overfit", done=30)]
    found = confirmation(frame(rows))
    assert found.single_run_best == REDUCED.label and found.best.arch == OTHER.label
    assert found.uniform == UNIFORM.label
    assert [s for s, _ in found.scores["val robust"][UNIFORM.label].scores] == [0, 1]  # a2 is not whole
    text = "\n".join(found.describe())
    assert f"answer: {OTHER.label}, the best mean val robust over 3 seeds" in text
    assert f"not the search's single-run best, {REDUCED.label}" in text
    assert f"not confirmed: {UNIFORM.label} seed 2: catastrophic overfit after 30 epochs" in text
    # paired over the two seeds the uniform has: (0.78 - 0.70 + 0.78 - 0.69) / 2
    assert "answer - uniform, val robust, paired over 2 seeds: +8.5 points" in text
    assert confirmation(frame(rows[:3])) is None  # nothing confirmed


def test_the_summary_gives_the_confirmed_answer_with_test_numbers_per_seed(tmp_path):
    spec = SPEC
    rows = [row("a", UNIFORM, robust=0.70), row("b", OTHER, robust=0.74),
            row("b1", OTHER, 1, 0.73, role="confirm"), row("a1", UNIFORM, 1, 0.71, role="confirm")]
    evals = [EvalRow(sweep=spec.name, trial_id=t, seed=s, attack="pgd20", split="test", accuracy=acc,
                     n_examples=397, recorded_at=T0)
             for t, s, acc in (("a", 0, 0.60), ("a1", 1, 0.62), ("b", 0, 0.66), ("b1", 1, 0.64))]
    with TrialStore(str(tmp_path), spec.name) as store:
        store.write(trials=rows, evals=evals)
    text = summary(spec, str(tmp_path))
    assert "2 trials: 2 finished\n  and 2 confirmation runs: 2 finished" in text
    assert f"best single run: {OTHER.label}" in text
    assert f"answer: {OTHER.label}, the best mean val robust over 2 seeds" in text
    assert "  test pgd20:\n" in text and "65.0% +- " in text and "(seeds 0: 66.0, 1: 64.0)" in text
    assert "answer - uniform, test pgd20, paired over 2 seeds: +4.0 points" in text
    assert EVALS.to_arrow(evals).column("seed").to_pylist() == [0, 1, 0, 1]


@pytest.mark.parametrize("args, says", [
    (["--confirm", "6", "--trials", "5"], "--confirm K must be between 0 and the number of trials (5)"),
    (["--confirm", "2", "--confirm-seeds", "1"], "--confirm-seeds must be at least 2"),
])
def test_bad_confirmation_flags_are_one_line_exit_2(tmp_path, capsys, args, says):
    assert main(["--demo", "--storage", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and not list(tmp_path.iterdir())


def test_a_resumed_confirmation_passes_over_runs_the_database_holds_as_trained(tmp_path):
    """Tune's snapshot can be older than the database (a driver killed between the two): the
    restored searcher's next run may already be trained; it is not given out again."""
    from ray.tune.search import Searcher

    from search.trial.trainable import TrialRun
    from search.tune.searchers import FixedRuns

    spec = SPEC
    runs = [TrialRun(REDUCED, seed, "confirm").config() for seed in (1, 2)] + \
        [TrialRun(UNIFORM, 1, "confirm").config()]
    with TrialStore(str(tmp_path), spec.name) as store:
        store.write(trials=[row("a", UNIFORM, robust=0.6), row("b", REDUCED, robust=0.8),
                            row("b1", REDUCED, seed=1, role="confirm"),
                            row("u1", UNIFORM, seed=1, role="confirm", status="running", done=4)])
    searcher = FixedRuns(runs, spec=spec, storage=str(tmp_path), metric="val_robust_acc", mode="max")
    given = [searcher.suggest(f"t{i}") for i in range(3)]
    assert given[0] == runs[1]  # seed 1 is trained: passed over
    assert given[1] == runs[2]  # running in the database but no Tune trial of it: trained again
    assert given[2] == Searcher.FINISHED
    searcher.save(str(tmp_path / "state.pkl"))
    restored = FixedRuns([], spec=spec, storage=str(tmp_path))
    restored.restore(str(tmp_path / "state.pkl"))
    assert (restored.runs, restored.given) == (runs, 3)


def test_the_plots_draw_the_noise_and_the_seeds_spread(tmp_path):
    from search.db import load_epochs, load_trials
    from search.db.plots import confirmed_means, render
    from search.db.ranking import val_errors

    rows = [row("a", UNIFORM, robust=0.60), row("b", REDUCED, robust=0.70),
            row("b1", REDUCED, 1, 0.66, role="confirm"), row("a1", UNIFORM, 1, 0.64, role="confirm")]
    with TrialStore(str(tmp_path / "db"), SPEC.name) as store:
        store.write(trials=rows)
    trials = load_trials(str(tmp_path / "db"), SPEC.name)
    robust_se, clean_se = val_errors(trials)
    assert robust_se[0] == pytest.approx(math.sqrt(0.6 * 0.4 / 200))  # the images robust is measured on
    assert clean_se[0] == pytest.approx(math.sqrt(0.95 * 0.05 / 200))  # digits' validation split
    means = confirmed_means(trials).set_index("label")
    assert means.loc[f"{REDUCED.label}, 2 seeds", "robust"] == pytest.approx(0.68)
    assert means.loc[f"{REDUCED.label}, 2 seeds", "robust_se"] == pytest.approx(
        SeedScores("x", ((0, 0.70), (1, 0.66)), 200).se)
    render(trials.assign(arch=arch_label(trials)), load_epochs(str(tmp_path / "db"), SPEC.name),
           tmp_path / "figs")
    page = (tmp_path / "figs" / "report.html").read_text()
    assert "confirmed: mean +- 1 s.e. over seeds" in page and '"error_y"' in page
