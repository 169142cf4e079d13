"""One segment of a sweep as a Ray Tune experiment: OptunaSearch over the budget space, ASHA
on epochs, the trial-database recorder as a callback."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any

import optuna
from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import ConcurrencyLimiter, SearchGenerator, Searcher
from ray.tune.search.optuna import OptunaSearch

from ..trial.retry import failure_config
from .recorder import SweepRecorder
from ..spec import SweepSpec
from .strategy import sampler, scheduler
from ..sweep.files import Segment, SweepDir
from ..trial.trainable import Fence, TrialRun, train_trial


@dataclass(frozen=True)
class DefineByRun:
    """The searcher's space: Optuna suggests through ``trial``; the solved architecture comes
    back as constants, so each Tune config holds the exact network to train."""

    spec: SweepSpec

    def __call__(self, trial) -> dict[str, Any]:
        from space_defs import suggest_config

        spec = self.spec
        cfg = suggest_config(trial, spec.budget, space=spec.search_space(),
                             max_macs=spec.max_macs, tolerance=spec.tolerance)
        return cfg.to_dict()


class StudySearch(OptunaSearch):
    """OptunaSearch on the sweep's study, which outlives the driver. The study is written at
    once, Tune's snapshot (holding this searcher's map of Tune trials to study trials) every few
    seconds, so after a driver dies the study can be ahead of the snapshot Tune resumes from:

    - a trial the study holds as finished is run again by Tune from its last checkpoint: its
      results and its end are not told again (Optuna refuses to change a finished trial; the
      outcome it holds stands), nor are results it already holds (Optuna would warn);
    - a trial the study holds as running that no Tune trial will run (asked just before the
      driver died) is told failed, and its parameters, when they were queued (the baselines),
      are queued again, so no queued config is skipped.
    """

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        known = {ot_trial._trial_id for ot_trial in self._ot_trials.values()}
        for orphan in self._ot_study.get_trials(deepcopy=False,
                                                states=(optuna.trial.TrialState.RUNNING,)):
            if orphan._trial_id not in known:
                self._ot_study.tell(orphan.number, state=optuna.trial.TrialState.FAIL)
                if fixed := orphan.system_attrs.get("fixed_params"):
                    self._ot_study.enqueue_trial(fixed)

    def _told_before(self, trial_id: str, step: int | None = None) -> bool:
        """Finished in the study (or this step reported to it), though this searcher, restored
        from Tune's snapshot, has not told it so."""
        ot_trial = self._ot_trials.get(trial_id)
        if trial_id in self._completed_trials or ot_trial is None:
            return False
        known = self._ot_study._storage.get_trial(ot_trial._trial_id)
        return known.state.is_finished() or step in known.intermediate_values

    def suggest(self, trial_id: str):
        """Optuna's ask, with the logs that fill in the new trial written at once, in one go
        (search.sweep.study holds them back until here)."""
        from ..sweep.study import flush

        try:
            return super().suggest(trial_id)
        finally:
            if self._ot_study is not None:
                flush(self._ot_study._storage)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if not self._told_before(trial_id, result.get(TRAINING_ITERATION)):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self._told_before(trial_id):
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result=result, error=error)


class FixedRuns(Searcher):
    """A confirmation segment's searcher: its runs' configs (search.trial.trainable.TrialRun),
    in order. Its place in the list is saved with Tune's snapshot; a run the database holds as
    trained (by a driver that died after the snapshot was taken) is passed over, so a resumed
    segment trains each run once."""

    def __init__(self, runs, *, spec: SweepSpec, storage: str, metric=None, mode=None):
        super().__init__(metric=metric, mode=mode)
        self.runs, self.spec, self.storage = [dict(r) for r in runs], spec, storage
        self.given = 0

    def suggest(self, trial_id: str):
        from ..db import load_trials
        from ..sweep.confirm import confirmation_runs

        needed = {(run.arch, run.seed) for run in
                  confirmation_runs(self.spec, load_trials(self.storage, self.spec.name))}
        while self.given < len(self.runs):
            self.given += 1
            run = TrialRun.of(self.runs[self.given - 1], self.spec)
            if (run.arch, run.seed) in needed:
                return run.config()
        return Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:  # a pickle, as Tune's searchers save theirs
            pickle.dump({"runs": self.runs, "given": self.given}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.runs, self.given = state["runs"], state["given"]


class SweepSearch(SearchGenerator):
    """Tune's SearchGenerator around the sweep's searcher, except where a restored segment
    creates its new trials. Tune's own, restored from a snapshot, creates them in the experiment
    directory the snapshot was taken in; on object storage each driver runs the experiment in a
    directory of its own (search.sweep.files), so there that would be the previous driver's, which
    nobody reads any more. This one creates them where the experiment is now."""

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        import copy

        import pyarrow.fs as pafs

        from ..storage.lease import held_lease

        storage = self._experiment.storage
        if isinstance(storage.storage_filesystem, pafs.LocalFileSystem):
            return  # one directory per segment on local disk
        lease = held_lease("s3://" + storage.storage_fs_path.rpartition("/")[0])
        if lease is not None and storage.experiment_dir_name != lease.namespace:
            moved = copy.copy(storage)
            moved.experiment_dir_name = lease.namespace
            self._experiment.storage = self._experiment.spec["storage"] = moved


class GridOrder(optuna.samplers.GridSampler):
    """GridSampler, less its ``study.stop()`` once the grid is used up: that call raises outside
    ``study.optimize``, and here Tune drives the study by ask and tell (num_samples ends it)."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


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


def trial_fence(sweep: SweepDir) -> Fence | None:
    """What a trial checks before it writes a checkpoint: on object storage, that its driver
    still holds the sweep (its generation is the lease's), else it ends without writing."""
    from ..storage.lease import held_lease

    lease = held_lease(sweep.uri)
    if sweep.local or lease is None:
        return None
    return Fence(sweep.uri, lease.generation)


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
