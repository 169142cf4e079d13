"""The budget-constrained search space: per-stage depths and widths that meet a parameter budget.

A sample fixes what the search is about (blocks per stage, and how the widen factor changes from
one stage to the next); the one remaining degree of freedom, the overall width, is then solved so
that the network lands on the budget. Channels are rounded to a multiple (8 suits tensor cores),
and a bounded search over neighbouring roundings puts every config within the tolerance, so no
trial is ever rejected and no loop can spin.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from dataclasses import dataclass
from typing import Any, Protocol

from .arch import BASE_CHANNELS, DataShape, WRNConfig
from .budget import format_count, parse_budget
from .cost import _cost, macs
from .trials import FixedParams, RandomParams

RATIOS = ("log2_k2_over_k1", "log2_k3_over_k2")  # log2 of widen-factor ratios of neighbour stages
BLOCKS = ("stage1_blocks", "stage2_blocks", "stage3_blocks")
UNIFORM_BLOCKS = "blocks_per_stage"
KINDS = ("per_stage", "uniform", "grid")
SHAPE_SLACK = 0.05  # a baseline's stage width ratios may miss their shape by this (relative)
_WINDOW = 3  # neighbouring roundings tried for each stage that is not solved exactly, each way
_OFFSETS = sorted(itertools.product(range(-_WINDOW, _WINDOW + 1), repeat=2),
                  key=lambda o: (abs(o[0]) + abs(o[1]), max(map(abs, o))))  # nearest first


class Trial(Protocol):
    """The part of ``optuna.Trial`` a space uses."""

    def suggest_int(self, name: str, low: int, high: int) -> int: ...
    def suggest_float(self, name: str, low: float, high: float) -> float: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


class InfeasibleBudget(ValueError):
    """The budget (or compute cap) cannot be met by this space."""


@dataclass(frozen=True)
class SearchSpace:
    """Which networks a sweep may try. ``kind``: per_stage | uniform | grid."""

    name: str
    kind: str
    depth_range: tuple[int, int] = (1, 8)  # blocks per stage, inclusive
    ratio_range: tuple[float, float] = (-2.0, 1.5)  # log2(k_next / k), per stage boundary
    grid_depths: tuple[int, ...] = (2, 4, 6)  # blocks per stage, grid kind only
    grid_ratios: tuple[float, ...] = (-1.0, 0.0, 1.0)  # log2(k_next / k), grid kind only
    multiple: int = 8  # channels are multiples of this
    max_channels: int = 8192  # per stage
    stem_channels: int = 16
    data: DataShape = DataShape()  # image channels, classes, image side of every config

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown space kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        lo, hi = self.depth_range
        if not 1 <= lo <= hi:
            raise ValueError(f"depth_range must satisfy 1 <= low <= high, got {self.depth_range}")
        if not self.ratio_range[0] <= self.ratio_range[1]:
            raise ValueError(f"ratio_range must be (low, high), got {self.ratio_range}")
        if not self.grid_depths or min(self.grid_depths) < 1 or not self.grid_ratios:
            raise ValueError("grid_depths must be positive block counts and grid_ratios non-empty")
        if self.multiple < 1 or self.max_channels < self.multiple:
            raise ValueError(f"need 1 <= multiple <= max_channels, got {self.multiple}, {self.max_channels}")
        if not isinstance(self.data, DataShape):
            raise ValueError(f"SearchSpace.data must be a DataShape, got {self.data!r}")

    def for_data(self, data: DataShape) -> SearchSpace:
        """The same space for another dataset's image shape and label count."""
        return dataclasses.replace(self, data=data)

    # -- sampling -------------------------------------------------------------------------
    def sample_shape(self, trial: Trial) -> tuple[tuple[int, int, int], tuple[float, float]]:
        """Blocks per stage and the log2 widen-factor ratios, drawn through ``trial.suggest_*``."""
        if self.kind == "uniform":
            d = trial.suggest_int(UNIFORM_BLOCKS, *self.depth_range)
            return (d, d, d), (0.0, 0.0)
        if self.kind == "grid":
            depths = tuple(trial.suggest_categorical(n, list(self.grid_depths)) for n in BLOCKS)
            return depths, tuple(float(trial.suggest_categorical(n, list(self.grid_ratios)))
                                 for n in RATIOS)
        depths = tuple(trial.suggest_int(n, *self.depth_range) for n in BLOCKS)
        return depths, tuple(trial.suggest_float(n, *self.ratio_range) for n in RATIOS)

    def grid_search_space(self) -> dict[str, list]:
        """Every value of each parameter, for ``optuna.samplers.GridSampler`` (grid kind)."""
        if self.kind != "grid":
            raise ValueError(f"space {self.name!r} is not a grid")
        return {**{n: list(self.grid_depths) for n in BLOCKS},
                **{n: list(self.grid_ratios) for n in RATIOS}}

    def grid_size(self) -> int:
        return len(self.grid_depths) ** 3 * len(self.grid_ratios) ** 2

    def baseline_params(self) -> list[dict[str, Any]]:
        """The hand-designed references every sweep evaluates first, as this space's params:
        the uniform WRN-28 shape and Huang et al.'s WRN-34-R shape (widen factors 20-20-8)."""
        if self.kind == "uniform":
            return [{UNIFORM_BLOCKS: _clip(d, *self.depth_range)} for d in (4, 5)]
        shapes = [((4, 4, 4), (0.0, 0.0)), ((5, 5, 5), (0.0, math.log2(8 / 20)))]
        points = []
        for depths, ratios in shapes:
            if self.kind == "grid":
                depths = [min(self.grid_depths, key=lambda g: (abs(g - d), g)) for d in depths]
                ratios = [min(self.grid_ratios, key=lambda g: (abs(g - r), g)) for r in ratios]
            else:
                depths = [_clip(d, *self.depth_range) for d in depths]
                ratios = [_clip(r, *self.ratio_range) for r in ratios]
            point = {**dict(zip(BLOCKS, depths)), **dict(zip(RATIOS, ratios))}
            if point not in points:
                points.append(point)
        return points

    def keeps_shape(self, depths, ratios) -> bool:
        """Whether this point is a designed shape, solved keeping its width ratios: the
        baselines, every uniform sample and every grid point (a grid compares shapes)."""
        return self.kind in ("uniform", "grid") or {**dict(zip(BLOCKS, depths)), **dict(zip(RATIOS, ratios))} \
            in self.baseline_params()

    # -- solving for the budget -----------------------------------------------------------
    def solve_shape(self, depths, ratios, budget: int, tolerance: float = 0.01) -> WRNConfig:
        """``solve``, keeping the stages' width ratios near ``ratios`` (so the uniform WRN stays
        1:2:4 at small budgets): channels in the space's multiple where that keeps them within
        SHAPE_SLACK, else in the largest divisor of it that does, else the nearest shape found
        (at a few channels a stage one channel is several percent: 60K params on digits give
        the uniform WRN c9-19-37, where multiples of 4 would give c12-12-40)."""
        try:  # the usual case, and the cheap one: the plain solution keeps the shape already
            cfg = self.solve(depths, ratios, budget, tolerance)
            if shape_error(cfg, ratios) <= SHAPE_SLACK:
                return cfg
        except InfeasibleBudget:
            pass
        best = None
        for m in sorted((d for d in range(1, self.multiple + 1) if self.multiple % d == 0), reverse=True):
            try:
                cfg = dataclasses.replace(self, multiple=m).solve(depths, ratios, budget, tolerance,
                                                                  keep_shape=True)
            except InfeasibleBudget:
                continue
            error = shape_error(cfg, ratios)
            if error <= SHAPE_SLACK:
                return cfg
            best = min(best or (math.inf, None), (error, cfg), key=lambda b: b[0])
        if best is None:
            return self.solve(depths, ratios, budget, tolerance)  # raises the space's own error
        return best[1]

    def solve(self, depths, ratios, budget: int, tolerance: float = 0.01, *,
              keep_shape: bool = False) -> WRNConfig:
        """The config of these depths and width ratios whose parameters are within
        ``tolerance`` of ``budget``, channels rounded to ``multiple`` (``keep_shape``: of the
        roundings within tolerance, the one nearest the ratios, not the first found)."""
        w2 = 2.0 ** ratios[0]
        shape = (BASE_CHANNELS[0], BASE_CHANNELS[1] * w2, BASE_CHANNELS[2] * w2 * 2.0 ** ratios[1])
        scale = _solve_quadratic(lambda s: self._params(depths, [s * v for v in shape]), budget)
        target = [scale * v for v in shape]
        if max(target) > self.max_channels:
            raise InfeasibleBudget(
                f"budget {format_count(budget)} is too large for space {self.name!r}: depths "
                f"{tuple(depths)} would need {max(target):.0f} channels (max_channels "
                f"{self.max_channels}); raise the depth range or lower the budget")
        shares = _cost(depths, target, *self._shape())[2]
        best = (math.inf, None)
        for free in sorted(range(3), key=lambda i: -shares[i]):  # the stage solved exactly
            shape = (lambda c: shape_error(self._config(depths, c), ratios)) if keep_shape else None
            best = min(best, self._round(depths, target, free, budget, tolerance, shape),
                       key=lambda b: b[0])
            if best[0] <= tolerance:
                return self._config(depths, best[1])
        narrowest = self._params(depths, [self.multiple] * 3)
        if narrowest > budget * (1 + tolerance):
            raise InfeasibleBudget(
                f"budget {format_count(budget)} is too small for space {self.name!r}: depths "
                f"{tuple(depths)} at the narrowest widths ({self.multiple} channels a stage) "
                f"already have {format_count(narrowest)} parameters; lower the depth range or "
                f"raise the budget")
        raise InfeasibleBudget(
            f"budget {format_count(budget)} cannot be met within {tolerance:.1%} by space "
            f"{self.name!r} at depths {tuple(depths)} with channels in multiples of "
            f"{self.multiple} (closest {best[0]:.1%} off); use a smaller channel multiple or a "
            f"larger tolerance")

    def _round(self, depths, target, free: int, budget: int, tolerance: float, shape=None):
        """(relative error, channels): round all but stage ``free`` to nearby multiples (at least
        one), nearest first, solving stage ``free`` exactly for each; the first within
        tolerance, else the best (with ``shape``: of those within tolerance, the one it scores
        lowest)."""
        m = self.multiple
        others = [i for i in range(3) if i != free]
        nearest = {i: max(1, round(target[i] / m)) for i in others}
        best, fits = (math.inf, None), []
        for offset in _OFFSETS:
            channels = list(target)
            for i, o in zip(others, offset):
                channels[i] = (nearest[i] + o) * m
            if min(channels[i] for i in others) < m:
                continue
            exact = _solve_quadratic(lambda c: self._params(depths, _put(channels, free, c)),
                                     budget, probes=(1000.0, 2000.0, 3000.0))
            for units in {max(1, math.floor(exact / m)), max(1, math.ceil(exact / m))}:
                candidate = _put(channels, free, units * m)
                error = abs(self._params(depths, candidate) - budget) / budget
                if shape is not None and error <= tolerance:
                    fits.append((shape(candidate), error, candidate))
                best = min(best, (error, candidate), key=lambda b: b[0])
            if best[0] <= tolerance and shape is None:
                break
        if fits:
            _, error, candidate = min(fits, key=lambda f: (f[0], f[1]))
            return error, candidate
        return best

    def within_macs(self, depths, ratios, budget: int, tolerance: float, max_macs: int) -> WRNConfig:
        """The config nearest the sampled one that meets the budget and costs at most
        ``max_macs``: bisect along the line from the sample toward the cheapest shape of the
        space (fewest blocks, width moved into the low-resolution last stage)."""
        cheapest_depths, cheapest_ratios = self._cheapest_shape()
        cheapest = self.solve(cheapest_depths, cheapest_ratios, budget, tolerance)
        if macs(cheapest) > max_macs:
            raise InfeasibleBudget(
                f"max MACs {format_count(max_macs)} is below the cheapest config of space "
                f"{self.name!r} at budget {format_count(budget)} ({cheapest.name}, "
                f"{format_count(macs(cheapest))} MACs); raise the cap or lower the budget")
        config = self.solve(depths, ratios, budget, tolerance)
        if macs(config) <= max_macs:
            return config
        feasible, low, high = cheapest, 0.0, 1.0
        for _ in range(16):
            t = (low + high) / 2
            blend_depths = tuple(round(d + t * (c - d)) for d, c in zip(depths, cheapest_depths))
            blend_ratios = tuple(r + t * (c - r) for r, c in zip(ratios, cheapest_ratios))
            candidate = self.solve(blend_depths, blend_ratios, budget, tolerance)
            if macs(candidate) <= max_macs:
                feasible, high = candidate, t
            else:
                low = t
        return feasible

    def check(self, budget: int, tolerance: float = 0.01, max_macs: int | None = None) -> None:
        """Raise InfeasibleBudget (a ValueError) before any trial runs if some sample of this
        space could not meet the budget: every corner of the space and a seeded spread of
        interior points are solved."""
        if not 0 < tolerance < 1:
            raise ValueError(f"tolerance must be a fraction in (0, 1), got {tolerance}")
        rng = random.Random(0)
        probes = [self._corner_trial(c) for c in self._corners()]
        probes += [RandomParams(rng) for _ in range(200)]
        for trial in probes:
            depths, ratios = self.sample_shape(trial)
            if max_macs is None:
                self.solve(depths, ratios, budget, tolerance)
            else:
                self.within_macs(depths, ratios, budget, tolerance, max_macs)

    # -- helpers ----------------------------------------------------------------------------
    def _shape(self) -> tuple[int, int, int, int]:
        return self.stem_channels, self.data.in_channels, self.data.num_classes, self.data.input_size

    def _params(self, depths, channels) -> float:
        return _cost(depths, channels, *self._shape())[0]

    def _config(self, depths, channels) -> WRNConfig:
        return WRNConfig(depths=tuple(depths), channels=tuple(int(c) for c in channels),
                         stem_channels=self.stem_channels, data=self.data)

    def _cheapest_shape(self) -> tuple[tuple[int, int, int], tuple[float, float]]:
        if self.kind == "uniform":
            return (self.depth_range[0],) * 3, (0.0, 0.0)
        if self.kind == "grid":
            return (min(self.grid_depths),) * 3, (max(self.grid_ratios),) * 2
        return (self.depth_range[0],) * 3, (self.ratio_range[1],) * 2

    def _corners(self) -> list[tuple[int, ...]]:
        """Index tuples (0 = low end, 1 = high end) for each parameter of the space."""
        n = 1 if self.kind == "uniform" else 5
        return list(itertools.product((0, 1), repeat=n))

    def _corner_trial(self, corner: tuple[int, ...]) -> FixedParams:
        if self.kind == "grid":
            choices = [sorted(self.grid_depths)] * 3 + [sorted(self.grid_ratios)] * 2
            names = BLOCKS + RATIOS
        elif self.kind == "uniform":
            choices, names = [self.depth_range], (UNIFORM_BLOCKS,)
        else:
            choices = [self.depth_range] * 3 + [self.ratio_range] * 2
            names = BLOCKS + RATIOS
        return FixedParams({n: c[-1] if end else c[0] for n, c, end in zip(names, choices, corner)})


