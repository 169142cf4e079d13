"""The sweep driver: one per sweep, it holds the lock, starts or attaches to Ray, and runs the
sweep's segments until ``--trials`` trials are recorded, resuming whatever a crash left."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

from space_defs.cli import UsageError

from . import internals
from .storage.lease import sweep_lock
from .spec import SweepSpec
from .sweep.files import Segment, SweepDir, prepare, saved_spec


def plan_segments(segments: list[Segment], recorded: int, trials: int) -> list[Segment]:
    """The segments after the last unfinished one ended: done, plus a new one for the trials
    still missing (``recorded`` counts every trial the database holds but those not counted:
    lost ones, and ones that could not run for their environment; Status.NOT_COUNTED)."""
    done = [dataclasses.replace(s, done=True) for s in segments]
    missing = trials - recorded
    return done if missing <= 0 else [*done, Segment(name=f"tune-{len(segments) + 1}", trials=missing)]


def plan_confirmation(segments: list[Segment], runs: list) -> list[Segment]:
    """The segments, plus one of the confirmation runs (TrialRun) still missing, if any."""
    if not runs:
        return segments
    return [*segments, Segment(name=f"confirm-{len(segments) + 1}", trials=len(runs),
                               runs=tuple(run.config() for run in runs))]


def run_segments(spec: SweepSpec, sweep: SweepDir, *, data_dir: str, trainable=None,
                 say=print) -> None:
    """Finish the last unfinished segment, then add one for the trials still missing, then one
    for the confirmation runs still missing (search.sweep.confirm). What counts is the database:
    every search trial it holds, whatever its status, is one of ``--trials``, except those lost
    with a torn Tune snapshot, which new trials replace, and those that could not run for their
    environment. A trial meeting an EnvironmentProblem stops the segment
    unfinished (recorder.environment_stop): UsageError, and the next run resumes it."""
    from ray import tune

    from trainer.status import NOT_COUNTED

    from .db import list_sweeps, load_trials
    from .db.ranking import roles
    from .db.schema import SEARCH
    from .tune.recorder import EnvironmentStop, environment_problem
    from .tune.writer import mark_lost
    from .sweep.confirm import confirmation_runs
    from .sweep.confirm import describe as describe_runs
    from .trial.trainable import TrialRun
    from .tune.tune_state import check_tune_state, remove_earlier_holders, take_over_experiment
    from .tune.tuner import build_tuner

    segments = sweep.segments()
    while True:
        segment = segments[-1] if segments and not segments[-1].done else None
        if segment is not None:
            segment = take_over_experiment(sweep, segment, segments)
            segments = [*segments[:-1], segment]
            check_tune_state(sweep, segment, say)
            restore = tune.Tuner.can_restore(sweep.uri_of(segment.path))
        if segment is None or not restore:
            mark_lost(spec.name, sweep.storage, live=set())  # no Tune state will resume them
            trials = load_trials(sweep.storage, spec.name) if spec.name in list_sweeps(sweep.storage) \
                else None
            recorded = 0 if trials is None else int(
                (~trials["status"].isin(NOT_COUNTED) & (roles(trials) == SEARCH)).sum())
            segments = plan_segments(segments, recorded, spec.trials)
            if segments[-1].done and trials is not None:
                segments = plan_confirmation(segments, confirmation_runs(spec, trials))
            if not segments[-1].done:
                segments[-1] = dataclasses.replace(segments[-1], dir=sweep.tune_dir(segments[-1].name))
            sweep.save_segments(segments)
            if segments[-1].done:
                return
            segment, restore = segments[-1], False
            say(f"starting {segment.name}: " + (describe_runs([TrialRun.of(r, spec) for r in segment.runs])
                                                if segment.runs else f"{segment.trials} new trials"))
        else:
            say(f"resuming {segment.name}: {segment.trials} trials")
        extra = {} if trainable is None else {"trainable": trainable}
        results = None
        try:
            results = build_tuner(spec, sweep, segment, first=segment.name == "tune-1",
                                  data_dir=data_dir, restore=restore, **extra).fit()
        except EnvironmentStop:
            pass  # Tune not in the main thread: stopped as if killed; resumes all the same
        if (problem := environment_problem()) is not None:
            raise UsageError(f"{problem}. The sweep stopped with no trial used up: fix it and "
                             "run the same command again")
        if interrupted(results, load_trials(sweep.storage, spec.name)):
            raise KeyboardInterrupt
        segments = [*segments[:-1], dataclasses.replace(segment, done=True)]
        sweep.save_segments(segments)
        remove_earlier_holders(sweep, segment, say)


def interrupted(results, recorded) -> bool:
    """Whether Tune's run of the segment ended early: on Ctrl-C (SIGINT) Tune saves its state,
    stops its trials (TERMINATED in its own records from then on) and returns as if it were
    done. The database knows better: a trial of this run that it still shows running was
    stopped. (A run may make fewer trials than the segment's, e.g. when Tune could not restore
    its state: the next segment makes up for them.)"""
    from trainer.status import Status

    if results is None:
        return False
    ran = {trial.trial_id for trial in internals.experiment_trials(results)}
    return bool((recorded["trial_id"].isin(ran) & (recorded["status"] == Status.RUNNING)).any())


def _stop_writing(message: str) -> None:
    """The sweep's lease was lost (another driver may run the sweep now): stop at once, so that
    nothing more is written; called from the lease's thread, hence os._exit."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(2)


