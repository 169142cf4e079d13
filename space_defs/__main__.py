"""Preview a budget space: python -m space_defs --budget 36M -n 8"""

from __future__ import annotations

import random
import sys

from . import DataShape, baselines, format_count, macs, param_count, parse_budget, suggest_config
from .cli import Parser, add_fields, given, integer
from .options import SpaceOptions
from .trials import RandomParams


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m space_defs", description=__doc__)
    p.add_argument("--budget", required=True, help="parameter budget, e.g. 36M, 1.5M, 500K")
    p.add_argument("-n", type=integer, default=8, help="configs to sample (default: 8)")
    add_fields(p.add_argument_group("space (the SpaceOptions fields, as python -m search.run "
                                    "takes them)"), SpaceOptions)
    add_fields(p.add_argument_group("data shape (e.g. the demo's digits: --in-channels 1 "
                                    "--input-size 8)"), DataShape)
    p.add_argument("--seed", type=integer, default=0, help="of the random samples (default: 0)")
    args = p.parse_args(argv)
    try:
        budget = parse_budget(args.budget)
        if args.n < 1:
            raise ValueError(f"-n must be at least 1, got {args.n}")
        options = SpaceOptions(**given(args, SpaceOptions))
        space = options.space_for(DataShape(**given(args, DataShape)))
        max_macs, tolerance = options.max_macs, options.tolerance
        space.check(budget, tolerance, max_macs)
    except ValueError as e:
        p.error(str(e))
    rng = random.Random(args.seed)
    rows = [("baseline", c) for c in baselines(budget, space=space, max_macs=max_macs,
                                               tolerance=tolerance)]
    rows += [("sample", suggest_config(RandomParams(rng), budget, space=space, max_macs=max_macs,
                                       tolerance=tolerance)) for _ in range(args.n)]
    print(f"space {space.name}, budget {format_count(budget)} +- {tolerance:.1%}")
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
