"""One segment of a sweep as a Ray Tune experiment: OptunaSearch over the budget space, ASHA
on epochs, the trial-database recorder as a callback."""

from __future__ import annotations

import os

import optuna
from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import ConcurrencyLimiter

from .failures import failure_config
from .recorder import SweepRecorder
from ..spec import SweepSpec
from .strategy import sampler, scheduler
from ..sweep.files import Segment, SweepDir
from ..trial.trainable import train_trial
from .searchers import DefineByRun, FixedRuns, StudySearch, SweepSearch
from .tune_state import resolve_moved_names


def open_study(spec: SweepSpec, sweep: SweepDir, *, enqueue_baselines: bool):
    """The sweep's Optuna study storage, with the baselines queued first (once, however often
    the segment is restarted). It lives in the sweep directory (search.sweep.study: a journal file on
    local disk, a chain of journal objects on object storage), so a resumed or extended sweep's
    sampler knows every earlier trial; only the driver holding the sweep's lease writes it."""
    from ..sweep.study import open_study_storage

    storage = open_study_storage(sweep.uri)
    study = optuna.create_study(storage=storage, study_name=spec.name, directions=directions(spec),
                                load_if_exists=True)
    if enqueue_baselines:
        queue_baselines(study, spec)
    return storage


def directions(spec: SweepSpec) -> list[str]:
    return ["maximize" if m == "max" else "minimize" for m in spec.modes]


def queue_baselines(study: optuna.Study, spec: SweepSpec) -> None:
    """The hand-designed references run first (a grid runs them in its own order)."""
    if spec.sampler != "grid":
        for point in spec.search_space().baseline_params():
            study.enqueue_trial(point, skip_if_exists=True)


def objective(spec: SweepSpec) -> tuple[str | list[str], str | list[str]]:
    """Tune's metric and mode: one objective, or the list of them."""
    if len(spec.metrics) == 1:
        return spec.metrics[0], spec.modes[0]
    return list(spec.metrics), list(spec.modes)


def max_concurrent_in(spec: SweepSpec, segment: Segment) -> int:
    """``--max-concurrent`` (resolved by the driver from the cluster when not given), at most
    the segment's trials."""
    return min(spec.max_concurrent or segment.trials, segment.trials)


def trial_fence(sweep: SweepDir):
    """What a trial checks before it writes a checkpoint: on object storage, that its driver
    still holds the sweep (its generation is the lease's), else it ends without writing."""
    from ..storage.base import held_lease

    return sweep.backend.trial_fence(held_lease(sweep.uri))


def build_tuner(spec: SweepSpec, sweep: SweepDir, segment: Segment, *, first: bool, data_dir: str,
                restore: bool, trainable=train_trial, callbacks=(), stop=None) -> tune.Tuner:
    """The segment's Tuner. ``trainable`` has ``train_trial``'s signature (benchmarks, the fault
    tests and the replay's lookup pass their own); ``callbacks`` are added to the recorder;
    ``stop``, a Tune stopper (the replay's compute budget). The experiment is ``segment.path``
    in the sweep directory."""
    # Tune's result.json stays (the recorder backfills from it); its CSV and TensorBoard logs
    # duplicate the trial database, and tensorboardX would import torch into the driver (3 s).
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    trainable = tune.with_resources(
        tune.with_parameters(trainable, spec=spec, data_dir=data_dir,
                             fence=trial_fence(sweep)),
        {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial})
    if restore:
        resolve_moved_names()
        return tune.Tuner.restore(sweep.uri_of(segment.path), trainable,
                                  resume_unfinished=True, resume_errored=True)
    parent, _, leaf = segment.path.rpartition("/")
    metric, mode = objective(spec)
    if segment.runs:  # confirmation runs: each trained to the end, none told to the study
        searcher = FixedRuns(segment.runs, spec=spec, storage=sweep.storage, metric=metric, mode=mode)
        trial_scheduler = FIFOScheduler()
    else:
        searcher, trial_scheduler = StudySearch(
            space=DefineByRun(spec), metric=metric, mode=mode,
            sampler=sampler(spec, spec.seed + len(sweep.segments())), study_name=spec.name,
            storage=open_study(spec, sweep, enqueue_baselines=first)), scheduler(spec)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=SweepSearch(ConcurrencyLimiter(searcher,
                                                      max_concurrent=max_concurrent_in(spec, segment))),
            scheduler=trial_scheduler, num_samples=segment.trials, reuse_actors=True),
        run_config=tune.RunConfig(
            name=leaf, storage_path=sweep.uri_of(parent) if parent else sweep.uri, verbose=0,
            stop=stop,
            callbacks=[JsonLoggerCallback(), SweepRecorder(spec, sweep.storage),
                       *callbacks],
            failure_config=failure_config(),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
