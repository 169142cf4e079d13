"""Confirming a one-seed sweep's argmax on the other seed: on the shipped grid (the report's two
cases, recomputed here from the table) and on random sub-sweeps (search.grid.report.sub_sweeps)."""

import re
from pathlib import Path

import numpy as np

from search.db.ranking import within_noise
from search.grid.report import Grid, seed_ranking, sub_sweeps
from search.grid.stats import SeedFit, tie_ranks
from space_defs import param_count

DATA = Path(__file__).resolve().parents[3] / "data" / "digits-grid-60K"


def test_the_report_s_two_cases_are_the_table_s():
    grid = Grid.load(str(DATA))
    cfgs = list(grid.table.curves)
    robust = np.array([[c.best for c in grid.table.curves[k]] for k in cfgs])
    clean = np.array([[c.selected[1] for c in grid.table.curves[k]] for k in cfgs])
    params = np.array([param_count(k) for k in cfgs])
    mean, noise = robust.mean(axis=1), SeedFit.of(robust).diff_se
    best, report = mean.max(), grid.render()
    near = best_found = 0
    for a in range(2):
        # the most robust first, ties to the higher clean accuracy, then to fewer parameters
        order = np.lexsort((-params, clean[:, a], robust[:, a]))[::-1]
        near += bool(within_noise(best - mean[order[0]], noise))
        best_found += bool(abs(best - mean[order[0]]) < 1e-6)
        confirmed = max(order[:3], key=lambda i: mean[i])
        line = next(s for s in report.splitlines() if s.startswith(f"- Seed {a}'s top 3"))
        assert ("the best of all 32" in line) == (abs(mean[confirmed] - best) < 1e-6)
    assert (f"within noise of the best by the mean for {near} of 2 seeds, the best itself for "
            f"{best_found}.") in report


def test_the_whole_grid_as_one_sub_sweep_is_the_report_s_two_cases():
    grid = Grid.load(str(DATA))
    t, report = grid.table, grid.render()
    rank, mean = [t.ranks[c][0] for c in t.ranked], [t.score(c) for c in t.ranked]
    for j, seed in enumerate(grid.seed_ids):
        order = seed_ranking(t, j)
        found = sub_sweeps([order.index(c) for c in t.ranked], rank, mean, t.noise, configs=32,
                           draws=1)[0]
        line = next(s for s in report.splitlines() if s.startswith(f"- Seed {seed}'s top 3"))
        assert found[0] == (t.ranks[order[0]][0] == 1) and found[1] == t.near_best(order[0])
        assert found[2] == ("the best of all 32" in line)
        assert found[3] == ("within noise" in line.rsplit("the best minus it", 1)[1])


def test_confirming_never_finds_less_than_the_argmax_and_the_frequencies_are_fractions():
    rng = np.random.default_rng(1)
    mean = np.round(rng.normal(0.8, 0.01, 32) / 0.0025) * 0.0025  # ties, as counts of 200 images
    rank = [first for first, _ in tie_ranks(list(mean))]
    place = rng.permutation(32)
    found = sub_sweeps(place, rank, mean, 0.004)
    assert found.shape == (2000, 4) and 0 <= found.mean() <= 1
    argmax_best, argmax_near, confirmed_best, confirmed_near = found.T
    # the confirmed is the best by the mean of a shortlist that holds the argmax
    assert np.all(confirmed_best >= argmax_best) and np.all(confirmed_near >= argmax_near)
    assert np.all(argmax_near >= argmax_best) and np.all(confirmed_near >= confirmed_best)
    assert np.array_equal(sub_sweeps(place, rank, mean, 0.004), found)  # deterministic
    # a shortlist of one confirms nothing; of the whole sub-sweep, finds its best
    one = sub_sweeps(place, rank, mean, 0.004, top=1)
    assert np.array_equal(one[:, :2], one[:, 2:]) and np.array_equal(one[:, :2], found[:, :2])
    assert sub_sweeps(place, rank, mean, 0.004, top=8)[:, 2].all()
    # a seed that ranks the configs as their mean does always finds the best
    assert sub_sweeps(np.argsort(np.argsort(-mean, kind="stable")), rank, mean, 0.0).all()


def test_the_report_gives_the_simulation_s_frequencies_with_their_binomial_se():
    table_rows = re.findall(r"^\| seed \d \| (.*) \|$", Grid.load(str(DATA)).render(), re.M)
    assert len(table_rows) == 2
    for row in table_rows:
        for cell in row.split(" | "):
            p, se = (float(x) / 100 for x in re.fullmatch(r"([\d.]+)% \+- ([\d.]+)", cell).groups())
            assert 0 <= p <= 1 and abs(se - (p * (1 - p) / 2000) ** 0.5) < 0.0006
