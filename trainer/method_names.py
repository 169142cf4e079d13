"""The training methods, one ``Method`` entry each, without torch: a recipe checks its method's
name, trainer.compute prices it and the loop runs it from here. Adding a method is one entry
in ``METHODS`` naming its function (trainer.methods holds the published ones).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

ROBUST_FIRST = ("val_robust_acc", "val_clean_acc")
CLEAN_FIRST = ("val_clean_acc", "val_robust_acc")


@dataclass(frozen=True)
class Method:
    """A training method: its objective and what one training image costs, in passes.

    ``function`` is ``"module:name"`` of ``f(model, x, y, budget, beta) -> MethodOutput``
    (see trainer.methods), imported only when a run calls it. Per training image the method
    makes ``forwards`` gradient-free forward passes, ``attacks`` attacks of ``Recipe.steps``
    steps (each step a forward and a backward for the input) and ``training_steps`` forward
    passes with a training backward; trainer.compute turns these into FLOPs.
    """

    name: str
    help: str  # one line for --help
    label: str  # a title for reports; {steps} is the attack's steps
    function: str
    forwards: int
    attacks: int
    training_steps: int
    selected_by: tuple[str, ...] = ROBUST_FIRST  # see Recipe.selected_by

    @property
    def loss(self) -> Callable:
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(module), name)

    @property
    def trains_on_attack(self) -> bool:
        return self.attacks > 0


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("pgd_at", "PGD-AT (Madry et al. 2018), cross-entropy on PGD examples", "PGD-{steps} AT",
           "trainer.methods:pgd_at", forwards=1, attacks=1, training_steps=1),
    Method("trades", "TRADES (Zhang et al. 2019), clean cross-entropy + beta * KL to the "
                     "adversarial point", "TRADES-{steps}",
           "trainer.methods:trades", forwards=1, attacks=1, training_steps=2),
    Method("mart", "MART (Wang et al. 2020), boosted cross-entropy on the adversarial point + "
                   "beta * KL weighted by misclassification", "MART-{steps}",
           "trainer.methods:mart", forwards=0, attacks=1, training_steps=2),
    Method("standard", "no attack, the non-robust baseline", "clean training",
           "trainer.methods:standard", forwards=0, attacks=0, training_steps=1,
           selected_by=CLEAN_FIRST),
)}