def check_data(dataset: str, data_dir: str) -> None:
    """Before Ray starts, when this machine is one of the sweep's nodes (embedded Ray, or the
    cluster's head): the dataset here, downloaded now if it is missing, and its files checked
    (torchvision's md5, unless TRAINER_DATA_MD5=off, and the dataset's image counts and
    shapes), by ``python -m trainer fetch`` in a process of its own, so that the driver never
    imports torch or holds the images (a second for CIFAR-10 once it is there). UsageError, in
    one line, if it is neither there nor downloadable, or is not the dataset. Trials on other
    nodes check their own (an EnvironmentProblem stops the sweep, see run_segments)."""
    from trainer.datasets import dataset_spec

    if not dataset_spec(dataset).files:  # shipped with a package (digits)
        return
    out = subprocess.run([sys.executable, "-m", "trainer", "fetch", dataset, "--data-dir", data_dir],
                         capture_output=True, text=True)
    if out.returncode != 0:
        lines = [line for line in out.stderr.splitlines() if line.strip()] or ["unknown error"]
        why = lines[-1].removeprefix("error: ").split(" (see python -m trainer")[0]
        raise UsageError(f"{why}. Nothing was run or written")


def trials_at_once(spec: SweepSpec, place) -> tuple[int, str]:
    """How many trials Ray will run at once, and why: what the cluster can run at once
    (search.cluster.place.concurrent_trials), at most --max-concurrent and the trials."""
    from .cluster.place import concurrent_trials

    can = concurrent_trials(place, cpus=spec.cpus_per_trial, gpus=spec.gpus_per_trial)
    where = "this machine" if place.embedded else "the cluster"
    n, why = can, f"what {where} can run at once"
    if spec.max_concurrent:
        n = min(spec.max_concurrent, can)
        why = "--max-concurrent" if n == spec.max_concurrent else \
            f"--max-concurrent {spec.max_concurrent}, but {why} is {can}"
    if n > spec.trials:
        why += f" is {n}, at most the {spec.trials} trials"
    return min(n, spec.trials), why


def run_sweep(spec: SweepSpec, *, storage: str, address: str | None = None,
              data_dir: str | None = None, shared_storage: bool = False, yes: bool = False, trainable=None,
              say=print) -> SweepSpec:
    """Run (or resume, or extend) the sweep ``spec`` describes; returns the spec it ran.
    Where: search.cluster.target.ATTACH_RULE. ``spec.gpus_per_trial`` None: 1 when the cluster has or
    can add GPUs, else 0; ``spec.max_concurrent`` None: what the cluster can run at once (both
    resolved here, once, and saved with the sweep). ValueError if the space cannot meet the
    budget, before Ray starts. Its cost
    is said first, and a CPU sweep above a day refused unless ``yes`` (search.cost).
    ``trainable`` replaces the trainer (see tuner.build_tuner)."""
    from . import cluster, cost

    from trainer.datasets import DEFAULT_DATA_DIR

    spec.check()
    data_dir = str(data_dir or DEFAULT_DATA_DIR)
    target = cluster.find_target(address)
    if target.embedded or target.head is not None:  # this machine is one of the sweep's nodes
        check_data(spec.dataset, data_dir)
    if target.embedded:
        # Ray's local-only mode (its default on macOS and Windows): every server of the
        # embedded instance binds 127.0.0.1. Read when ray is first imported.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    with cluster.ray_session(target) as place:
        cluster.check_storage(storage, place, shared=shared_storage)
        spec = dataclasses.replace(spec, gpus_per_trial=cluster.gpus_per_trial(place, spec.gpus_per_trial))
        cluster.check_trial_fits(place, cpus=spec.cpus_per_trial, gpus=spec.gpus_per_trial)
        at_once, at_once_why = trials_at_once(spec, place)
        sweep = SweepDir(storage, spec.name)
        saved_spec(spec, sweep)  # a changed sweep is refused before anything is written
        price = cost.estimate(spec, place, at_once=at_once)
        cost.check(price, place, yes=yes)  # nothing written yet
        sweep.check_writable()
        with sweep_lock(sweep.uri, spec.name, on_lost=_stop_writing):
            spec = prepare(dataclasses.replace(spec, max_concurrent=spec.max_concurrent or at_once),
                           sweep)
            say(f"{spec.describe()}\n{place.describe()}\n"
                f"trials at once: {at_once} ({at_once_why}; {spec.gpus_per_trial:g} GPUs and "
                f"{spec.cpus_per_trial:g} CPUs per trial)\n{price.describe()}\n"
                f"sweep directory {sweep.uri}")
            run_segments(spec, sweep, data_dir=data_dir, trainable=trainable, say=say)
            if spec.final_eval:
                from .final_eval import run_final_eval

                run_final_eval(spec, sweep, data_dir=data_dir, say=say)
    return spec
