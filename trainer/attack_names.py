"""Evaluation attacks by name ('pgd20', 'cw', 'autoattack'), one ``AttackKind`` entry each,
without torch: the driver of a sweep checks the names before any trial runs. Adding an attack
is one entry in ``ATTACKS`` naming its function (trainer.attacks holds the per-batch ones)."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass

CW_DEFAULT_STEPS = 20


@dataclass(frozen=True)
class AttackKind:
    """An evaluation attack: its name, help, gradient steps, step size and function.

    ``function`` is ``"module:name"`` of ``f(model, x, y, *, steps, eps, step_size, generator,
    protocol) -> x_adv``, a per-batch attack imported when it runs; None for AutoAttack, which
    trainer.evaluation runs as a cascade. ``iterations``: its gradient steps where fixed (0 for
    AutoAttack, which adapts its own), None where the name gives them ('pgd20'), or
    ``default_steps`` where it gives none ('cw'). ``step``: the step size it takes, "budget" (the
    evaluation's), "eps" or None (no step).
    """

    name: str
    help: str  # one line for --help
    function: str | None
    iterations: int | None = None
    default_steps: int | None = None
    step: str | None = "budget"
    aliases: tuple[str, ...] = ()

    @property
    def perturb(self) -> Callable | None:
        if self.function is None:
            return None
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(module), name)

    @property
    def usage(self) -> str:
        """How its names are written: 'clean', 'pgd<k>', 'cw[<k>]'."""
        if self.iterations is not None:
            return self.name
        return f"{self.name}[<k>]" if self.default_steps else f"{self.name}<k>"

    def step_size(self, eps: float, step_size: float) -> float | None:
        """Its step at a budget of ``eps`` and ``step_size``."""
        return {"budget": step_size, "eps": eps}.get(self.step)


ATTACKS: dict[str, AttackKind] = {k.name: k for k in (
    AttackKind("clean", "no attack", "trainer.attacks:unperturbed", iterations=0, step=None),
    AttackKind("fgsm", "one signed-gradient step of eps on cross-entropy",
               "trainer.attacks:fgsm_attack", iterations=1, step="eps"),
    AttackKind("pgd", "k steps of PGD on cross-entropy from a random start",
               "trainer.attacks:pgd_attack"),
    AttackKind("cw", "k PGD steps on the CW margin loss (the protocol's)",
               "trainer.attacks:cw_attack", default_steps=CW_DEFAULT_STEPS),
    AttackKind("autoattack", "AutoAttack's standard version (also: aa)", None, iterations=0, step=None,
               aliases=("aa",)),
)}


@dataclass(frozen=True)
class Attack:
    """An evaluation attack by name: 'clean', 'fgsm', 'pgd<k>', 'cw<k>' or 'autoattack'."""

    kind: str  # an ATTACKS key
    steps: int = 0  # iterations of a kind whose name gives them (pgd, cw)

    @property
    def iterations(self) -> int:
        """Gradient steps it takes: 0 for clean, 1 for FGSM, ``steps`` for PGD and CW."""
        fixed = ATTACKS[self.kind].iterations
        return self.steps if fixed is None else fixed

    @property
    def name(self) -> str:
        return self.kind if ATTACKS[self.kind].iterations is not None else f"{self.kind}{self.steps}"


def parse_attack(text: str) -> Attack:
    """'clean', 'fgsm', 'pgd10', 'pgd-20', 'cw', 'cw30', 'autoattack' (or 'aa')."""
    s = text.strip().lower().replace("-", "").replace("_", "")
    s = next((k.name for k in ATTACKS.values() if s in k.aliases), s)
    m = re.fullmatch(r"(.*\D)(\d+)", s)
    name, steps = (m[1], int(m[2])) if m else (s, None)
    kind = ATTACKS.get(name)
    if kind is not None and kind.iterations is not None and steps is None:
        return Attack(name)
    if kind is not None and kind.iterations is None:
        steps = kind.default_steps if steps is None else steps
        if steps is not None and steps >= 1:
            return Attack(name, steps)
    raise ValueError(f"unknown attack {text!r}: use {', '.join(k.usage for k in ATTACKS.values())} "
                     f"(<k>: its steps, e.g. pgd20)")
