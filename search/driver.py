"""The sweep driver: one per sweep, it holds the lock, starts or attaches to Ray, and runs the
sweep's segments until ``--trials`` trials are recorded, resuming whatever a crash left."""

from __future__ import annotations

import dataclasses
import os
import socket
from contextlib import contextmanager
from pathlib import Path

from .db.errors import UsageError
from .spec import SweepSpec
from .sweepdir import Segment, SweepDir, prepare


def plan_segments(segments: list[Segment], recorded: int, trials: int) -> list[Segment]:
    """The segments after the last unfinished one ended: done, plus a new one for the trials
    still missing (``recorded`` counts every trial the database holds but the lost ones)."""
    done = [dataclasses.replace(s, done=True) for s in segments]
    missing = trials - recorded
    return done if missing <= 0 else [*done, Segment(name=f"tune-{len(segments) + 1}", trials=missing)]


def run_segments(spec: SweepSpec, sweep: SweepDir, *, data_dir: str, device_name: str,
                 trainable=None, say=print) -> None:
    """Finish the last unfinished segment, then add one for the trials still missing. What
    counts is the database: every trial it holds, whatever its status, is one of ``--trials``,
    except those lost with a torn Tune snapshot, which new trials replace."""
    from ray import tune

    from trainer.status import Status

    from .db import list_sweeps, load_trials
    from .recorder import mark_lost
    from .tune_state import set_aside_unreadable_state
    from .tuner import build_tuner

    segments = sweep.segments()
    while True:
        segment = segments[-1] if segments and not segments[-1].done else None
        if segment is not None:
            set_aside_unreadable_state(sweep, segment, say)
            restore = tune.Tuner.can_restore(sweep.uri_of(segment.name))
        if segment is None or not restore:
            mark_lost(spec.name, sweep.storage, live=set())  # no Tune state will resume them
            recorded = 0
            if spec.name in list_sweeps(sweep.storage):
                recorded = int((load_trials(sweep.storage, spec.name)["status"] != Status.LOST).sum())
            segments = plan_segments(segments, recorded, spec.trials)
            sweep.save_segments(segments)
            if segments[-1].done:
                return
            segment, restore = segments[-1], False
            say(f"starting {segment.name}: {segment.trials} new trials")
        else:
            say(f"resuming {segment.name}: {segment.trials} trials")
        extra = {} if trainable is None else {"trainable": trainable}
        build_tuner(spec, sweep, segment, first=segment.name == "tune-1", data_dir=data_dir,
                    device_name=device_name, restore=restore, **extra).fit()
        segments = [*segments[:-1], dataclasses.replace(segment, done=True)]
        sweep.save_segments(segments)


class SweepBusy(UsageError):
    """Another driver holds the sweep's lock."""


@contextmanager
def lock(sweep: SweepDir):
    """One driver per sweep: a lock file in the sweep directory, held while it runs. (Object
    storage has no locks: there, one driver per sweep is the user's responsibility.)"""
    from filelock import FileLock, Timeout

    if not sweep.local:
        yield
        return
    Path(sweep.path).mkdir(parents=True, exist_ok=True)
    held = FileLock(os.path.join(sweep.path, "driver.lock"))
    try:
        held.acquire(timeout=0)
    except Timeout:
        raise SweepBusy(f"sweep {sweep.name!r} is being run by another driver right now; "
                        "wait for it to finish, or choose another --name") from None
    try:
        yield
    finally:
        held.release()


def check_reachable(address: str | None) -> None:
    """Fail in seconds, not after Ray's minutes of retries, when nothing listens there."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise _unreachable(address, e.strerror or str(e)) from None


def _unreachable(address: str, why: str) -> UsageError:
    return UsageError(f"cannot reach the Ray cluster at {address!r} ({why}); check the address "
                      "(`ray status` on the head node), or omit --address and unset RAY_ADDRESS "
                      "for a local run")


def quiet_libraries() -> None:
    """Our recorder prints one line per trial event; Tune's and Optuna's own chatter goes."""
    import optuna

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the old engine honours verbose=0
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def init_ray(address: str | None) -> str:
    """Connect to the cluster at ``address`` (or RAY_ADDRESS); else start an embedded local Ray
    (on localhost only when run_sweep set Ray's local-only mode before importing it). Returns
    where it runs, in words."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level="warning")
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise _unreachable(address, str(e).splitlines()[0]) from None
        return f"Ray cluster at {address}"
    ray.init(address="local",  # a new instance: never attach to another local cluster
             include_dashboard=False, log_to_driver=False,
             configure_logging=True, logging_level="warning")
    return "embedded local Ray"


def run_sweep(spec: SweepSpec, *, storage: str, address: str | None = None,
              data_dir: str | None = None, auto_gpus: bool = False, trainable=None,
              say=print) -> SweepSpec:
    """Run (or resume, or extend) the sweep ``spec`` describes; returns the spec it ran.
    ``trainable`` replaces the trainer (see tuner.build_tuner)."""
    quiet_libraries()
    if not (address or os.environ.get("RAY_ADDRESS")):
        # Ray's local-only mode (its default on macOS and Windows): every server of the
        # embedded instance binds 127.0.0.1. Read when ray is first imported.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from trainer.datasets import DEFAULT_DATA_DIR

    data_dir = str(data_dir or DEFAULT_DATA_DIR)
    sweep = SweepDir(storage, spec.name)
    sweep.check_writable()
    with lock(sweep):
        spec = prepare(spec, sweep)
        where = init_ray(address)
        try:
            if auto_gpus and ray.cluster_resources().get("GPU", 0) >= 1:
                spec = prepare(dataclasses.replace(spec, gpus_per_trial=1.0), sweep)
            say(f"{spec.describe()}\nrunning on {where}; sweep directory {sweep.uri}")
            device = "GPU" if spec.gpus_per_trial else "cpu"
            run_segments(spec, sweep, data_dir=data_dir, device_name=device, trainable=trainable,
                         say=say)
            if spec.final_eval:
                from .final_eval import run_final_eval

                run_final_eval(spec, sweep, data_dir=data_dir, say=say)
        finally:
            ray.shutdown()
    return spec
