"""AutoAttack (Croce & Hein, ICML 2020), standard Linf version, from ART's maintained components.

APGD-CE, then APGD-T (targeted DLR loss against each of the 9 most likely wrong classes), then
Square (black-box, 5,000 queries), each run only on the points that survived the previous ones.
ART has no FAB; in AutoAttack's published runs FAB-T after APGD-T almost never breaks a point.
ART (``adversarial-robustness-toolbox``) is imported only when this attack runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class AutoAttack:
    apgd_iters: int = 100  # iterations per APGD run (1 restart each, as in the standard version)
    targets: int = 9  # most likely wrong classes attacked by APGD-T
    square_queries: int = 5000  # Square attack's query budget per point
    batch_size: int = 128
    seed: int = 0  # ART draws from numpy's global RNG; seeded here and restored afterwards

    name = "autoattack"

    def survivors(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
        """Boolean mask over the batch: correctly classified under every component attack."""
        from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
        from art.estimators.classification import PyTorchClassifier

        model.eval()
        classifier = PyTorchClassifier(
            model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
            nb_classes=model.fc.out_features, clip_values=(0.0, 1.0),
            device_type="gpu" if x.is_cuda else "cpu")
        xs = x.detach().float().contiguous().cpu().numpy()
        ys = y.cpu().numpy()
        with torch.no_grad():
            ranked = model(x).argsort(1, descending=True).cpu().numpy()
        alive = classifier.predict(xs, batch_size=self.batch_size).argmax(1) == ys

        def attack(make, labels=None):
            idx = np.flatnonzero(alive)
            if len(idx):
                adv = make().generate(xs[idx], y=ys[idx] if labels is None else labels[idx])
                alive[idx] &= classifier.predict(adv, batch_size=self.batch_size).argmax(1) == ys[idx]

        def apgd(loss_type, targeted):
            return AutoProjectedGradientDescent(
                estimator=classifier, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=self.apgd_iters,
                targeted=targeted, nb_random_init=1, batch_size=self.batch_size, loss_type=loss_type,
                verbose=False)

        rng_state = np.random.get_state()
        np.random.seed(self.seed)
        try:
            attack(lambda: apgd("cross_entropy", False))
            for k in range(1, min(self.targets, ranked.shape[1] - 1) + 1):
                attack(lambda: apgd("difference_logits_ratio", True), labels=ranked[:, k])
            attack(lambda: SquareAttack(estimator=classifier, norm=np.inf, eps=eps, max_iter=self.square_queries,
                                        p_init=0.8, nb_restarts=1, batch_size=self.batch_size, verbose=False))
        finally:
            np.random.set_state(rng_state)
        return torch.from_numpy(alive).to(y.device)
