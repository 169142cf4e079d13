"""Parameter budgets as people write them: '36M', '1.5m', '500K', '2_000_000'."""

from __future__ import annotations

import re

MAX_BUDGET = 100_000_000_000  # 100G parameters: beyond any network this space can train
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_BUDGET = re.compile(r"(?P<num>\d[\d_]*(?:\.\d+)?|\.\d+)(?P<suffix>[kmg]?)", re.IGNORECASE)
_ACCEPTED = "an integer or decimal with an optional K/M/G suffix, e.g. 36M, 1.5M, 500k, 2_000_000"


def parse_budget(text: str | int) -> int:
    """The number of parameters a budget string names; ValueError for anything else."""
    if isinstance(text, bool):
        raise ValueError(f"invalid budget {text!r}: expected {_ACCEPTED}")
    if isinstance(text, int):
        value = text
    else:
        m = _BUDGET.fullmatch(str(text).strip())
        if not m or "__" in m["num"] or m["num"].endswith("_"):
            raise ValueError(f"invalid budget {text!r}: expected {_ACCEPTED}")
        whole, _, frac = m["num"].replace("_", "").partition(".")
        scale = _SUFFIX[m["suffix"].lower()]
        numerator = int(whole or "0") * 10 ** len(frac) + int(frac or "0")
        value, remainder = divmod(numerator * scale, 10 ** len(frac))
        if remainder:
            raise ValueError(f"invalid budget {text!r}: a parameter count must be a whole number")
    if value <= 0:
        raise ValueError(f"invalid budget {text!r}: must be positive ({_ACCEPTED})")
    if value > MAX_BUDGET:
        raise ValueError(f"invalid budget {text!r}: over the maximum of 100G parameters")
    return value


def format_count(n: float) -> str:
    """36479194 -> '36.48M' (for tables and names)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def format_sci(x: float) -> str:
    """1.2734e18 -> '1.27e18': 3 significant digits (FLOPs, rates)."""
    return f"{x:.3g}".replace("e+", "e").replace("e0", "e")
