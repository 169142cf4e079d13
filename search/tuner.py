"""One segment of a sweep as a Ray Tune experiment: OptunaSearch over the budget space, ASHA
on epochs, the trial-database recorder as a callback."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from .recorder import SweepRecorder
from .spec import SweepSpec
from .sweepdir import Segment, SweepDir
from .trainable import train_trial

JOURNAL_FILE = "optuna.journal"


@dataclass(frozen=True)
class DefineByRun:
    """The searcher's space: Optuna suggests through ``trial``; the solved architecture comes
    back as constants, so each Tune config holds the exact network to train."""

    spec_json: str

    def __call__(self, trial) -> dict[str, Any]:
        from space_defs import suggest_config

        spec = SweepSpec.from_json(self.spec_json)
        cfg = suggest_config(trial, spec.budget, space=spec.search_space(),
                             max_macs=spec.max_macs, tolerance=spec.tolerance)
        return cfg.to_dict()


def open_study(spec: SweepSpec, sweep: SweepDir, *, enqueue_baselines: bool):
    """The sweep's Optuna study storage, with the baselines queued first (once, however often
    the segment is restarted). It lives in a journal file in the sweep directory (it opens in
    optuna-dashboard); on object storage, where a journal cannot be appended to, in memory."""
    from optuna.storages import InMemoryStorage, JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if sweep.local:
        Path(sweep.path).mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(os.path.join(sweep.path, JOURNAL_FILE)))
    else:
        storage = InMemoryStorage()
    directions = ["maximize" if m == "max" else "minimize" for m in spec.modes]
    study = optuna.create_study(storage=storage, study_name=spec.name, directions=directions,
                                load_if_exists=True)
    if enqueue_baselines and spec.space != "grid":
        for point in spec.search_space().baseline_params():
            study.enqueue_trial(point, skip_if_exists=True)
    return storage


def build_tuner(spec: SweepSpec, sweep: SweepDir, segment: Segment, *, first: bool, data_dir: str,
                device_name: str, restore: bool, trainable=train_trial, callbacks=()) -> tune.Tuner:
    """The segment's Tuner. ``trainable`` has ``train_trial``'s signature (benchmarks, the
    replay and the fault tests pass their own); ``callbacks`` are added to the recorder."""
    # Tune's result.json stays (the recorder backfills from it); its CSV and TensorBoard logs
    # duplicate the trial database, and tensorboardX would import torch into the driver (3 s).
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    trainable = tune.with_resources(
        tune.with_parameters(trainable, spec_json=spec.to_json(), data_dir=data_dir),
        {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial})
    if restore:
        return tune.Tuner.restore(sweep.uri_of(segment.name), trainable,
                                  resume_unfinished=True, resume_errored=True)
    single = len(spec.objectives) == 1
    metric = spec.objectives[0] if single else list(spec.objectives)
    mode = spec.modes[0] if single else list(spec.modes)
    space = spec.search_space()
    if spec.space == "grid":
        sampler = optuna.samplers.GridSampler(space.grid_search_space(), seed=spec.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=spec.seed + len(sweep.segments()),
                                             n_startup_trials=min(10, max(2, spec.trials // 3)))
    searcher = OptunaSearch(
        space=DefineByRun(spec.to_json()), metric=metric, mode=mode, sampler=sampler,
        study_name=spec.name, storage=open_study(spec, sweep, enqueue_baselines=first))
    if spec.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", metric=metric, mode=mode,
                                  max_t=spec.recipe.epochs, grace_period=spec.grace_epochs)
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=spec.max_concurrent),
            scheduler=scheduler, num_samples=segment.trials, reuse_actors=True),
        run_config=tune.RunConfig(
            name=segment.name, storage_path=sweep.uri, verbose=0,
            callbacks=[JsonLoggerCallback(), SweepRecorder(spec, sweep.storage, device_name=device_name),
                       *callbacks],
            failure_config=tune.FailureConfig(max_failures=2),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
