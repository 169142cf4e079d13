"""Pure-Python description of the search: architectures, their exact cost, the budget space.

Importing this package never imports torch, ray or optuna.
"""

from .arch import BASE_CHANNELS, STRIDES, DataShape, WRNConfig, parse_arch, wrn, wrn34_r
from .budget import format_count, parse_budget
from .cost import macs, param_count, stage_params
from .options import SpaceOptions
from .space import SPACES, SearchSpace, baselines, get_space, suggest_config

__all__ = [
    "BASE_CHANNELS", "STRIDES", "DataShape", "WRNConfig", "parse_arch", "wrn", "wrn34_r",
    "format_count", "parse_budget", "macs", "param_count", "stage_params",
    "SPACES", "SearchSpace", "baselines", "get_space", "suggest_config", "SpaceOptions",
]
