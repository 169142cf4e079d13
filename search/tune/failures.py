"""The driver's side of a trial's retry policy: a lost node is not the trial's fault (Tune
retries it many times), its own errors are retried a few times (search.trial.retry.OwnErrors),
and an environment problem is no error of its config at all; what a failure was, read where
Tune writes it at once."""

from __future__ import annotations

import os
import re
from pathlib import Path

from trainer.status import EnvironmentProblem

from ..trial.device import GpuUnusableError
from ..trial.retry import OWN_ERROR_RETRIES

# A trial that loses its node (preempted spot instance, dead worker) resumes from its last
# checkpoint up to NODE_LOSS_RETRIES times; its own errors are the trial's to count (OwnErrors).
NODE_LOSS_RETRIES = 20


def failure_config():
    """Tune's retries for a trial: Tune counts every failure, node losses and the trial's own
    errors alike, so it may retry NODE_LOSS_RETRIES + OWN_ERROR_RETRIES times, and the trial
    itself (OwnErrors) ends as failed after OWN_ERROR_RETRIES retries of its own errors.
    (Tune 2.60 already leaves out failures Ray marks as preemption, ``RayActorError.preempted``,
    i.e. nodes drained for preemption.)"""
    from ray import tune

    return tune.FailureConfig(max_failures=NODE_LOSS_RETRIES + OWN_ERROR_RETRIES)


def is_node_loss(error: BaseException | str | None) -> bool:
    """Whether a trial's failure, as Tune recorded it (the exception, or its text from
    ``trial.get_error()``), is the loss of its process or node rather than its own error."""
    if error is None:
        return False
    if isinstance(error, str):
        text = error
    else:
        from ray import exceptions as rex

        lost = (rex.RayActorError, rex.NodeDiedError, rex.WorkerCrashedError,
                rex.LocalRayletDiedError, rex.ObjectLostError)
        if isinstance(error, lost):
            return True
        if isinstance(error, rex.RayTaskError):
            try:
                return isinstance(error.as_instanceof_cause(), lost)
            except Exception:  # noqa: BLE001 - an unpicklable cause: read its text
                pass
        text = f"{type(error).__name__}: {error}"
    first = next((line for line in text.splitlines() if line.strip()
                  and not line.startswith("Failure #")), "")
    names = ("ActorDiedError", "RayActorError", "ActorUnavailableError", "NodeDiedError",
             "WorkerCrashedError", "LocalRayletDiedError", "ObjectLostError")
    return any(name in first for name in names) or "The actor died" in text[:500]


def environment_problem(error: BaseException | str | None) -> str | None:
    """The message of a trial's failure (as trial_error gives it) when it is an
    EnvironmentProblem (a GPU CUDA cannot use, data neither on disk nor downloadable), in one
    line; None for any other failure."""
    if error is None:
        return None
    if isinstance(error, str):  # the traceback's text: the exception's line names its class
        names = "|".join(cls.__name__ for cls in _environment_problems())
        found = re.search(rf"^(?:[\w.]+\.)?(?:{names}): (.+)$", error, re.M)
        return found[1].strip() if found else None
    cause = getattr(error, "cause", None) or error  # RayTaskError keeps the trial's exception
    if isinstance(cause, EnvironmentProblem):
        return (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return None


def _environment_problems() -> list[type]:
    from trainer.dataset_files import DataCorruptError
    from trainer.datasets import DataUnavailableError

    return [GpuUnusableError, DataUnavailableError, DataCorruptError, EnvironmentProblem]


def trial_error(trial) -> BaseException | str | None:
    """The error a Tune trial failed with last, as Tune wrote it at once in the trial's local
    directory: ``error.txt`` gets a block for every failure, ``error.pkl`` the exception of
    Ray's errors only (so it can hold an older failure: then the text is the last one). Never
    the storage copies that ``trial.get_error()`` and ``get_pickled_error()`` read: those are
    uploaded with Tune's next snapshot, so in on_trial_recover and on_trial_error they hold the
    failure before the last one, or none."""
    text = _last_failure(getattr(trial, "error_file", None))
    path = getattr(trial, "pickled_error_file", None)
    if path and os.path.exists(path):
        try:
            import cloudpickle

            with open(path, "rb") as f:
                pickled = cloudpickle.load(f)
            if text is None or str(pickled).strip() == text:
                return pickled
        except Exception:  # noqa: BLE001 - unpicklable: the text says it
            pass
    return text


def _last_failure(path: str | None) -> str | None:
    """The newest "Failure # N (occurred at ...)" block of Tune's error.txt, without its header."""
    try:
        text = Path(path).read_text(errors="replace") if path else ""
    except OSError:
        return None
    blocks = text.split("Failure # ")
    return blocks[-1].partition("\n")[2].strip() if len(blocks) > 1 else None


def describe_error(error: BaseException | str | None) -> str:
    """One line for the console and the database: the exception's type and message (for an
    exception raised in a trial, the trial's own exception, not Ray's wrapper of it)."""
    if error is None:
        return "unknown error"
    if isinstance(error, BaseException):
        cause = getattr(error, "cause", None)
        error = cause if isinstance(cause, BaseException) else error
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
        return f"{type(error).__name__}: {first}"[:500]
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    return lines[-1][:500] if lines else "unknown error"