def shape_error(cfg: WRNConfig, ratios) -> float:
    """Largest relative miss of the stage 2 and 3 widths relative to stage 1, against the
    widen-factor ratios ``ratios`` (log2) the config was solved for."""
    k = cfg.widen_factors
    wanted = (2.0 ** ratios[0], 2.0 ** (ratios[0] + ratios[1]))
    return max(abs(k[1] / k[0] / wanted[0] - 1), abs(k[2] / k[0] / wanted[1] - 1))


def _clip(value, low, high):
    return min(max(value, low), high)


def _put(channels, index, value):
    out = list(channels)
    out[index] = value
    return out


def _solve_quadratic(f, target: float, probes=(2.0, 3.0, 4.0)) -> float:
    """The positive root of f(x) = target for f an exact quadratic, fitted through three probes
    (probes avoid x == stem width, where the first shortcut vanishes and f changes form)."""
    x0, x1, x2 = probes
    f0, f1, f2 = f(x0), f(x1), f(x2)
    a = ((f2 - f1) / (x2 - x1) - (f1 - f0) / (x1 - x0)) / (x2 - x0)
    b = (f1 - f0) / (x1 - x0) - a * (x0 + x1)
    c = f0 - a * x0 * x0 - b * x0
    disc = b * b - 4 * a * (c - target)
    if disc < 0:
        return 0.0
    return (-b + math.sqrt(disc)) / (2 * a)


