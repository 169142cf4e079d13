"""Sampling speed and budget accuracy of the spaces: python -m space_defs.bench [--budget 36M]"""

from __future__ import annotations

import random
import time

from . import SPACES, format_count, param_count, parse_budget, suggest_config
from .cli import Parser, integer
from .trials import RandomParams


def main() -> None:
    p = Parser(prog="python -m space_defs.bench", description=__doc__)
    p.add_argument("--budget", default="36M", help="parameter budget (default: 36M)")
    p.add_argument("-n", type=integer, default=10_000, help="samples per space (default: 10000)")
    args = p.parse_args()
    budget = parse_budget(args.budget)
    print(f"{args.n} samples per space at {format_count(budget)}, tolerance 1%")
    for name, space in SPACES.items():
        rng = random.Random(0)
        start = time.perf_counter()
        space.check(budget)
        checked = time.perf_counter()
        configs = [suggest_config(RandomParams(rng), budget, space=space) for _ in range(args.n)]
        seconds = time.perf_counter() - checked
        errors = [abs(param_count(c) / budget - 1) for c in configs]
        inside = sum(e <= 0.01 for e in errors) / len(errors)
        narrow = sum(c.widen_factors[2] < 0.95 * c.widen_factors[1] for c in configs) / len(configs)
        print(f"{name:>10}: {seconds:.3f} s ({seconds / args.n * 1e6:.0f} us/sample), "
              f"within 1%: {inside:.2%}, max off {max(errors):.3%}, mean off "
              f"{sum(errors) / len(errors):.3%}, last stage >5% narrower {narrow:.0%}, "
              f"check() {checked - start:.3f} s")


if __name__ == "__main__":
    main()
