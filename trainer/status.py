"""How a run ended (or is going), and the two failure detectors that end it early."""

from __future__ import annotations

import math
from collections.abc import Sequence

RUNNING = "running"
FINISHED = "finished"
DIVERGED = "diverged"  # the training loss became NaN or infinite
CATASTROPHIC_OVERFIT = "catastrophic_overfit"  # val PGD accuracy collapsed while training improved
STATUSES = (RUNNING, FINISHED, DIVERGED, CATASTROPHIC_OVERFIT)

MIN_COLLAPSE = 0.05  # accuracy; smaller falls are sampling noise of a ~1,000-image val subset


def diverged(loss: float) -> bool:
    return not math.isfinite(loss)


def catastrophic_overfit(val_robust_acc: Sequence[float], train_adv_acc: Sequence[float], *,
                         drop: float) -> bool:
    """Fast-AT's failure mode (Wong et al. 2020) at the latest epoch.

    Validation PGD accuracy has fallen to below ``(1 - drop)`` of its best earlier value (and by
    at least MIN_COLLAPSE), while accuracy on the training attack is higher than at that best
    epoch: the model has learned to defeat its training attack instead of becoming robust.
    """
    if len(val_robust_acc) < 2:
        return False
    earlier = val_robust_acc[:-1]
    best = max(range(len(earlier)), key=earlier.__getitem__)
    peak, now = earlier[best], val_robust_acc[-1]
    collapsed = now < (1 - drop) * peak and peak - now >= MIN_COLLAPSE
    return collapsed and train_adv_acc[-1] > train_adv_acc[best]
