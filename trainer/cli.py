"""The command lines ``python -m trainer.fit`` and ``python -m trainer.evaluate``.

Bad input exits with status 2 and one line saying what is wrong and how to fix it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from fractions import Fraction

from .datasets import DATASETS, DEFAULT_DATA_DIR, DataUnavailableError, dataset_spec
from .recipe import Recipe


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of argparse's usage block
        raise UsageError(f"{message} (see --help)")


def _number(text: str) -> float:
    """'0.1', '8/255' (fractions read naturally for pixel budgets)."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _optional(parse):
    def parse_or_none(text: str):
        return None if text.strip().lower() in ("none", "off") else parse(text)
    parse_or_none.__name__ = parse.__name__
    return parse_or_none


def _recipe_options(parser: argparse.ArgumentParser) -> None:
    """One --flag per Recipe field, typed from its annotation, defaulting to the Recipe's default."""
    parse = {"int": int, "float": _number, "str": str, "float | None": _optional(_number),
             "bool": lambda s: {"true": True, "1": True, "false": False, "0": False}[s.lower()]}
    group = parser.add_argument_group("recipe (trainer.Recipe fields)")
    for f in dataclasses.fields(Recipe):
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=parse[f.type],
                           default=f.default, help=f"default {f.default}")


def _run(main, argv: Sequence[str] | None, prog: str) -> int:
    try:
        return main(argv)
    except (UsageError, ValueError, FileNotFoundError, DataUnavailableError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def fit_main(argv: Sequence[str] | None = None) -> int:
    return _run(_fit, argv, "trainer.fit")


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    return _run(_evaluate, argv, "trainer.evaluate")


def _fit(argv: Sequence[str] | None) -> int:
    p = _Parser(prog="python -m trainer.fit", description="Adversarially train one Wide-ResNet.")
    p.add_argument("--arch", default="WRN-16-4", help="WRN-<depth>-<k>, WRN-34-R or 'd5-5-5 c320-640-512'")
    p.add_argument("--dataset", default="cifar10", choices=list(DATASETS))
    p.add_argument("--checkpoint-dir", default=None, help="resumable state; resumed if it holds one")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    _recipe_options(p)
    args = p.parse_args(argv)

    import torch
    from space_defs.arch import parse_arch
    from tqdm import tqdm

    from .loop import fit

    spec = dataset_spec(args.dataset)
    arch = parse_arch(args.arch, **spec.arch_fields())
    recipe = Recipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe)})
    device = torch.device(args.device) if args.device else None
    bar = None  # opened at the first report, so a data or input error prints alone

    def report(r):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=recipe.epochs, initial=r.epoch - 1, unit="epoch",
                       desc=f"{arch.name} {recipe.method} {spec.name}")
        bar.update(r.epoch - bar.n)
        bar.set_postfix(loss=f"{r.train_loss:.3f}", val_clean=f"{r.val_clean_acc:.3f}",
                        val_pgd=f"{r.val_robust_acc:.3f}", img_s=f"{r.images_per_s:.0f}")

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


def _evaluate(argv: Sequence[str] | None) -> int:
    p = _Parser(prog="python -m trainer.evaluate",
                description="Robust accuracy of a checkpoint (file or run directory).")
    p.add_argument("checkpoint")
    p.add_argument("--attacks", default="clean,pgd20,cw",
                   help="comma-separated: clean, fgsm, pgd<k>, cw[<k>], autoattack")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--n", type=int, default=None, help="first n images of the split (default all)")
    p.add_argument("--eps", type=_optional(_number), default=None, help="default: the dataset's, e.g. 8/255")
    p.add_argument("--step-size", type=_optional(_number), default=None)
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)

    from .attack_names import parse_attack
    from .evaluation import evaluate

    attacks = [parse_attack(a) for a in args.attacks.split(",") if a.strip()]
    if not attacks:
        raise UsageError("--attacks is empty; e.g. --attacks pgd20,cw")
    if args.n is not None and args.n < 1:
        raise UsageError(f"--n must be positive, got {args.n}")
    results = evaluate(args.checkpoint, attacks=attacks, split=args.split, n=args.n, eps=args.eps,
                       step_size=args.step_size, device=args.device, data_dir=args.data_dir)
    if args.json:
        print(json.dumps(results))
    else:
        for name, acc in results.items():
            print(f"{name:>12s}  {100 * acc:6.2f}%")
    return 0
