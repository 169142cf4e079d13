"""Every status a trial can have, and the two failure detectors that end a run early."""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum


class Status(StrEnum):
    """How a trial ended, or that it is still going; the value is what databases store."""

    RUNNING = "running", "training, or waiting for its next epoch"
    FINISHED = "finished", "trained for every planned epoch"
    STOPPED_EARLY = "stopped_early", "the scheduler (ASHA) stopped it before its planned epochs"
    DIVERGED = "diverged", "the training loss became NaN or infinite"
    CATASTROPHIC_OVERFIT = ("catastrophic_overfit", "validation PGD accuracy collapsed while "
                            "accuracy on the training attack rose")
    FAILED = "failed", "raised an error that retries did not cure, e.g. out of memory"
    LOST = "lost", "only a torn Tune snapshot knew it; a new trial replaced it"

    def __new__(cls, value: str, meaning: str) -> Status:
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member


TERMINAL = frozenset(Status) - {Status.RUNNING}

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
