"""Every status a trial can have, the two failure detectors that end a run early, and the kind of
error that is the environment's, not the trial's."""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """How a trial ended, or that it is still going; the value is what databases store."""

    RUNNING = "running", "training, or waiting for its next epoch"
    FINISHED = "finished", "trained for every planned epoch"
    STOPPED_EARLY = "stopped_early", "the scheduler (ASHA) stopped it before its planned epochs"
    DIVERGED = "diverged", ("the training loss became NaN or infinite, or blew up (over 10x a "
                            "uniform guess's loss) with training accuracy at chance")
    CATASTROPHIC_OVERFIT = ("catastrophic_overfit", "validation PGD accuracy collapsed from a "
                            "peak clearly above chance, by more than the validation noise, while "
                            "accuracy on the training attack rose")
    FAILED = "failed", "raised an error that retries did not cure, e.g. out of memory"
    LOST = "lost", "only a torn Tune snapshot knew it; a new trial replaced it"
    ENV_FAILED = "env_failed", ("could not run for a reason outside its config (the dataset "
                                "neither on disk nor downloadable on its node, a GPU CUDA cannot "
                                "use): the sweep stopped; not one of --trials, and the same "
                                "command after the fix runs it")

    def __new__(cls, value: str, meaning: str) -> Status:
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member


TERMINAL = frozenset(Status) - {Status.RUNNING}
NOT_COUNTED = frozenset({Status.LOST, Status.ENV_FAILED})  # not among a sweep's --trials


class EnvironmentProblem(RuntimeError):
    """What is wrong is where the trial runs, not its config (a dataset that is neither on disk
    nor downloadable, a GPU CUDA cannot use): no retry and no other config can help, so a
    sweep stops at the first one instead of spending its trials on it."""

BLOWUP = 10.0  # times ln(classes), the loss of a uniform guess, where every method starts
CHANCE = 2.0  # times 1/classes: training accuracy no better than this is "at chance"


def diverged(loss: float, train_acc: float, num_classes: int) -> bool:
    """The epoch's mean training loss is NaN or infinite, or it has blown up: above ``BLOWUP``
    times ln(num_classes) while training accuracy is at chance (at most ``CHANCE``/num_classes).

    Every method's objective starts near ln(num_classes) (cross-entropy of a uniform guess;
    TRADES' and MART's extra terms start near 0) and a learning run stays below it, so ten
    times that with chance accuracy is a run SGD has thrown out of the basin (lr 1000 on digits:
    4e4 in the first epoch with gradient clipping at 5, 2e15 without), not a slow start. (lr 10
    gives a loss of 4-7 at chance accuracy, a run that never learns but has not blown up: it
    ends ``finished`` with its chance-level numbers.) Both conditions are
    needed: an early epoch at chance accuracy has a loss near ln(num_classes), and a high
    loss with learning accuracy is not a dead run.
    """
    if not math.isfinite(loss):
        return True
    return loss > BLOWUP * math.log(num_classes) and train_acc <= CHANCE / num_classes


def standard_error(acc: Any, n: Any) -> Any:
    """Binomial standard error sqrt(p (1 - p) / n) of an accuracy measured on n examples
    (numbers or arrays; NaN where n is unknown)."""
    import numpy as np

    acc = np.asarray(acc, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(acc * (1 - acc) / n)


COLLAPSE_Z = 3.0  # binomial standard errors: how far above chance a peak, and how deep a fall
COLLAPSE_EPOCHS = 2  # epochs in a row the fall must hold: a one-epoch dip is a transient


def catastrophic_overfit(val_robust_acc: Sequence[float], train_adv_acc: Sequence[float], *,
                         n: int, num_classes: int, drop: float, z: float = COLLAPSE_Z,
                         epochs: int = COLLAPSE_EPOCHS) -> bool:
    """Fast-AT's failure mode (Wong et al. 2020) at the latest epoch of a method that trains on
    an attack: the model has learned to defeat its training attack instead of becoming robust.

    All of, for each of the last ``epochs`` epochs against the peak before them (the best
    validation PGD accuracy of the epochs before): the peak was clearly above chance, more
    than ``z`` binomial standard errors of chance accuracy at ``n`` images; the epoch is
    below ``(1 - drop)`` of the peak and below it by more than ``z`` standard errors of the
    difference of the two (each measured on the same ``n`` images); and its accuracy on the
    training attack is higher than at the peak. An early epoch at chance that the next one
    falls below is noise, not a collapse (at n = 200 one s.e. of 10% is 2.1 points); so is a
    dip that the validation size cannot tell from one, and a one-epoch dip that the next epoch
    recovers from (FGSM training at lr 0.4 on digits falls from 46% to 4% and is back at 25%,
    then 80%, measured).
    """
    if len(val_robust_acc) < epochs + 1 or n < 1:
        return False
    earlier = val_robust_acc[:-epochs]
    best = max(range(len(earlier)), key=earlier.__getitem__)
    peak, chance = earlier[best], 1 / num_classes

    def fell(now: float) -> bool:
        return now < (1 - drop) * peak and peak - now > z * math.hypot(standard_error(peak, n),
                                                                       standard_error(now, n))

    window = range(len(val_robust_acc) - epochs, len(val_robust_acc))
    return bool(peak - chance > z * standard_error(chance, n)
                and all(fell(val_robust_acc[k]) and train_adv_acc[k] > train_adv_acc[best]
                        for k in window))
