"""SpaceOptions: the knobs of a budget space, the one definition both CLIs take them from
(``python -m space_defs`` previews a space; ``search.run``'s SweepSpec extends this class)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .arch import DataShape
from .budget import parse_budget
from .cli import option
from .space import SPACES, SearchSpace


@dataclass(frozen=True, kw_only=True)
class SpaceOptions:
    space: str = option("per_stage", help=" | ".join(SPACES))
    min_blocks: int = option(1, help="fewest blocks per stage")
    max_blocks: int = option(8, help="most blocks per stage")
    channel_multiple: int = option(8, help="channels of every stage are multiples of this "
                                           "(baselines and grid points may use a divisor of it to keep "
                                           "their shape)")
    tolerance: float = option(0.01, help="fraction of the budget a config may miss it by")
    max_macs: int | None = option(None, help="compute cap per image, e.g. 10G", parse=parse_budget)
    grid_depths: tuple[int, ...] = option(SPACES["grid"].grid_depths,
                                          help="blocks per stage the grid space tries")
    grid_ratios: tuple[float, ...] = option(SPACES["grid"].grid_ratios,
                                            help="log2 widen-factor ratios of neighbour stages the "
                                                 "grid space tries (-1: next stage half as wide)")

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(what)

        need(self.space in SPACES, f"unknown space {self.space!r}; choose one of {', '.join(SPACES)}")
        need(1 <= self.min_blocks <= self.max_blocks,
             f"need 1 <= min blocks <= max blocks, got {self.min_blocks}, {self.max_blocks}")
        need(self.channel_multiple >= 1, f"channel multiple must be >= 1, got {self.channel_multiple}")
        need(0 < self.tolerance < 1, f"tolerance must be in (0, 1), got {self.tolerance}")
        need(self.max_macs is None or self.max_macs >= 1,
             f"max MACs must be positive, got {self.max_macs}")
        need(len(self.grid_depths) >= 1 and min(self.grid_depths) >= 1 and len(self.grid_ratios) >= 1,
             f"grid depths must be positive block counts and grid ratios non-empty, got "
             f"{self.grid_depths}, {self.grid_ratios}")

    def space_for(self, data: DataShape) -> SearchSpace:
        """The search space these options describe, for images and labels of shape ``data``."""
        space = dataclasses.replace(SPACES[self.space], depth_range=(self.min_blocks, self.max_blocks),
                                    multiple=self.channel_multiple, grid_depths=self.grid_depths,
                                    grid_ratios=self.grid_ratios)
        return space.for_data(data)
