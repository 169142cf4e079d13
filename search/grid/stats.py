"""The statistics of a recorded grid: its noise from a config + seed fit, ties, rank
correlation, the expected maximum of equal noisy means, and intervals over replays. numpy only.

Every config of a grid is trained once per training seed, and the seed reaches every config
alike (e.g. the validation PGD's random start is drawn from it), so a config's score is
modelled as ``config effect + seed effect + noise``. The noise is estimated from that fit, not
from each config's spread about its own mean, which would count the seeds' shared offset as
noise. The verdict on a difference is search.db.ranking's (``within_noise``), one for all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SeedFit:
    """The two-way additive fit ``score[config, seed] = mean + config + seed + residual`` of a
    grid whose every config has every seed."""

    config: np.ndarray  # per config: its effect (its mean over seeds minus the grand mean)
    seed: np.ndarray  # per seed: its offset (its mean over configs minus the grand mean)
    sigma: float  # residual standard deviation, NaN with one seed

    @classmethod
    def of(cls, scores: Sequence[Sequence[float]]) -> SeedFit:
        """``scores``: one row per config, one column per seed (the same seeds, in order)."""
        if len({len(row) for row in scores}) != 1:
            raise ValueError("a config + seed fit needs every config trained with the same seeds")
        y = np.asarray(scores, dtype=float)
        grand = y.mean()
        config, seed = y.mean(axis=1) - grand, y.mean(axis=0) - grand
        residual = y - grand - config[:, None] - seed[None, :]
        dof = (y.shape[0] - 1) * (y.shape[1] - 1)
        sigma = math.sqrt((residual ** 2).sum() / dof) if dof > 0 else math.nan
        return cls(config, seed, sigma)

    @property
    def configs(self) -> int:
        return len(self.config)

    @property
    def seeds(self) -> int:
        return len(self.seed)

    @property
    def mean_se(self) -> float:
        """Standard error of one config's mean over the seeds."""
        return self.sigma / math.sqrt(self.seeds)

    @property
    def diff_se(self) -> float:
        """Standard error of a difference of two configs' means (the seed effects cancel)."""
        return math.sqrt(2) * self.mean_se

    def seed_contrast(self, j: int) -> tuple[float, float]:
        """Seed 0's offset minus seed ``j``'s, and its t statistic (for two seeds, the paired t
        over configs)."""
        diff = self.seed[0] - self.seed[j]
        return diff, diff / (self.sigma * math.sqrt(2 / self.configs))


def tie_ranks(values: Sequence[float], *, resolution: float = 1e-6) -> list[tuple[int, int]]:
    """Per value, the ranks (1 = largest) it shares with its equals: (first, last); values closer
    than ``resolution`` are equal (accuracies are counts of images, stored as float32)."""
    keys = [round(v / resolution) for v in values]
    ordered = sorted(keys, reverse=True)
    return [(ordered.index(k) + 1, len(ordered) - ordered[::-1].index(k)) for k in keys]


def rank_label(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def spearman(a: Sequence[float], b: Sequence[float], *, resolution: float = 1e-6) -> float:
    """Rank correlation, ties given their average rank."""
    def ranks(values: Sequence[float]) -> np.ndarray:
        return np.array([(first + last) / 2 for first, last in tie_ranks(values, resolution=resolution)])

    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def pearson(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.corrcoef(np.asarray(a, dtype=float), np.asarray(b, dtype=float))[0, 1])


def expected_max(n: int) -> float:
    """E[max of n independent standard normals] (2.07 for n = 32): how far the largest of n
    equal configs' noisy means lies above their average, in standard errors of one mean."""
    def phi(x: float) -> float:
        return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)

    def cdf(x: float) -> float:
        return 0.5 * (1 + math.erf(x / math.sqrt(2)))

    step = 1e-3
    xs = np.arange(-10, 10, step)
    return float(sum(x * n * phi(x) * cdf(x) ** (n - 1) for x in xs) * step)


def median_interval(values: Sequence[float], *, level: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median of what ``values`` sample (order statistics
    with binomial coverage of at least ``level``; for 20 replays, the 6th and 15th smallest:
    95.9%). Infinite values (a target never reached) are ordinary large values here."""
    x = sorted(values)
    n = len(x)
    below = 0.0  # P(Binomial(n, 1/2) < k), for k = 0, 1, ...
    k = 0
    while k < n:
        p_k = math.comb(n, k) / 2 ** n
        if 2 * (below + p_k) > 1 - level:
            break
        below += p_k
        k += 1
    if k == 0:  # too few values for that coverage: the whole range
        return x[0], x[-1]
    return x[k - 1], x[n - k]
