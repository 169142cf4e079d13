"""Optuna-free stand-ins for a trial: enough of ``suggest_*`` to drive a define-by-run space.

``FixedParams`` replays given values (like ``optuna.trial.FixedTrial``); ``RandomParams`` draws
uniformly at random (for previews and benchmarks, without a study).
"""

from __future__ import annotations

import math
import random
from typing import Any, Sequence


class FixedParams:
    def __init__(self, params: dict[str, Any]):
        self.params = dict(params)

    def _get(self, name: str) -> Any:
        if name not in self.params:
            raise ValueError(f"no value given for {name!r} (have {sorted(self.params)})")
        return self.params[name]

    def suggest_int(self, name: str, low: int, high: int, **_: Any) -> int:
        return int(self._get(name))

    def suggest_float(self, name: str, low: float, high: float, **_: Any) -> float:
        return float(self._get(name))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._get(name)


class RandomParams:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.params: dict[str, Any] = {}

    def suggest_int(self, name: str, low: int, high: int, **_: Any) -> int:
        self.params[name] = self.rng.randint(low, high)
        return self.params[name]

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False, **_: Any) -> float:
        if log:
            value = math.exp(self.rng.uniform(math.log(low), math.log(high)))
        else:
            value = self.rng.uniform(low, high)
        self.params[name] = value
        return value

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        self.params[name] = self.rng.choice(list(choices))
        return self.params[name]
