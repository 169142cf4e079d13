"""Fault injection for the reliability tests: real failures at chosen moments, injected from the
test side through seams the code has for its own reasons (the trainable that search.run.main
takes, the atomic write every database part goes through), never through hooks in production.

    python tests/harness/faults.py FAULTS_JSON [search.run arguments ...]

runs ``search.run`` with the faults, a JSON list such as
``[{"at": "epoch", "epoch": 2, "action": "raise", "claims": "/tmp/x"}]``. Trial faults are
claimed by the first trials to reach them (a claim file per fault or group of faults, created
atomically in ``claims``, a directory every node of a local test cluster sees); a sticky fault
fires again on the owning trial's retries. Driver faults fire the ``nth`` time their point is reached.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Fault:
    at: str  # start | epoch (in a trial) | db_write | final_eval | lease (in the driver)
    action: str  # raise | oom | diverge (absurd lr) | hold (wait for release()) | kill (SIGKILL
    #              the driver) | ttl | stall | kill_between_parts (SIGKILL the driver between
    #              the two parts of one flush)
    epoch: int = 1  # at="epoch": after this epoch (and every later one) was reported
    nth: int = 1  # driver points: the nth time the point is reached
    sticky: bool = True  # fires again when the trial that claimed it is retried
    group: str = ""  # faults of one group land on one trial (the first to reach one of them)
    claims: str = ""  # directory for claim files (trial faults)
    table: str = ""  # at="db_write": count only the parts of this table
    status: str = ""  # action="kill_between_parts": in a flush whose trials part holds this status
    old_order: bool = False  # db_write: flush trials before epochs (the old recorder), a trial's
    #                          last result and its end in one flush
    seconds: float = 0.0  # at="lease", action="ttl": the driver's lease ttl


class InjectedFault(RuntimeError):
    """Raised by an injected 'raise' fault."""


def trial_actions(faults: list[Fault], at: str, trial_id: str, epoch: int = 0) -> list[str]:
    """The actions of the trial faults this trial owns at this point."""
    return [f.action for index, f in enumerate(faults)
            if f.at == at and (at != "epoch" or epoch >= f.epoch) and _claim(index, f, trial_id)]


def _claim(index: int, fault: Fault, trial_id: str) -> bool:
    """Whether the fault fires for this trial here. The first trial to reach a fault owns it
    (or its whole ``group``), and a trial owns at most one fault or group, so that each lands
    on a trial of its own; a fault that is not sticky fires once."""
    if not _owns(fault.claims, f"group-{fault.group}" if fault.group else f"fault-{index}", trial_id):
        return False
    return fault.sticky or _first(os.path.join(fault.claims, f"fired-{index}"), trial_id)


def _owns(claims: str, unit: str, trial_id: str) -> bool:
    path = os.path.join(claims, f"{unit}.claim")
    if any(name.endswith(".claim") and name != os.path.basename(path)
           and _owner(os.path.join(claims, name)) == trial_id for name in os.listdir(claims)):
        return False
    return _first(path, trial_id) or _owner(path) == trial_id


def _first(path: str, trial_id: str) -> bool:
    """Create ``path`` holding ``trial_id``; False if it existed already."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(trial_id)
    return True


def _owner(path: str) -> str:
    with open(path) as f:
        return f.read()


def hold(claims: str, trial_id: str, epoch: int) -> None:
    """Say where this trial is (``held-TRIAL`` in ``claims``: its epoch and Ray node id), then
    wait, its epoch reported and checkpointed, until the test calls ``release(claims)``."""
    import ray

    held = {"trial_id": trial_id, "epoch": epoch, "node_id": ray.get_runtime_context().get_node_id()}
    with open(os.path.join(claims, f"held-{trial_id}.tmp"), "w") as f:
        json.dump(held, f)
    os.replace(os.path.join(claims, f"held-{trial_id}.tmp"), os.path.join(claims, f"held-{trial_id}"))
    while not os.path.exists(os.path.join(claims, "release")):
        time.sleep(0.05)


def held(claims: str) -> list[dict]:
    """The trials holding now (or that held before their release)."""
    return [json.loads(Path(claims, name).read_text()) for name in sorted(os.listdir(claims))
            if name.startswith("held-") and not name.endswith(".tmp")]


def release(claims: str) -> None:
    Path(claims, "release").touch()


def command(sweep_cmd: list[str], faults: list[dict]) -> list[str]:
    """``sweep_cmd`` (``python -m search.run ARGS``) run through this harness with ``faults``."""
    assert sweep_cmd[1:3] == ["-m", "search.run"], sweep_cmd
    return [sweep_cmd[0], str(Path(__file__).resolve()), json.dumps(faults), *sweep_cmd[3:]]


def with_faults(sweep_cmd: list[str], tmp_path, *faults: dict) -> list[str]:
    """``command`` with trial faults, which claim their trials in ``tmp_path``/claims."""
    claims = Path(tmp_path) / "claims"
    claims.mkdir(exist_ok=True)
    return command(sweep_cmd, [{**f, "claims": str(claims)} for f in faults])


