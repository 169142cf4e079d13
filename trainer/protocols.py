"""Named evaluation protocols: how each attack of a final evaluation runs (torch-free, so a
sweep's driver checks a name before any trial runs; trainer.evaluation runs them).

A protocol fixes what makes two robust accuracies comparable beyond the attack's name: the
step size, where the random start may lie, the CW loss, whether AutoAttack reports its own
number or the worst case with the attacks before it, and the batch (the seed's CW loss couples
the points of a batch). Every evals row records the protocol and each attack's eps, steps and
step size.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    name: str
    about: str  # one line for --help and the docs
    step_ratio: float | None = None  # PGD/CW step as a fraction of eps; None = the trained step
    start_in_box: bool = True  # the random start is projected onto [0, 1] before the first step
    cw_loss: str = "margin"  # margin: per point | batch_hinge: the seed's, see attacks.py
    autoattack_after_others: bool = True  # AutoAttack attacks only what earlier attacks left
    batch_size: int = 256  # images per attack batch


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("default", "this project's: PGD and CW at the trained step (2/255 at 8/255 on "
                        "CIFAR), starts inside [0, 1], the per-point CW margin loss, AutoAttack "
                        "on the points every attack before it left (the worst case of all)"),
    # HanxunH/RobustWRN main.py + evaluator.py: --epsilon 8 --step_size 0.8 (divided by 255 there;
    # evaluator.py's own defaults 0.031 / 0.003 are overridden), eval_batch_size 128, AutoAttack
    # run_standard_evaluation on its own.
    Protocol("robustwrn", "the seed's (HanxunH/RobustWRN evaluator.py as main.py calls it): "
                          "PGD and CW at step eps/10 (0.8/255 at 8/255), random start not "
                          "clipped to [0, 1] before the first step, CW loss -relu(sum over the "
                          "batch of true minus best wrong logit), batches of 128, AutoAttack's "
                          "standard version on every clean-correct point (its own number)",
             step_ratio=0.1, start_in_box=False, cw_loss="batch_hinge",
             autoattack_after_others=False, batch_size=128),
)}


DEFAULT = PROTOCOLS["default"]


def protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown evaluation protocol {name!r}; choose one of "
                         f"{', '.join(PROTOCOLS)}") from None
