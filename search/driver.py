"""The sweep driver: one per sweep, it holds the lock, starts or attaches to Ray, and runs the
sweep's segments until ``--trials`` trials are recorded, resuming whatever a crash left."""

from __future__ import annotations

import dataclasses
import os
import sys

from .lease import sweep_lock
from .spec import SweepSpec
from .sweepdir import Segment, SweepDir, prepare, saved_spec


def plan_segments(segments: list[Segment], recorded: int, trials: int) -> list[Segment]:
    """The segments after the last unfinished one ended: done, plus a new one for the trials
    still missing (``recorded`` counts every trial the database holds but the lost ones)."""
    done = [dataclasses.replace(s, done=True) for s in segments]
    missing = trials - recorded
    return done if missing <= 0 else [*done, Segment(name=f"tune-{len(segments) + 1}", trials=missing)]


def run_segments(spec: SweepSpec, sweep: SweepDir, *, data_dir: str, trainable=None,
                 say=print) -> None:
    """Finish the last unfinished segment, then add one for the trials still missing. What
    counts is the database: every trial it holds, whatever its status, is one of ``--trials``,
    except those lost with a torn Tune snapshot, which new trials replace."""
    from ray import tune

    from trainer.status import Status

    from .db import list_sweeps, load_trials
    from .recorder import mark_lost
    from .tune_state import set_aside_unreadable_state, take_over_experiment
    from .tuner import build_tuner

    segments = sweep.segments()
    while True:
        segment = segments[-1] if segments and not segments[-1].done else None
        if segment is not None:
            segment = take_over_experiment(sweep, segment, segments)
            segments = [*segments[:-1], segment]
            set_aside_unreadable_state(sweep, segment, say)
            restore = tune.Tuner.can_restore(sweep.uri_of(segment.path))
        if segment is None or not restore:
            mark_lost(spec.name, sweep.storage, live=set())  # no Tune state will resume them
            recorded = 0
            if spec.name in list_sweeps(sweep.storage):
                recorded = int((load_trials(sweep.storage, spec.name)["status"] != Status.LOST).sum())
            segments = plan_segments(segments, recorded, spec.trials)
            if not segments[-1].done:
                segments[-1] = dataclasses.replace(segments[-1], dir=sweep.tune_dir(segments[-1].name))
            sweep.save_segments(segments)
            if segments[-1].done:
                return
            segment, restore = segments[-1], False
            say(f"starting {segment.name}: {segment.trials} new trials")
        else:
            say(f"resuming {segment.name}: {segment.trials} trials")
        extra = {} if trainable is None else {"trainable": trainable}
        build_tuner(spec, sweep, segment, first=segment.name == "tune-1", data_dir=data_dir,
                    restore=restore, **extra).fit()
        segments = [*segments[:-1], dataclasses.replace(segment, done=True)]
        sweep.save_segments(segments)


def _stop_writing(message: str) -> None:
    """The sweep's lease was lost (another driver may run the sweep now): stop at once, so that
    nothing more is written; called from the lease's thread, hence os._exit."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(2)


def quiet_libraries() -> None:
    """Our recorder prints one line per trial event; Tune's and Optuna's own chatter goes."""
    import optuna

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the old engine honours verbose=0
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def run_sweep(spec: SweepSpec, *, storage: str, address: str | None = None,
              data_dir: str | None = None, gpus_per_trial: float | None = None,
              shared_storage: bool = False, trainable=None, say=print) -> SweepSpec:
    """Run (or resume, or extend) the sweep ``spec`` describes; returns the spec it ran.
    Where: search.cluster.ATTACH_RULE. ``gpus_per_trial`` None: 1 when the cluster has or can
    add GPUs, else 0. ``trainable`` replaces the trainer (see tuner.build_tuner)."""
    from . import cluster

    quiet_libraries()
    target = cluster.find_target(address)
    if target.embedded:
        # Ray's local-only mode (its default on macOS and Windows): every server of the
        # embedded instance binds 127.0.0.1. Read when ray is first imported.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from trainer.datasets import DEFAULT_DATA_DIR

    data_dir = str(data_dir or DEFAULT_DATA_DIR)
    place = cluster.connect(target)
    try:
        cluster.check_storage(storage, place, shared=shared_storage)
        gpus = cluster.gpus_per_trial(place, gpus_per_trial)
        cluster.check_trial_fits(place, cpus=spec.cpus_per_trial, gpus=gpus)
        sweep = SweepDir(storage, spec.name)
        saved_spec(spec, sweep)  # a changed sweep is refused before anything is written
        sweep.check_writable()
        with sweep_lock(sweep.uri, spec.name, on_lost=_stop_writing):
            spec = prepare(dataclasses.replace(spec, gpus_per_trial=gpus), sweep)
            say(f"{spec.describe()}\n{place.describe()}\nsweep directory {sweep.uri}")
            run_segments(spec, sweep, data_dir=data_dir, trainable=trainable, say=say)
            if spec.final_eval:
                from .final_eval import run_final_eval

                run_final_eval(spec, sweep, data_dir=data_dir, say=say)
    finally:
        ray.shutdown()
    return spec