SPACES: dict[str, SearchSpace] = {
    "per_stage": SearchSpace("per_stage", "per_stage"),
    "uniform": SearchSpace("uniform", "uniform"),
    "grid": SearchSpace("grid", "grid"),
}


def get_space(space: str | SearchSpace) -> SearchSpace:
    if isinstance(space, SearchSpace):
        return space
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; choose one of {', '.join(SPACES)}")
    return SPACES[space]


def suggest_config(trial: Trial, budget: int | str, *, space: str | SearchSpace = "per_stage",
                   max_macs: int | None = None, tolerance: float = 0.01) -> WRNConfig:
    """Define-by-run: draw a network of the space whose parameters are within ``tolerance``
    of ``budget`` (and whose MACs are at most ``max_macs``). Calls only ``trial.suggest_*``."""
    space = get_space(space)
    budget = parse_budget(budget)
    depths, ratios = space.sample_shape(trial)
    if max_macs is None:
        if space.keeps_shape(depths, ratios):
            return space.solve_shape(depths, ratios, budget, tolerance)
        return space.solve(depths, ratios, budget, tolerance)
    return space.within_macs(depths, ratios, budget, tolerance, max_macs)


def baselines(budget: int | str, *, space: str | SearchSpace = "per_stage",
              max_macs: int | None = None, tolerance: float = 0.01) -> list[WRNConfig]:
    """The reference networks of ``space.baseline_params()`` at this budget."""
    space = get_space(space)
    return [suggest_config(FixedParams(p), budget, space=space, max_macs=max_macs, tolerance=tolerance)
            for p in space.baseline_params()]
