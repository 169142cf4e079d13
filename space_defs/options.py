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
                                           "(baselines may use a divisor of it to keep their shape)")
    tolerance: float = option(0.01, help="fraction of the budget a config may miss it by")
    max_macs: int | None = option(None, help="compute cap per image, e.g. 10G", parse=parse_budget)

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

    def space_for(self, data: DataShape) -> SearchSpace:
        """The search space these options describe, for images and labels of shape ``data``."""
        space = dataclasses.replace(SPACES[self.space], depth_range=(self.min_blocks, self.max_blocks),
                                    multiple=self.channel_multiple)
        return space.for_data(data)
