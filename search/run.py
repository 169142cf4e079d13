"""python -m search.run --budget 36M: sweep per-stage depth/width under a parameter budget.

Running the same command again resumes the sweep of that --name after any crash; a larger
--trials extends a finished sweep. Every flag below the first group is a field of the sweep's
SweepSpec or of its training Recipe, with the same default.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from space_defs import format_count
from space_defs.cli import Parser, UsageError, add_fields, count, given
from trainer.recipe import Recipe
from trainer.status import Status

from .cluster.target import ATTACH_RULE
from .cluster.place import SHARED_STORAGE_HELP
from .spec import FAKE_GPUS_HELP, SweepSpec, demo


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m search.run", description=f"{__doc__}\nWhere: {ATTACH_RULE}",
               formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--budget", type=count, default=argparse.SUPPRESS,
      help="parameter budget, e.g. 36M, 1.5M, 500K (required unless --demo)")
    a("--demo", action="store_true",
      help="a small real sweep on the offline digits dataset (flags given as well override it)")
    a("--name", default=argparse.SUPPRESS,
      help="sweep name (default: DATASET-BUDGET-METHOD); rerun a name to resume it")
    a("--storage", default="./runs", help="local path or s3:// URI holding all sweeps (./runs)")
    a("--address", help="Ray cluster address, or 'local' for an embedded Ray (see Where above)")
    a("--shared-storage", action="store_true", help=SHARED_STORAGE_HELP)
    a("--data-dir", help="where datasets are downloaded, once per node")
    a("--fake-gpus", action="store_true", default=argparse.SUPPRESS, help=FAKE_GPUS_HELP)
    a("--yes", action="store_true",
      help="run a sweep of CPU trials estimated to take more than a day (refused without it)")
    add_fields(p.add_argument_group("sweep (SweepSpec fields)"), SweepSpec,
               skip=("name", "budget", "recipe", "fake_gpus"))
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
    """``trainable`` replaces the trainer (search.tune.tuner.build_tuner says how)."""
    args = parser().parse_args(argv)
    try:
        from .storage import uri as storage

        spec = build_spec(args)
        storage.check(args.storage)
    except ValueError as e:
        return _usage_error(e)

    from .db.errors import StoreError
    from .driver import run_sweep

    try:
        spec = run_sweep(spec, storage=args.storage, address=args.address, data_dir=args.data_dir,
                         shared_storage=args.shared_storage, yes=args.yes, trainable=trainable)
    except (UsageError, StoreError) as e:
        return _usage_error(e)
    except KeyboardInterrupt:
        from .cluster.connect import TERMINATED

        how = "terminated (SIGTERM)" if TERMINATED.is_set() else "interrupted"
        print(f"{how}: sweep {spec.name} stopped, its state saved; run the same command "
              "again to resume it", file=sys.stderr)
        return 143 if TERMINATED.is_set() else 130
    print(summary(spec, args.storage))
    return 0


def summary(spec: SweepSpec, storage: str) -> str:
    """What the sweep found and where to look next."""
    from .db import full_fidelity, load_evals, load_trials, most_robust
    from .db.ranking import arch_label, roles
    from .db.schema import CONFIRM, SEARCH
    from .db.seeds import confirmation
    from .storage.uri import join

    trials = load_trials(storage, spec.name)
    trials = trials.assign(arch=arch_label(trials))
    role = roles(trials)
    search, confirming = trials[role == SEARCH], trials[role == CONFIRM]
    lines = [f"sweep {spec.name}: {len(search)} trials: {_counts(search)}"]
    if len(confirming):
        lines.append(f"  and {len(confirming)} confirmation runs: {_counts(confirming)}")
    ranked = most_robust(full_fidelity(search))
    if spec.recipe.select_on == "test":
        lines.append("selected on the TEST split (--select-on test, the references' protocol): "
                     "every val number below is a test number, and the choice is optimistic")
    if len(ranked):
        best = ranked.iloc[0]
        lines.append(f"best{' single run' * bool(len(confirming))}: {_described(best)}")
        lines += _vs_uniform(spec, search, ranked, best)
    if (confirmed := confirmation(trials, load_evals(storage, spec.name))) is not None:
        lines += confirmed.describe()
    lines.append(f"GPU-hours: {trials['gpu_hours'].sum():.2f}; train {trials['train_seconds'].sum():.0f} s, "
                 f"eval {trials['eval_seconds'].sum():.0f} s")
    lines.append(f"database: {join(storage, spec.name, 'db')}")
    lines.append(f"next: python -m search.query best --storage {shlex.quote(storage)} "
                 f"--sweep {spec.name}")
    return "\n".join(lines)


def _counts(trials) -> str:
    counts = trials["status"].value_counts().to_dict()
    return ", ".join(f"{n} {Status(s).replace('_', ' ')}" for s, n in sorted(counts.items()))


def _described(row) -> str:
    return (f"{row.arch}, {format_count(row.params)} params, {format_count(row.macs)} MACs: val robust "
            f"{row.best_val_robust_acc:.1%}, clean {row.best_val_clean_acc:.1%} (epoch "
            f"{int(row.best_val_robust_epoch)} of {int(row.epochs_done)})")


def _vs_uniform(spec: SweepSpec, trials, ranked, best) -> list[str]:
    """How the best compares with the uniform WRN baseline of the same budget, and whether the
    gap is more than the noise of the validation subsets (binomial standard errors)."""
    import math

    from trainer.datasets import dataset_spec

    from .db.ranking import Gap, standard_error

    uniform = spec.uniform_baseline()
    found = [r for r in trials.itertuples() if r.arch == uniform.label]
    label = f"uniform baseline {uniform.label}"
    if not found:
        return [f"{label}: not in this sweep"]
    full = [r for r in ranked.itertuples() if r.trial_id in {f.trial_id for f in found}]
    if not full:
        r = found[0]
        return [f"{label}: {Status(r.status).replace('_', ' ')} after {int(r.epochs_done)} epochs, "
                "not comparable with fully trained trials"]
    base, other, name = full[0], best, "best"
    if base.trial_id == best.trial_id:
        rest = [r for r in ranked.itertuples() if r.trial_id != base.trial_id]
        if not rest:
            return [f"the best is the {label} itself"]
        other, name = rest[0], "runner-up"
        lines = [f"the best is the {label} itself; the runner-up: {_described(other)}"]
    else:
        lines = [f"{label}: {_described(base)}"]
    n_robust, n_clean = spec.recipe.val_size, spec.recipe.selection_images(dataset_spec(spec.dataset))
    for what, key, n in (("robust", "best_val_robust_acc", n_robust), ("clean", "best_val_clean_acc", n_clean)):
        a, b = getattr(other, key), getattr(base, key)
        gap = Gap(a - b, math.hypot(standard_error(a, n), standard_error(b, n)))
        lines.append(f"  {name} - uniform, val {what}: {gap.describe(f', {n} images each')}")
    lines.append("  (binomial noise of the images measured, one training seed each: the "
                 "seed-to-seed spread is not in it)")
    return lines


def _usage_error(e: Exception) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
