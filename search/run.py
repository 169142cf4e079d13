"""python -m search.run --budget 36M: sweep per-stage depth/width under a parameter budget.

Runs on the Ray cluster at --address (or RAY_ADDRESS), else on an embedded local Ray. Running
the same command again resumes the sweep of that --name after any crash; a larger --trials
extends a finished sweep. Every flag below the first group is a field of the sweep's SweepSpec
or of its training Recipe, with the same default.
"""

from __future__ import annotations

import argparse
import sys

from space_defs import format_count, parse_budget
from space_defs.cli import Parser, UsageError, add_fields, given
from trainer.recipe import Recipe
from trainer.status import Status

from .spec import SweepSpec, demo


def _count(text: str) -> int:
    try:
        return parse_budget(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m search.run", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--budget", type=_count, default=argparse.SUPPRESS,
      help="parameter budget, e.g. 36M, 1.5M, 500K (required unless --demo)")
    a("--demo", action="store_true",
      help="a small real sweep on the offline digits dataset (flags given as well override it)")
    a("--name", default=argparse.SUPPRESS,
      help="sweep name (default: DATASET-BUDGET-METHOD); rerun a name to resume it")
    a("--storage", default="./runs", help="local path or s3:// URI holding all sweeps (./runs)")
    a("--address", help="Ray cluster address (else RAY_ADDRESS, else an embedded local Ray)")
    a("--data-dir", help="where datasets are downloaded, once per node")
    a("--max-macs", type=_count, default=argparse.SUPPRESS, help="compute cap per image, e.g. 10G (none)")
    add_fields(p.add_argument_group("sweep (SweepSpec fields)"), SweepSpec,
               skip=("name", "budget", "max_macs", "recipe"))
    add_fields(p.add_argument_group("training (Recipe fields; --seed seeds it too)"), Recipe,
               skip=("seed",))
    return p


def build_spec(args: argparse.Namespace) -> SweepSpec:
    """The SweepSpec of the command line; ValueError says which argument is wrong."""
    fields = given(args, SweepSpec)
    if "dataset" in fields:
        fields["dataset"] = fields["dataset"].lower()
    recipe = {**given(args, Recipe), **({"seed": fields["seed"]} if "seed" in fields else {})}
    if args.demo:
        return demo(**fields, recipe=recipe)
    if "budget" not in fields:
        raise UsageError("--budget is required (or --demo for a small preset sweep)")
    recipe = Recipe(**recipe)
    dataset = fields.get("dataset", "cifar10")
    fields.setdefault("name", f"{dataset}-{format_count(fields['budget']).replace('.00', '')}-{recipe.method}")
    return SweepSpec(recipe=recipe, **fields)


def main(argv: list[str] | None = None, *, trainable=None) -> int:
    """``trainable`` replaces the trainer (search.tuner.build_tuner says how)."""
    args = parser().parse_args(argv)
    try:
        from .db import storage

        spec = build_spec(args)
        spec.check()
        storage.check(args.storage)
        from .driver import check_reachable

        check_reachable(args.address)
    except ValueError as e:
        return _usage_error(e)

    from .db.errors import StoreError
    from .driver import run_sweep

    try:
        spec = run_sweep(spec, storage=args.storage, address=args.address, data_dir=args.data_dir,
                         auto_gpus=not hasattr(args, "gpus_per_trial"), trainable=trainable)
    except (UsageError, StoreError) as e:
        return _usage_error(e)
    print(summary(spec, args.storage))
    return 0


def summary(spec: SweepSpec, storage: str) -> str:
    """What the sweep found and where to look next."""
    from .db import load_trials, most_robust
    from .db.storage import join

    trials = load_trials(storage, spec.name)
    counts = trials["status"].value_counts().to_dict()
    lines = [f"sweep {spec.name}: {len(trials)} trials: "
             + ", ".join(f"{n} {Status(s).replace('_', ' ')}" for s, n in sorted(counts.items()))]
    ranked = most_robust(trials[trials["epochs_done"] >= trials["epochs_planned"]])
    if len(ranked):
        best = ranked.iloc[0]
        lines.append(
            f"best: d{best.depth1}-{best.depth2}-{best.depth3} c{best.channel1}-{best.channel2}-"
            f"{best.channel3}, {format_count(best.params)} params, {format_count(best.macs)} MACs: "
            f"val robust {best.best_val_robust_acc:.1%} (epoch {best.best_val_robust_epoch}), "
            f"clean {best.best_val_clean_acc:.1%}")
    lines.append(f"GPU-hours: {trials['gpu_hours'].sum():.2f}; train {trials['train_seconds'].sum():.0f} s, "
                 f"eval {trials['eval_seconds'].sum():.0f} s")
    lines.append(f"database: {join(storage, spec.name, 'db')}")
    lines.append(f"next: python -m search.query best --storage {storage} --sweep {spec.name}")
    return "\n".join(lines)


def _usage_error(e: Exception) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
