"""The recorded grid's statistics: the noise from a config + seed fit, ties, rank correlation,
the expected maximum of equal means and the interval of a median over replays."""

import math
import random
import statistics

import pytest

from search.grid.stats import SeedFit, expected_max, median_interval, spearman, tie_ranks


def test_a_seed_offset_shared_by_every_config_is_not_counted_as_noise():
    rng = random.Random(0)
    effects = [rng.gauss(0, 0.02) for _ in range(32)]
    clean = [[e + rng.gauss(0, 0.01) for _ in range(2)] for e in effects]
    shifted = [[a + 0.01, b - 0.01] for a, b in clean]  # seed 0 scores 2 points above seed 1
    fit, fit_shifted = SeedFit.of(clean), SeedFit.of(shifted)
    assert fit_shifted.diff_se == pytest.approx(fit.diff_se)  # the fit takes the offset out
    assert fit_shifted.seed_contrast(1)[0] == pytest.approx(fit.seed_contrast(1)[0] + 0.02)
    # two seeds: the seed contrast's t is the paired t over configs
    d = [a - b for a, b in shifted]
    paired_t = statistics.fmean(d) / (statistics.stdev(d) / math.sqrt(len(d)))
    assert fit_shifted.seed_contrast(1)[1] == pytest.approx(paired_t)
    # and the s.e. of a difference of two config means is the residual's, times sqrt(2 / seeds)
    assert fit_shifted.diff_se == pytest.approx(statistics.stdev(d) / math.sqrt(2))
    # each config's spread about its own mean would count the offset as noise
    pooled = math.sqrt(sum((x - statistics.fmean(r)) ** 2 for r in shifted for x in r) / 32)
    assert pooled > fit_shifted.diff_se


def test_one_seed_measures_no_noise_and_unequal_seeds_are_refused():
    assert math.isnan(SeedFit.of([[0.5], [0.6]]).diff_se)
    with pytest.raises(ValueError, match="same seeds"):
        SeedFit.of([[0.5, 0.6], [0.6]])


def test_ties_share_their_ranks_at_the_resolution_of_the_counts():
    # float32 accuracies: 0.8125 may come back as 0.81249999
    assert tie_ranks([0.8125, 0.81249999, 0.80, 0.7925, 0.7925, 0.7925]) == [
        (1, 2), (1, 2), (3, 3), (4, 6), (4, 6), (4, 6)]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(0.866, abs=1e-3)  # ties: average rank


def test_the_largest_of_n_equal_noisy_means():
    assert expected_max(1) == pytest.approx(0.0, abs=1e-6)
    assert expected_max(2) == pytest.approx(1 / math.sqrt(math.pi), abs=1e-4)
    assert expected_max(32) == pytest.approx(2.07, abs=0.005)


def test_the_interval_of_a_median_over_20_replays_is_the_6th_to_the_15th_value():
    values = [float(v) for v in range(1, 21)]
    random.Random(1).shuffle(values)
    assert median_interval(values) == (6.0, 15.0)  # binomial coverage 95.9%
    assert median_interval([1.0, 2.0, math.inf] * 7)[1] == math.inf  # never reached stays never
    assert median_interval([3.0, 1.0]) == (1.0, 3.0)  # too few for 95%: the range