def faulty_trainable(faults: list[Fault]):
    """search.trial.trainable.train_trial with the trial faults injected around it."""

    def train_faulty(config, *, spec, data_dir: str, fence=None) -> None:
        from ray import tune

        from search.trial.trainable import TRIAL_STATUS, train_trial
        from trainer.status import Status

        trial_id = tune.get_context().get_trial_id()
        if "diverge" in trial_actions(faults, "start", trial_id):
            spec = dataclasses.replace(spec, recipe=dataclasses.replace(spec.recipe, lr=1e9))
        report = tune.report

        def report_then_fail(metrics, *args, **kwargs):
            report(metrics, *args, **kwargs)
            if metrics.get(TRIAL_STATUS) == Status.FAILED:
                return
            for action in trial_actions(faults, "epoch", trial_id, int(metrics["epoch"])):
                if action == "raise":
                    raise InjectedFault(f"injected failure after epoch {metrics['epoch']}")
                if action == "oom":
                    import torch

                    raise torch.OutOfMemoryError("CUDA out of memory (injected)")
                if action == "hold":
                    hold(faults[0].claims, trial_id, int(metrics["epoch"]))

        tune.report = report_then_fail
        try:
            train_trial(config, spec=spec, data_dir=data_dir, fence=fence)
        finally:
            tune.report = report

    # Tune.restore insists on a trainable of the same name: the unfaulty rerun uses train_trial
    train_faulty.__name__ = train_faulty.__qualname__ = "train_trial"
    return train_faulty


def arm_driver(faults: list[Fault]) -> None:
    """Kill this (driver) process at the nth database write (of a table, or of any), between
    the temp file's fsync and its rename, or after the nth final evaluation was stored. Lease
    faults: ``ttl`` gives the driver's lease that ttl; ``stall``: from a SIGUSR2 on, the
    driver's lease clock stands still and its renewals hang (a machine suspended on a clock that
    does not count the suspend: it cannot tell that its lease lapses), said on stdout."""
    seen: dict[str, int] = {}

    def due(at: str, table: str = "") -> bool:
        hit = False
        for key in {"", table}:
            seen[f"{at}:{key}"] = seen.get(f"{at}:{key}", 0) + 1
        for f in faults:
            if f.at == at and f.action == "kill" and f.nth == seen[f"{at}:{f.table}"] and f.table in ("", table):
                hit = True
        return hit

    for fault in faults:
        if fault.at == "lease" and fault.action == "ttl":
            from search.storage import lease

            lease.DEFAULT_TTL = fault.seconds
        if fault.at == "lease" and fault.action == "stall":
            signal.signal(signal.SIGUSR2, _stall_lease)

    between = [f for f in faults if f.at == "db_write" and f.action == "kill_between_parts"]
    flush_parts: list[set[str]] = []  # the statuses in each part the current flush renamed so far

    replace = os.replace

    def replace_or_die(src, dst, *args, **kwargs):
        parts = os.fspath(dst).split(os.sep)
        if "db" in parts:
            table = parts[parts.index("db") + 1]
            if due("db_write", table):
                os.kill(os.getpid(), signal.SIGKILL)
            flush_parts.append(_statuses(src) if table == "trials" else set())
            if len(flush_parts) == 2 and any(f.status in set().union(*flush_parts) for f in between):
                os.kill(os.getpid(), signal.SIGKILL)
        return replace(src, dst, *args, **kwargs)

    os.replace = replace_or_die

    from search.db.store import TrialStore

    write, flush = TrialStore.write, TrialStore.flush

    def write_noting_evals(self, *args, **kwargs):
        self._evals_pending = bool(kwargs.get("evals")) or getattr(self, "_evals_pending", False)
        return write(self, *args, **kwargs)

    def flush_or_die(self, *args, **kwargs):
        out = flush(self, *args, **kwargs)
        if getattr(self, "_evals_pending", False):
            self._evals_pending = False
            if due("final_eval"):
                os.kill(os.getpid(), signal.SIGKILL)
        return out

    def flush_noting_parts(self, *args, **kwargs):
        flush_parts.clear()
        return flush_or_die(self, *args, **kwargs)

    TrialStore.write, TrialStore.flush = write_noting_evals, flush_noting_parts
    if any(f.old_order for f in between):
        _old_order()


def _old_order() -> None:
    """The recorder before: trials flushed before epochs; and a trial's last result recorded
    together with its end (the writer thread held off meanwhile), so that they share a flush."""
    from search.tune import recorder
    from search.db import store

    store.FLUSH_ORDER = ("trials", "epochs", "evals")
    on_result, on_complete = recorder.SweepRecorder.on_trial_result, recorder.SweepRecorder.on_trial_complete
    last: dict[str, tuple] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("epoch") == self.spec.recipe.epochs:
            last[trial.trial_id] = (iteration, trials, trial, result)
            return None
        return on_result(self, iteration, trials, trial, result, **info)

    def on_trial_complete(self, iteration, trials, trial, **info):
        with self.writer._cond:
            if trial.trial_id in last:
                on_result(self, *last.pop(trial.trial_id))
            return on_complete(self, iteration, trials, trial, **info)

    recorder.SweepRecorder.on_trial_result = on_trial_result
    recorder.SweepRecorder.on_trial_complete = on_trial_complete


def _statuses(path) -> set[str]:
    import pyarrow.parquet as pq

    return set(pq.read_table(path, columns=["status"]).column("status").to_pylist())


def _stall_lease(signum, frame) -> None:
    import threading

    from search.storage import lease

    hang = threading.Event()
    for held in list(lease._HELD.values()):
        held._deadline = float("inf")
        held._renew = hang.wait
    print("[harness] lease stalled", flush=True)


def main(argv: list[str]) -> int:
    import cloudpickle

    from search import run

    faults = [Fault(**f) for f in json.loads(argv[0])]
    arm_driver(faults)
    if __name__ != "__main__":  # (as a script, cloudpickle sends its functions by value anyway)
        cloudpickle.register_pickle_by_value(sys.modules[__name__])  # trial processes lack tests/
    return run.main(argv[1:], trainable=faulty_trainable(faults))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main(sys.argv[1:]))
