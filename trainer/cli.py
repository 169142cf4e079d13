"""The command line ``python -m trainer fit|evaluate|fetch`` (see ``python -m trainer --help``).

Bad input exits with status 2 and one line saying what is wrong and how to fix it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from space_defs.cli import Parser, UsageError, add_fields, given, integer, number

from .attack_names import ATTACKS
from .dataset_files import MD5_ENV, checks_md5, read_files
from .datasets import DATASETS, DEFAULT_DATA_DIR, DataUnavailableError, dataset_spec
from .protocols import PROTOCOLS
from .recipe import Recipe


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="python -m trainer", description="Train or evaluate one Wide-ResNet.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{fit,evaluate,fetch}")
    _fit_options(commands.add_parser("fit", help="adversarially train one Wide-ResNet",
                                     description="Adversarially train one Wide-ResNet."))
    _evaluate_options(commands.add_parser(
        "evaluate", help="robust accuracy of a checkpoint",
        description="Robust accuracy of a checkpoint (file or run directory)."))
    _fetch_options(commands.add_parser(
        "fetch", help="download a dataset into --data-dir (if it is not there)",
        description="Download a dataset into --data-dir unless it is there already."))
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, DataUnavailableError) as e:
        args.parser.error(str(e))
    except KeyboardInterrupt:
        print(f"{args.parser.prog}: interrupted", file=sys.stderr)
        return 130


def _fit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="WRN-16-4",
                   help="WRN-<depth>-<k>, WRN-34-R or 'd5-5-5 c320-640-512' (default: WRN-16-4)")
    p.add_argument("--dataset", default="cifar10", choices=list(DATASETS), help="(default: cifar10)")
    p.add_argument("--checkpoint-dir", default=None, help="resumable state; resumed if it holds one")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="(default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    add_fields(p.add_argument_group("recipe (trainer.Recipe fields)"), Recipe)
    p.set_defaults(run=_fit, parser=p)


def _fetch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", choices=[n for n, s in DATASETS.items() if s.files])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="(default: %(default)s)")
    p.set_defaults(run=_fetch, parser=p)


def _fetch(args: argparse.Namespace) -> int:
    spec = dataset_spec(args.dataset)
    if spec.on_disk(args.data_dir):
        train, test = read_files(spec, args.data_dir)  # checked without torch's import: quick
    else:
        from .data import fetch

        train, test = fetch(spec.name, args.data_dir)
    unchecked = "" if checks_md5() else f" (md5 not checked: {MD5_ENV}=off)"
    print(f"{spec.name} is in {args.data_dir}: {len(train.y):,} training and {len(test.y):,} test "
          f"images of {'x'.join(map(str, train.x.shape[1:]))}{unchecked}")
    return 0


def _evaluate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint file, or a run directory (its best.pt)")
    p.add_argument("--attacks", default="clean,pgd20,cw",
                   help="comma-separated: " + "; ".join(f"{k.usage}: {k.help}" for k in ATTACKS.values())
                        + " (default: %(default)s)")
    p.add_argument("--protocol", default="default", choices=list(PROTOCOLS),
                   help="how the attacks run: " + "; ".join(f"{q.name}: {q.about}"
                                                            for q in PROTOCOLS.values()))
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="(default: test)")
    p.add_argument("--n", type=integer, default=None, help="first n images of the split (default: all)")
    p.add_argument("--eps", type=number, default=None,
                   help="L-inf radius in (0, 1] pixel units, e.g. 8/255 (default: the one the "
                        "checkpoint was trained at)")
    p.add_argument("--step-size", type=number, default=None,
                   help="attack step in (0, 1] pixel units (default: the trained one; with "
                        "--eps, scaled by it)")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="(default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(run=_evaluate, parser=p)


def _fit(args: argparse.Namespace) -> int:
    import torch
    from space_defs.arch import parse_arch
    from tqdm import tqdm

    from .loop import fit

    spec = dataset_spec(args.dataset)
    arch = parse_arch(args.arch, data=spec.data)
    recipe = Recipe(**given(args, Recipe))
    device = torch.device(args.device) if args.device else None
    bar = None  # opened at the first report, so a data or input error prints alone
    seconds: list[float] = []  # of the epochs this process ran (tqdm's rate counts a resume's too)

    def report(r):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=recipe.epochs, initial=r.epoch - 1, mininterval=0,
                       desc=f"{arch.name} {recipe.method} {spec.name}",
                       bar_format="{desc}: |{bar}| {n_fmt}/{total_fmt} epochs{postfix}")
        seconds.append(r.epoch_seconds)
        per_epoch = sum(seconds) / len(seconds)
        left = tqdm.format_interval(per_epoch * (recipe.epochs - r.epoch))
        bar.set_postfix_str(f"{per_epoch:.1f} s/epoch, {left} left, loss {r.train_loss:.3f}, "
                            f"val clean {r.val_clean_acc:.3f}, val PGD {r.val_robust_acc:.3f}, "
                            f"{r.images_per_s:.0f} images/s", refresh=False)
        bar.update(r.epoch - bar.n)

    try:
        result = fit(arch, recipe, spec.name, report=report, checkpoint_dir=args.checkpoint_dir,
                     data_dir=args.data_dir, device=device)
    finally:
        if bar is not None:
            bar.close()
    best = result.best
    print(f"{result.status} after {result.epochs_done} epochs on {result.device} "
          f"({result.train_seconds:.1f} s training, {result.eval_seconds:.1f} s validation)")
    if best is not None:
        print(f"best epoch {best.epoch}: val clean {best.val_clean_acc:.4f}, "
              f"val PGD-{recipe.val_attack_steps} {best.val_robust_acc:.4f}")
    if result.best_model_path:
        print(f"best weights: {result.best_model_path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from .attack_names import parse_attack
    from .evaluation import evaluate, resolve

    attacks = [parse_attack(a) for a in args.attacks.split(",") if a.strip()]
    if not attacks:
        raise UsageError("--attacks is empty; e.g. --attacks pgd20,cw")
    if args.n is not None and args.n < 1:
        raise UsageError(f"--n must be positive, got {args.n}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, spec, budget = resolve(args.checkpoint, eps=args.eps, step_size=args.step_size,
                                  device=device, step_ratio=PROTOCOLS[args.protocol].step_ratio)
    seconds: dict[str, float] = {}

    def progress(done) -> None:
        if done.final:
            seconds[done.attack] = done.seconds
        if not args.json:
            eta = f", about {done.eta_seconds:.0f} s left" if (done.eta_seconds or 0) >= 1 else ""
            print(f"{done.attack:>18s}  {100 * done.accuracy:6.2f}%  ({done.seconds:.1f} s{eta})",
                  flush=True)

    if not args.json:
        print(f"{spec.name} {args.split}, {budget}, {args.protocol} protocol", flush=True)
    results = evaluate(model, spec.name, attacks=attacks, split=args.split, n=args.n, eps=budget.eps,
                       step_size=budget.step_size, device=device, data_dir=args.data_dir,
                       progress=progress, protocol=args.protocol)
    if args.json:
        print(json.dumps({"eps": budget.eps, "step_size": budget.step_size, "budget": budget.source,
                          "protocol": args.protocol, "accuracy": results, "seconds": seconds}))
    return 0
