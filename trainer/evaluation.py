"""Robust accuracy of a trained model (or checkpoint) under a list of attacks.

Per-batch attacks (clean, fgsm, pgd<k>, cw<k>) each report their own accuracy over all points.
AutoAttack runs as a cascade: only on points no earlier attack in the list broke, so its number
is the accuracy under the worst case of AutoAttack and everything listed before it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .attack_names import ATTACKS, Attack, parse_attack
from .attacks import perturb
from .autoattack import COMPONENTS, AutoAttack
from .data import Split, eval_batches, load_splits
from .datasets import DEFAULT_DATA_DIR, DatasetSpec, dataset_spec
from .protocols import DEFAULT, Protocol, protocol as named_protocol

EVAL_BATCH = DEFAULT.batch_size  # images per attack batch


def correct_under(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack, *, eps: float,
                  step_size: float, generator: torch.Generator | None = None,
                  protocol: Protocol = DEFAULT) -> torch.Tensor:
    """Boolean mask: which points the model still classifies correctly under ``attack``."""
    x_adv = perturb(attack, model, x, y, eps=eps, step_size=step_size, generator=generator,
                    protocol=protocol)
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def correct_mask(model: nn.Module, split: Split, attack: Attack, *, eps: float, step_size: float,
                 seed: int = 0, batch_size: int = EVAL_BATCH,
                 protocol: Protocol = DEFAULT) -> torch.Tensor:
    """Per-point correctness over ``split``; random starts come from a generator seeded by ``seed``."""
    model.eval()
    generator = torch.Generator(split.x.device).manual_seed(seed)
    return torch.cat([correct_under(model, x, y, attack, eps=eps, step_size=step_size,
                                    generator=generator, protocol=protocol)
                      for x, y in eval_batches(split, batch_size=batch_size)])


def accuracy(model: nn.Module, split: Split, attack: Attack, *, eps: float, step_size: float,
             seed: int = 0, batch_size: int = EVAL_BATCH) -> float:
    return correct_mask(model, split, attack, eps=eps, step_size=step_size, seed=seed,
                        batch_size=batch_size).float().mean().item()


@dataclass(frozen=True)
class EvalBudget:
    """The L-inf radius and attack step an evaluation uses, and where they came from."""

    eps: float  # [0, 1] pixel units
    step_size: float  # [0, 1] pixel units
    source: str  # "as trained", "dataset default" (a model without a recipe), or what was given

    def __str__(self) -> str:
        return f"eps {self.eps:.4g}, step {self.step_size:.4g} ({self.source})"


def eval_budget(trained: tuple[float, float] | None, default: tuple[float, float], *,
                eps: float | None = None, step_size: float | None = None,
                step_ratio: float | None = None) -> EvalBudget:
    """The budget to attack at: the one the model was trained at (``trained``, from its
    checkpoint's recipe; else the dataset's ``default``) unless ``eps`` / ``step_size`` are
    given. A given eps without a step keeps the trained ratio of step to eps, or a protocol's
    ``step_ratio`` where it has one. ValueError if either is outside (0, 1] (pixel units:
    8/255, not 8)."""
    base_eps, base_step = trained or default
    for name, value in (("eps", eps), ("step size", step_size)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)
                                      and 0 < value <= 1):
            raise ValueError(f"{name} must be in (0, 1] (pixel units; 8/255 = {8 / 255:.4f}), got {value!r}")
    if step_ratio is not None and step_size is None:
        at = base_eps if eps is None else eps
        source = ("as trained" if trained else "dataset default") if eps is None else "given"
        return EvalBudget(at, step_ratio * at, f"eps {source}, step {step_ratio:g} eps")
    if eps is None and step_size is None:
        return EvalBudget(base_eps, base_step, "as trained" if trained else "dataset default")
    if step_size is None:
        return EvalBudget(eps, min(base_step * eps / base_eps, 1.0),
                          f"eps given, step scaled with it from {base_step:.4g} at {base_eps:.4g}")
    return EvalBudget(base_eps if eps is None else eps, step_size,
                      "given" if eps is not None else "step given")


def resolve(model_or_checkpoint: nn.Module | str | Path, dataset: str | None = None, *,
            eps: float | None = None, step_size: float | None = None,
            device: torch.device | str = "cpu",
            step_ratio: float | None = None) -> tuple[nn.Module, DatasetSpec, EvalBudget]:
    """The model in eval mode, its dataset and the budget to attack it at (``eval_budget``)."""
    from .checkpoint import load, model_from, resolve as resolve_path

    if isinstance(model_or_checkpoint, nn.Module):
        if dataset is None:
            raise ValueError("evaluate(model, ...) needs the dataset name")
        model, spec, trained = model_or_checkpoint.to(device), dataset_spec(dataset), None
    else:
        state = load(resolve_path(model_or_checkpoint))
        model, spec = model_from(state, device)
        if dataset is not None and dataset_spec(dataset) != spec:
            raise ValueError(f"checkpoint was trained on {spec.name!r}, not {dataset!r}")
        recipe = state.get("recipe") or {}
        trained = ((recipe["eps"], recipe["step_size"])
                   if recipe.get("eps") is not None and recipe.get("step_size") is not None else None)
    budget = eval_budget(trained, (spec.eps, spec.step_size), eps=eps, step_size=step_size,
                         step_ratio=step_ratio)
    return model.eval(), spec, budget


def evaluate(model_or_checkpoint: nn.Module | str | Path, dataset: str | None = None,
             attacks: Sequence[str | Attack | AutoAttack] = ("clean", "pgd20", "cw"),
             split: str = "test", n: int | None = None, *,
             progress: Callable[[AttackDone], Any] | None = None, **kw: Any) -> dict[str, float]:
    """Accuracy under each attack, keyed by attack name, on the first ``n`` images of ``split``.

    ``model_or_checkpoint``: a model taking [0, 1] images, or a checkpoint file / run directory
    (its dataset is then the default). Keywords as ``evaluation_steps``: eps and step_size in
    pixel units, None = the budget the checkpoint was trained at (a bare model: the dataset's).
    ``protocol`` names how the attacks run (trainer.protocols: "default", or "robustwrn", the
    seed's). ``progress`` is called with each ``AttackDone`` as the attacks (and AutoAttack's
    components) finish: its accuracy, its own seconds and an estimate of the time left.
    """
    results = {}
    for done in evaluation_steps(model_or_checkpoint, dataset, attacks, split, n, **kw):
        if progress is not None:
            progress(done)
        if done.final:
            results[done.attack] = done.accuracy
    return results


@dataclass(frozen=True)
class AttackDone:
    """What an evaluation reports as it goes: an attack, or a component of AutoAttack, is done."""

    attack: str  # e.g. "pgd20", "autoattack", or a component: "autoattack/apgd-t"
    accuracy: float  # fraction of the points correct under it (cascades: and all before it)
    seconds: float  # its own wall time
    eta_seconds: float | None  # estimated time left of the whole evaluation
    final: bool  # False for an AutoAttack component (its attack's result follows)
    n: int  # points evaluated
    budget: EvalBudget
    protocol: str = DEFAULT.name
    steps: int | None = None  # iterations of a per-batch attack (None: AutoAttack's own)
    step_size: float | None = None  # its step, pixel units (None: clean, AutoAttack)
    correct: torch.Tensor | None = field(default=None, repr=False)  # per point (final only)


def evaluation_steps(model_or_checkpoint: nn.Module | str | Path, dataset: str | None = None,
                     attacks: Sequence[str | Attack | AutoAttack] = ("clean", "pgd20", "cw"),
                     split: str = "test", n: int | None = None, *, eps: float | None = None,
                     step_size: float | None = None, device: torch.device | str | None = None,
                     data_dir: str | Path = DEFAULT_DATA_DIR, seed: int = 0,
                     protocol: str = DEFAULT.name) -> Iterator[AttackDone]:
    """``evaluate`` as a stream of ``AttackDone``, one as each attack or component finishes."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    parsed = [parse_attack(a) if isinstance(a, str) else a for a in attacks]
    how = named_protocol(protocol)
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    model, spec, budget = resolve(model_or_checkpoint, dataset, eps=eps, step_size=step_size,
                                  device=device, step_ratio=how.step_ratio)
    data = getattr(load_splits(spec.name, data_dir=data_dir, device=device), split).head(n)
    yield from cascade(model, data, parsed, budget, seed=seed, protocol=how)


def cascade(model: nn.Module, data: Split, attacks: Sequence[Attack | AutoAttack],
            budget: EvalBudget, *, seed: int = 0,
            protocol: Protocol = DEFAULT) -> Iterator[AttackDone]:
    """Each attack over ``data``; AutoAttack attacks only the points every attack listed before
    it left unbroken, so its accuracy is under the worst case of it and them (a protocol with
    ``autoattack_after_others=False``: every clean-correct point, its own number)."""
    model.eval()
    batch_size = protocol.batch_size
    unbroken = torch.ones(len(data), dtype=torch.bool, device=data.y.device)
    plan = [AutoAttack(seed=seed) if isinstance(a, Attack) and a.kind == "autoattack" else a
            for a in attacks]
    with torch.no_grad():
        classes = model(data.x[:1]).shape[1]
    clock = _Clock(plan, len(data), classes)

    def done(name: str, began: float, final: bool, correct: torch.Tensor,
             attack: Attack | None = None) -> AttackDone:
        steps, step = _iterations(attack, budget)
        return AttackDone(name, correct.float().mean().item(), time.perf_counter() - began,
                          clock.eta(unbroken), final, len(data), budget, protocol.name, steps,
                          step, correct.clone() if final else None)

    for attack in plan:
        start = time.perf_counter()
        if isinstance(attack, AutoAttack):
            if not protocol.autoattack_after_others:
                unbroken[:] = True
            generator = torch.Generator(data.x.device).manual_seed(attack.seed)
            for x, y, idx in _chunks(data, unbroken, batch_size):
                with torch.no_grad():
                    unbroken[idx] = model(x).argmax(1) == y
            for name in COMPONENTS:
                began, attacked = time.perf_counter(), unbroken.sum().item()
                for x, y, idx in _chunks(data, unbroken, batch_size):
                    unbroken[idx] = attack.component(name, model, x, y, eps=budget.eps,
                                                     generator=generator)
                clock.done(attack, name, attacked)
                yield done(f"{attack.name}/{name}", began, False, unbroken)
            correct = unbroken
        else:
            correct = correct_mask(model, data, attack, eps=budget.eps, step_size=budget.step_size,
                                   seed=seed, batch_size=batch_size, protocol=protocol)
            unbroken &= correct
            clock.done(attack, None, len(data))
        yield done(attack.name, start, True, correct, attack if isinstance(attack, Attack) else None)


def _iterations(attack: Attack | None, budget: EvalBudget) -> tuple[int | None, float | None]:
    """(steps, step size) of a per-batch attack; (None, None) for AutoAttack, which adapts its
    own steps."""
    if attack is None:
        return None, None
    return attack.iterations, ATTACKS[attack.kind].step_size(budget.eps, budget.step_size)


def _chunks(data: Split, which: torch.Tensor, batch_size: int):
    for idx in which.nonzero().squeeze(1).split(batch_size):
        yield data.x[idx], data.y[idx], idx


class _Clock:
    """Estimates the time left: seconds per gradient pass per point so far (a forward pass
    counts a third) times the passes left, AutoAttack's on the points still unbroken."""

    def __init__(self, plan: Sequence[Attack | AutoAttack], n: int, classes: int):
        self.steps = [(a, c) for a in plan
                      for c in (COMPONENTS if isinstance(a, AutoAttack) else (None,))]
        self.n, self.classes = n, classes
        self.work, self.start = 0.0, time.perf_counter()

    def passes(self, attack: Attack | AutoAttack, component: str | None) -> float:
        if isinstance(attack, AutoAttack):
            return attack.passes(component, self.classes)
        return 1 / 3 + attack.iterations

    def done(self, attack: Attack | AutoAttack, component: str | None, points: int) -> None:
        self.work += points * self.passes(attack, component)
        self.steps.remove((attack, component))

    def eta(self, unbroken: torch.Tensor) -> float | None:
        if not self.work:
            return None
        alive = unbroken.sum().item()
        left = sum((alive if isinstance(a, AutoAttack) else self.n) * self.passes(a, c)
                   for a, c in self.steps)
        return (time.perf_counter() - self.start) / self.work * left
