"""python -m search.run --budget 36M: sweep per-stage depth/width under a parameter budget.

Runs on the Ray cluster at --address (or RAY_ADDRESS), else on an embedded local Ray. Running
the same command again resumes the sweep of that --name after any crash; a larger --trials
extends a finished sweep.
"""

from __future__ import annotations

import argparse
import sys

from space_defs import SPACES, format_count, parse_budget

DEMO = dict(  # a small real sweep on the offline digits data: minutes on a 2-core CPU
    name="demo", budget="60K", dataset="digits", method="pgd_at", epochs=12, trials=8,
    max_concurrent=2, min_blocks=1, max_blocks=2, channel_multiple=4, attack_steps=5,
    val_size=200, grace_period=3, final_eval=2,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from trainer.datasets import DATASETS
    from trainer.recipe import METHODS

    from .spec import OBJECTIVES, SCHEDULERS

    p = _Parser(prog="python -m search.run", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--budget", help="parameter budget, e.g. 36M, 1.5M, 500K (required unless --demo)")
    a("--demo", action="store_true",
      help="a small real sweep on the offline digits dataset (flags given as well override it)")
    a("--name", help="sweep name (default: DATASET-BUDGET-METHOD); rerun a name to resume it")
    a("--storage", default="./runs", help="local path or s3:// URI holding all sweeps (./runs)")
    a("--dataset", help=f"{' | '.join(DATASETS)} (cifar10)")
    a("--space", help=f"{' | '.join(SPACES)} (per_stage)")
    a("--method", help=f"adversarial training: {' | '.join(METHODS)} (trades)")
    a("--epochs", type=int, help="epochs of the full schedule (100)")
    a("--trials", type=int, help="trials in the sweep (16)")
    a("--max-concurrent", type=int, help="trials running at once (4)")
    a("--gpus-per-trial", type=float, help="fractions pack small trials (1 if the cluster has GPUs)")
    a("--cpus-per-trial", type=float, help="CPUs reserved per trial; also its torch threads (1)")
    a("--objectives", help=f"comma-separated, from {', '.join(OBJECTIVES)} (val_robust_acc)")
    a("--max-macs", help="compute cap per image, e.g. 10G")
    a("--scheduler", help=f"{' | '.join(SCHEDULERS)}: early stopping of weak trials (asha)")
    a("--grace-period", type=int, help="epochs before ASHA may stop a trial (a quarter)")
    a("--seed", type=int, help="seed of the sampler and of training (0)")
    a("--min-blocks", type=int, help="fewest blocks per stage (1)")
    a("--max-blocks", type=int, help="most blocks per stage (8)")
    a("--channel-multiple", type=int, help="channels round to multiples of this (8)")
    a("--tolerance", type=float, help="fraction a config may miss the budget by (0.01)")
    a("--batch-size", type=int, help="images per SGD step (128)")
    a("--lr", type=float, help="initial learning rate (0.1)")
    a("--attack-steps", type=int, help="PGD steps while training (10)")
    a("--val-size", type=int, help="validation images attacked each epoch (1000)")
    a("--final-eval", type=int, metavar="K",
      help="evaluate the top K configs on the test split (PGD-20, CW, AutoAttack) (0)")
    a("--final-attacks", help="comma-separated cascade for --final-eval (clean,pgd20,cw,autoattack)")
    a("--address", help="Ray cluster address (else RAY_ADDRESS, else an embedded local Ray)")
    a("--data-dir", help="where datasets are downloaded, once per node")
    args = p.parse_args(argv)
    if args.demo:
        for key, value in DEMO.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    if args.budget is None:
        p.error("--budget is required (or --demo for a small preset sweep)")
    return args


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line, exit code 2 (argparse's default adds the whole usage)."""
        self.exit(2, f"error: {message} (see python -m search.run --help)\n")


def check_storage(storage: str) -> None:
    """UsageError for a storage URI no filesystem understands (before anything is written)."""
    from .errors import UsageError

    if "://" not in storage:
        return
    import pyarrow.fs as pafs

    try:
        pafs.FileSystem.from_uri(storage)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError...
        raise UsageError(f"cannot use --storage {storage!r} ({str(e).splitlines()[0]}); use a local "
                         "path or a URI pyarrow supports, e.g. s3://bucket/prefix") from None


def build_spec(args: argparse.Namespace):
    """The SweepSpec of the command line; ValueError says which argument is wrong."""
    from trainer.recipe import Recipe

    from .spec import SweepSpec

    budget = parse_budget(args.budget)
    recipe_args = dict(method=args.method, epochs=args.epochs, batch_size=args.batch_size,
                       lr=args.lr, steps=args.attack_steps, val_size=args.val_size, seed=args.seed)
    recipe = Recipe(**{k: v for k, v in recipe_args.items() if v is not None})
    dataset = (args.dataset or "cifar10").lower()
    name = args.name or f"{dataset}-{format_count(budget).replace('.00', '')}-{recipe.method}"
    spec_args = dict(
        space=args.space, min_blocks=args.min_blocks, max_blocks=args.max_blocks,
        channel_multiple=args.channel_multiple, tolerance=args.tolerance,
        max_macs=parse_budget(args.max_macs) if args.max_macs else None,
        objectives=tuple(o.strip() for o in args.objectives.split(",")) if args.objectives else None,
        scheduler=args.scheduler, grace_period=args.grace_period, seed=args.seed,
        trials=args.trials, max_concurrent=args.max_concurrent,
        gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial,
        final_eval=args.final_eval,
        final_attacks=tuple(a.strip() for a in args.final_attacks.split(",")) if args.final_attacks else None)
    return SweepSpec(name=name, budget=budget, dataset=dataset, recipe=recipe,
                     **{k: v for k, v in spec_args.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = build_spec(args)
        spec.check()
        check_storage(args.storage)
        from .sweep import check_reachable

        check_reachable(args.address)
    except ValueError as e:
        return _usage_error(e)

    from .errors import StoreError, UsageError
    from .sweep import run_sweep

    try:
        spec = run_sweep(spec, storage=args.storage, address=args.address,
                         data_dir=args.data_dir, auto_gpus=args.gpus_per_trial is None)
    except (UsageError, StoreError) as e:
        return _usage_error(e)
    print(summary(spec, args.storage))
    return 0


def summary(spec, storage: str) -> str:
    """What the sweep found and where to look next."""
    from .query import most_robust
    from .store import load_trials

    trials = load_trials(storage, spec.name)
    counts = trials["status"].value_counts().to_dict()
    lines = [f"sweep {spec.name}: {len(trials)} trials: "
             + ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(counts.items()))]
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
    lines.append(f"database: {storage.rstrip('/')}/{spec.name}/db")
    lines.append(f"next: python -m search.query best --storage {storage} --sweep {spec.name}")
    return "\n".join(lines)


def _usage_error(e: Exception) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
