"""The searchers of a sweep's Tune experiment: StudySearch (OptunaSearch on the sweep's study,
over DefineByRun's budget space), FixedRuns (a confirmation segment's runs) and SweepSearch
(Tune's SearchGenerator around either)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import optuna
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search import SearchGenerator, Searcher
from ray.tune.search.optuna import OptunaSearch

from .. import internals
from ..spec import SweepSpec
from ..trial.trainable import TrialRun


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
        study = internals.ot_study(self)
        known = {internals.storage_trial_id(t) for t in internals.ot_trials(self).values()}
        for orphan in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if internals.storage_trial_id(orphan) not in known:
                study.tell(orphan.number, state=optuna.trial.TrialState.FAIL)
                if fixed := orphan.system_attrs.get("fixed_params"):
                    study.enqueue_trial(fixed)

    def _told_before(self, trial_id: str, step: int | None = None) -> bool:
        """Finished in the study (or this step reported to it), though this searcher, restored
        from Tune's snapshot, has not told it so."""
        ot_trial = internals.ot_trials(self).get(trial_id)
        if trial_id in internals.completed_trials(self) or ot_trial is None:
            return False
        known = internals.study_storage(internals.ot_study(self)).get_trial(
            internals.storage_trial_id(ot_trial))
        return known.state.is_finished() or step in known.intermediate_values

    def suggest(self, trial_id: str):
        """Optuna's ask, with the logs that fill in the new trial written at once, in one go
        (search.storage.journal holds them back until here)."""
        from ..sweep.study import flush

        try:
            return super().suggest(trial_id)
        finally:
            if (study := internals.ot_study(self)) is not None:
                flush(internals.study_storage(study))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if not self._told_before(trial_id, result.get(TRAINING_ITERATION)):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self._told_before(trial_id):
            internals.completed_trials(self).add(trial_id)
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
    directory of its own (search.storage.s3), so there that would be the previous driver's, which
    nobody reads any more. This one creates them where the experiment is now."""

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        import copy

        import pyarrow.fs as pafs

        from ..storage.lease import held_lease

        experiment = internals.generator_experiment(self)
        storage = experiment.storage
        if isinstance(storage.storage_filesystem, pafs.LocalFileSystem):
            return  # one directory per segment on local disk
        lease = held_lease("s3://" + storage.storage_fs_path.rpartition("/")[0])
        if lease is not None and storage.experiment_dir_name != lease.namespace:
            moved = copy.copy(storage)
            moved.experiment_dir_name = lease.namespace
            experiment.storage = experiment.spec["storage"] = moved
