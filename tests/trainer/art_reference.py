"""The reference to hold our AutoAttack against: the same cascade (APGD-CE, APGD-T on the most
likely wrong classes, Square) from adversarial-robustness-toolbox (ART), per point.

ART's rules are weaker than the AutoAttack paper's in known ways (its APGD returns the last
iterate; its targeted runs count only a hit on the target; its Square draws one position per
batch), so every point ART breaks our implementation must break too."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def art_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, apgd_iters: int,
                   targets: int, square_queries: int, seed: int = 0, batch_size: int = 128) -> torch.Tensor:
    """Boolean mask: the points ART's cascade leaves correctly classified."""
    from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
    from art.estimators.classification import PyTorchClassifier

    model.eval()
    classifier = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                   nb_classes=model.fc.out_features, clip_values=(0.0, 1.0),
                                   device_type="cpu")
    xs, ys = x.detach().float().contiguous().cpu().numpy(), y.cpu().numpy()
    with torch.no_grad():
        ranked = model(x).argsort(1, descending=True).cpu().numpy()
    alive = classifier.predict(xs, batch_size=batch_size).argmax(1) == ys

    def attack(make, labels=None):
        idx = np.flatnonzero(alive)
        if len(idx):
            adv = make().generate(xs[idx], y=ys[idx] if labels is None else labels[idx])
            alive[idx] &= classifier.predict(adv, batch_size=batch_size).argmax(1) == ys[idx]

    def apgd(loss_type: str, targeted: bool):
        return AutoProjectedGradientDescent(
            estimator=classifier, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=apgd_iters,
            targeted=targeted, nb_random_init=1, batch_size=batch_size, loss_type=loss_type, verbose=False)

    state = np.random.get_state()
    np.random.seed(seed)
    try:
        attack(lambda: apgd("cross_entropy", False))
        for k in range(1, min(targets, ranked.shape[1] - 1) + 1):
            attack(lambda: apgd("difference_logits_ratio", True), labels=ranked[:, k])
        attack(lambda: SquareAttack(estimator=classifier, norm=np.inf, eps=eps, max_iter=square_queries,
                                    p_init=0.8, nb_restarts=1, batch_size=batch_size, verbose=False))
    finally:
        np.random.set_state(state)
    return torch.from_numpy(alive)
