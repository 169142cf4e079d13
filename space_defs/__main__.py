"""Preview a budget space: python -m space_defs --budget 36M -n 8"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys

from . import SPACES, baselines, format_count, macs, param_count, parse_budget, suggest_config
from .space import InfeasibleBudget
from .trials import RandomParams


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m space_defs", description=__doc__)
    p.add_argument("--budget", required=True, help="parameter budget, e.g. 36M, 1.5M, 500K")
    p.add_argument("-n", type=int, default=8, help="configs to sample (default 8)")
    p.add_argument("--space", default="per_stage", choices=sorted(SPACES))
    p.add_argument("--max-macs", help="compute cap per image, e.g. 10G")
    p.add_argument("--tolerance", type=float, default=0.01, help="fraction of the budget (0.01)")
    p.add_argument("--channel-multiple", type=int, default=8, help="channels round to this (8)")
    p.add_argument("--input-size", type=int, default=32, help="image side in pixels (32)")
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        budget = parse_budget(args.budget)
        max_macs = parse_budget(args.max_macs) if args.max_macs else None
        if args.n < 1:
            raise ValueError(f"-n must be at least 1, got {args.n}")
        space = dataclasses.replace(SPACES[args.space], multiple=args.channel_multiple)
        space = space.for_data(in_channels=args.in_channels, num_classes=args.num_classes,
                               input_size=args.input_size)
        space.check(budget, args.tolerance, max_macs)
    except (ValueError, InfeasibleBudget) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    rows = [("baseline", c) for c in baselines(budget, space=space, max_macs=max_macs,
                                               tolerance=args.tolerance)]
    rows += [("sample", suggest_config(RandomParams(rng), budget, space=space, max_macs=max_macs,
                                       tolerance=args.tolerance)) for _ in range(args.n)]
    print(f"space {space.name}, budget {format_count(budget)} +- {args.tolerance:.1%}")
    print(f"{'':9}{'depths':>9} {'channels':>14} {'widen factors':>18} {'params':>9} "
          f"{'off':>6} {'MACs':>8}")
    for kind, c in rows:
        k = "-".join(f"{w:.3g}" for w in c.widen_factors)
        off = param_count(c) / budget - 1
        print(f"{kind:9}{'-'.join(map(str, c.depths)):>9} {'-'.join(map(str, c.channels)):>14} "
              f"{k:>18} {format_count(param_count(c)):>9} {off:>+6.2%} {format_count(macs(c)):>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
