"""The one "within noise" verdict (search.db.ranking): |difference| < 2 standard errors."""

import math

import numpy as np

from search.db.ranking import Gap, within_noise


def test_within_noise_is_under_two_standard_errors_elementwise():
    assert list(within_noise(np.array([0.019, 0.02, -0.019, 0.0]), 0.01)) == [True, False, True, True]
    assert within_noise(0.0, math.nan) and not within_noise(0.01, math.nan)


def test_a_gap_says_its_size_noise_and_verdict():
    assert Gap(0.10, 0.047).describe(", 200 images each") == (
        "+10.0 points +- 4.7 (1 s.e., 200 images each; better, z = 2.1)")
    assert Gap(-0.009, 0.016).describe() == "-0.9 points +- 1.6 (1 s.e.; within noise, z = -0.6)"
    assert Gap(-0.05, 0.01).verdict == "worse" and Gap(0.0, 0.0).verdict == "within noise"
    assert Gap(0.02, math.nan).describe() == "+2.0 points (noise unknown)"
