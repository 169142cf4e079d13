"""Fault injection for the reliability suite: real failures at chosen moments.

Off unless the environment variable ROBUST_ARCH_SEARCH_FAULTS holds a JSON list of faults, e.g.
``[{"at": "epoch", "epoch": 2, "action": "raise"}]``. Trial faults are claimed by the first
trials to reach them (a claim file per fault, created atomically in ``claims``, a directory all
nodes of a local test cluster share); a sticky fault fires again on the owning trial's retries.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass

ENV = "ROBUST_ARCH_SEARCH_FAULTS"
POINTS = ("start", "epoch", "db_write", "final_eval")
ACTIONS = ("raise", "oom", "diverge", "kill")


class InjectedFault(RuntimeError):
    """Raised by an injected 'raise' fault."""


@dataclass(frozen=True)
class Fault:
    at: str  # start | epoch (in a trial) | db_write | final_eval (in the driver)
    action: str  # raise | oom | diverge (absurd lr) | kill (SIGKILL this process)
    epoch: int = 1  # at="epoch": after this epoch (and every later one) was reported
    nth: int = 1  # driver points: the nth time the point is reached
    sticky: bool = True  # fires again when the trial that claimed it is retried
    claims: str = ""  # directory for claim files (trial faults)


def _faults() -> list[tuple[int, Fault]]:
    text = os.environ.get(ENV)
    return list(enumerate(Fault(**f) for f in json.loads(text))) if text else []


_seen: dict[str, int] = {}


def fired(at: str, *, trial_id: str | None = None, epoch: int | None = None) -> list[str]:
    """The actions of the faults due now; kills happen here and never return."""
    _seen[at] = _seen.get(at, 0) + 1
    actions = []
    for index, fault in _faults():
        if fault.at != at or (at == "epoch" and epoch < fault.epoch):
            continue
        if trial_id is None and fault.nth != _seen[at]:
            continue
        if trial_id is not None and not _claim(index, fault, trial_id):
            continue
        if fault.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        actions.append(fault.action)
    return actions


def _claim(index: int, fault: Fault, trial_id: str) -> bool:
    """Whether this trial owns the fault: the first to get here claims it, and a trial owns
    at most one fault, so that each fault lands on a trial of its own."""
    path = os.path.join(fault.claims, f"fault-{index}.claim")
    owned = [name for name in os.listdir(fault.claims) if name.endswith(".claim")
             and name != os.path.basename(path) and _owner(os.path.join(fault.claims, name)) == trial_id]
    if owned:
        return False
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return fault.sticky and _owner(path) == trial_id
    with os.fdopen(fd, "w") as f:
        f.write(trial_id)
    return True


def _owner(path: str) -> str:
    with open(path) as f:
        return f.read()
