"""Adversarial training objectives: PGD-AT (Madry et al. 2018), TRADES (Zhang et al. 2019),
MART (Wang et al. 2020), each as the paper states it; ``standard`` (no attack) is the baseline.

A method takes the model (in train mode), a clean batch and the attack budget, crafts its own
adversarial examples, and returns the loss to minimise plus the logits for accuracy bookkeeping.
Each is registered, with its cost and selection rule, in trainer.method_names.METHODS.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attacks import cross_entropy, kl_from, pgd


@dataclass(frozen=True)
class AttackBudget:
    eps: float  # Linf radius, [0, 1] pixel units
    step_size: float  # per-step change, [0, 1] pixel units
    steps: int


@dataclass(frozen=True)
class MethodOutput:
    loss: torch.Tensor  # scalar to minimise
    clean_logits: torch.Tensor  # detached
    adv_logits: torch.Tensor  # detached


def trades_loss(clean_logits: torch.Tensor, adv_logits: torch.Tensor, y: torch.Tensor,
                beta: float) -> torch.Tensor:
    """CE(f(x), y) + beta * mean_i KL(f(x_i) || f(x'_i))."""
    clean_logits, adv_logits = clean_logits.float(), adv_logits.float()
    robust = kl_from(adv_logits, F.softmax(clean_logits, 1)) / len(y)
    return F.cross_entropy(clean_logits, y) + beta * robust


def mart_loss(clean_logits: torch.Tensor, adv_logits: torch.Tensor, y: torch.Tensor,
              beta: float) -> torch.Tensor:
    """BCE(f(x'), y) + beta * mean_i KL(f(x_i) || f(x'_i)) * (1 - f_y(x_i)).

    BCE = CE(f(x'), y) - log(1 - max_{k != y} f_k(x')), the boosted loss on the adversarial point;
    the constants 1.0001 and 1e-12 are the reference implementation's guards against log(0).
    """
    clean_logits, adv_logits = clean_logits.float(), adv_logits.float()
    adv_probs = F.softmax(adv_logits, 1)
    clean_probs = F.softmax(clean_logits, 1)
    top_wrong = adv_probs.scatter(1, y[:, None], float("-inf")).argmax(1)
    bce = F.cross_entropy(adv_logits, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), top_wrong)
    kl = (clean_probs * (torch.log(clean_probs + 1e-12) - torch.log(adv_probs + 1e-12))).sum(1)
    true_prob = clean_probs.gather(1, y[:, None]).squeeze(1)
    return bce + beta * (kl * (1.0000001 - true_prob)).mean()


def pgd_at(model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: AttackBudget,
           beta: float) -> MethodOutput:
    """Train on PGD-CE examples only; clean logits come from a gradient-free eval-mode pass."""
    x_adv = pgd(model, x, y, eps=budget.eps, step_size=budget.step_size, steps=budget.steps)
    adv_logits = model(x_adv)
    with torch.no_grad():
        model.eval()
        clean_logits = model(x)
        model.train()
    return MethodOutput(F.cross_entropy(adv_logits.float(), y), clean_logits, adv_logits.detach())


def trades(model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: AttackBudget,
           beta: float) -> MethodOutput:
    with torch.no_grad():
        model.eval()
        p_clean = F.softmax(model(x).float(), 1)
        model.train()
    x_adv = pgd(model, x, p_clean, eps=budget.eps, step_size=budget.step_size, steps=budget.steps,
                loss=kl_from, start="normal")
    clean_logits, adv_logits = model(x), model(x_adv)
    return MethodOutput(trades_loss(clean_logits, adv_logits, y, beta),
                        clean_logits.detach(), adv_logits.detach())


def mart(model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: AttackBudget,
         beta: float) -> MethodOutput:
    x_adv = pgd(model, x, y, eps=budget.eps, step_size=budget.step_size, steps=budget.steps,
                loss=cross_entropy, start="normal")
    clean_logits, adv_logits = model(x), model(x_adv)
    return MethodOutput(mart_loss(clean_logits, adv_logits, y, beta),
                        clean_logits.detach(), adv_logits.detach())


def standard(model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: AttackBudget,
             beta: float) -> MethodOutput:
    """No attack (the non-robust baseline); its 'adversarial' logits are the clean ones."""
    logits = model(x)
    return MethodOutput(F.cross_entropy(logits.float(), y), logits.detach(), logits.detach())
