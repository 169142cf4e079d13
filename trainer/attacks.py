"""White-box Linf attacks in pixel space: FGSM, PGD-k with random start, CW-Linf (margin loss);
the per-batch functions trainer.attack_names.ATTACKS names.

Every attack runs the model with BatchNorm in eval mode and with parameter gradients switched
off (only the input perturbation is differentiated), and returns images inside the eps-ball
around ``x`` and inside [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .attack_names import ATTACKS, Attack
from .protocols import DEFAULT, Protocol

AttackLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, target) -> sum to ascend


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction="sum")


def true_minus_best_wrong(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per point: the true logit minus the best wrong one (negative = misclassified)."""
    logits = logits.float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    return true - logits.scatter(1, y[:, None], float("-inf")).amax(1)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CW loss: best wrong logit minus the true logit (positive = misclassified)."""
    return -true_minus_best_wrong(logits, y).sum()


def batch_hinge_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The seed's CW loss (HanxunH/RobustWRN evaluator.py): -relu(sum over the batch of the true
    minus the best wrong logit). Where the batch's summed margin is positive its gradient is
    ``margin``'s; where it is not, every point of the batch gets none and stays where it is."""
    return -F.relu(true_minus_best_wrong(logits, y).sum())


CW_LOSSES: dict[str, AttackLoss] = {"margin": margin, "batch_hinge": batch_hinge_margin}


def kl_from(logits: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
    """KL(p_clean || softmax(logits)) summed over the batch: TRADES' inner maximisation."""
    return F.kl_div(F.log_softmax(logits.float(), 1), p_clean, reduction="sum")


@contextmanager
def attacking(model: nn.Module) -> Iterator[nn.Module]:
    """Eval-mode BN and frozen parameters for the duration; the previous state is restored."""
    was_training = model.training
    frozen = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Nearest point of the eps-ball around x intersected with [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0, 1)


def pgd(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, eps: float, step_size: float,
        steps: int, loss: AttackLoss = cross_entropy, start: str = "uniform",
        start_in_box: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Signed-gradient ascent on ``loss`` projected onto the eps-ball and [0, 1] (Madry et al.).

    start: "uniform" in the ball (PGD), "zero" (FGSM), "normal" with std 0.001 (TRADES);
    ``start_in_box=False`` takes the first gradient at the start as drawn, outside [0, 1] where
    it falls there (the seed's evaluation does; every later iterate is projected).
    """
    if start == "uniform":
        delta = torch.empty_like(x).uniform_(-eps, eps, generator=generator)
    elif start == "normal":
        delta = 0.001 * torch.empty_like(x).normal_(generator=generator)
    elif start == "zero":
        delta = torch.zeros_like(x)
    else:
        raise ValueError(f"unknown start {start!r}: use 'uniform', 'normal' or 'zero'")
    x_adv = project(x + delta, x, eps) if start_in_box else x + delta
    with attacking(model):
        for _ in range(steps):
            x_adv.requires_grad_(True)
            grad, = torch.autograd.grad(loss(model(x_adv), target), x_adv)
            x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps)
    return x_adv.detach()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
    return pgd(model, x, y, eps=eps, step_size=eps, steps=1, start="zero")


def unperturbed(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **_: object) -> torch.Tensor:
    return x


def fgsm_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                **_: object) -> torch.Tensor:
    return fgsm(model, x, y, eps=eps)


def pgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, eps: float,
               step_size: float, generator: torch.Generator | None,
               protocol: Protocol) -> torch.Tensor:
    return pgd(model, x, y, eps=eps, step_size=step_size, steps=steps,
               start_in_box=protocol.start_in_box, generator=generator)


def cw_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, eps: float,
              step_size: float, generator: torch.Generator | None,
              protocol: Protocol) -> torch.Tensor:
    return pgd(model, x, y, eps=eps, step_size=step_size, steps=steps,
               loss=CW_LOSSES[protocol.cw_loss], start_in_box=protocol.start_in_box,
               generator=generator)


def perturb(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
            step_size: float, generator: torch.Generator | None = None,
            protocol: Protocol = DEFAULT) -> torch.Tensor:
    """``x`` under the per-batch ``attack`` (its ``ATTACKS`` entry's function), run as
    ``protocol`` says (AutoAttack runs through trainer.evaluate())."""
    run = ATTACKS[attack.kind].perturb
    if run is None:
        raise ValueError(f"{attack.name} is not a per-batch attack; run it through trainer.evaluate()")
    return run(model, x, y, steps=attack.steps, eps=eps, step_size=step_size, generator=generator,
               protocol=protocol)
