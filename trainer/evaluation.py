"""Robust accuracy of a trained model (or checkpoint) under a list of attacks.

Per-batch attacks (clean, fgsm, pgd<k>, cw<k>) each report their own accuracy over all points.
AutoAttack runs as a cascade: only on points no earlier attack in the list broke, so its number
is the accuracy under the worst case of AutoAttack and everything listed before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .attack_names import Attack, parse_attack
from .attacks import perturb
from .autoattack import AutoAttack
from .data import Split, eval_batches, load_splits
from .datasets import DEFAULT_DATA_DIR, dataset_spec

EVAL_BATCH = 256  # images per attack batch


def correct_under(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack, *, eps: float,
                  step_size: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Boolean mask: which points the model still classifies correctly under ``attack``."""
    x_adv = perturb(attack, model, x, y, eps=eps, step_size=step_size, generator=generator)
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def correct_mask(model: nn.Module, split: Split, attack: Attack, *, eps: float, step_size: float,
                 seed: int = 0, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Per-point correctness over ``split``; random starts come from a generator seeded by ``seed``."""
    model.eval()
    generator = torch.Generator(split.x.device).manual_seed(seed)
    return torch.cat([correct_under(model, x, y, attack, eps=eps, step_size=step_size, generator=generator)
                      for x, y in eval_batches(split, batch_size=batch_size)])


def accuracy(model: nn.Module, split: Split, attack: Attack, *, eps: float, step_size: float,
             seed: int = 0, batch_size: int = EVAL_BATCH) -> float:
    return correct_mask(model, split, attack, eps=eps, step_size=step_size, seed=seed,
                        batch_size=batch_size).float().mean().item()


def evaluate(model_or_checkpoint: nn.Module | str | Path, dataset: str | None = None,
             attacks: Sequence[str | Attack | AutoAttack] = ("clean", "pgd20", "cw"),
             split: str = "test", n: int | None = None, *, eps: float | None = None,
             step_size: float | None = None, device: torch.device | str | None = None,
             data_dir: str | Path = DEFAULT_DATA_DIR, seed: int = 0,
             batch_size: int = EVAL_BATCH) -> dict[str, float]:
    """Accuracy under each attack, keyed by attack name, on the first ``n`` images of ``split``.

    ``model_or_checkpoint``: a model taking [0, 1] images, or a checkpoint file / run directory
    (its dataset is then the default). eps/step_size: pixel units, None = the dataset's default.
    """
    from .checkpoint import load_model

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if isinstance(model_or_checkpoint, nn.Module):
        if dataset is None:
            raise ValueError("evaluate(model, ...) needs the dataset name")
        model, spec = model_or_checkpoint.to(device), dataset_spec(dataset)
    else:
        model, spec = load_model(model_or_checkpoint, device)
        if dataset is not None and dataset_spec(dataset) != spec:
            raise ValueError(f"checkpoint was trained on {spec.name!r}, not {dataset!r}")
    parsed = [parse_attack(a) if isinstance(a, str) else a for a in attacks]
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    data = getattr(load_splits(spec.name, data_dir=data_dir, device=device), split).head(n)
    eps = spec.eps if eps is None else eps
    step_size = spec.step_size if step_size is None else step_size
    return _cascade(model.eval(), data, parsed, eps=eps, step_size=step_size, seed=seed,
                    batch_size=batch_size)


def _cascade(model: nn.Module, data: Split, attacks: Sequence[Attack | AutoAttack], *, eps: float,
             step_size: float, seed: int, batch_size: int) -> dict[str, float]:
    unbroken = torch.ones(len(data), dtype=torch.bool, device=data.y.device)
    results: dict[str, float] = {}
    for attack in attacks:
        if isinstance(attack, Attack) and attack.kind == "autoattack":
            attack = AutoAttack(seed=seed)
        if isinstance(attack, AutoAttack):
            idx = unbroken.nonzero().squeeze(1)
            for chunk in idx.split(batch_size):
                unbroken[chunk] = attack.survivors(model, data.x[chunk], data.y[chunk], eps=eps)
            correct = unbroken.clone()
        else:
            correct = correct_mask(model, data, attack, eps=eps, step_size=step_size, seed=seed,
                                   batch_size=batch_size)
            unbroken &= correct
        results[attack.name] = correct.float().mean().item()
    return results
