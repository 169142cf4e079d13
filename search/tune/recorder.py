"""Driver-side Tune callbacks: every trial event goes into the trial database and onto the console.

Tune pickles its callbacks into the experiment state and unpickles them on ``Tuner.restore``,
so these hold only plain data and open their store lazily.

The database is written off Tune's thread: a hook turns the event into rows and queues them
(about a millisecond), and a writer thread writes whatever has queued up as one part per table
(rows that arrive while a write is on the wire go out together in the next). So a slow store
(S3: a PUT and a listing per table) never stalls Tune's scheduling. Before Tune uploads a
snapshot of its state it asks its callbacks for theirs (``get_state``): the recorder waits there
until every row queued so far is written, so the snapshot does not get ahead of the database
(the one overlap left, and the backfill covering it: docs/ARCHITECTURE.md, Reliability). A
write error is raised in Tune's thread at the next hook.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from ray import tune

from space_defs import WRNConfig, format_count, macs, param_count
from space_defs.budget import format_sci

from trainer.compute import trial_flops
from trainer.report import METRICS as EPOCH_FIELDS
from trainer.report import best_epoch
from trainer.status import Status

from .. import internals
from ..db.schema import SEARCH, EpochRow, TrialRow
from ..db.provenance import code_version, library_versions
from ..spec import SweepSpec
from ..trial.trainable import DEVICE, ERROR, GPUS, NOTE, TRIAL_STATUS, TrialRun
from .writer import Writer, mark_lost, open_store


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class _Trial:
    """What the driver has learned about one trial so far."""

    run: TrialRun
    started_at: dt.datetime
    epochs: dict[int, dict[str, Any]] = field(default_factory=dict)  # epoch -> Tune result
    failure: str | None = None  # a failure the trial reported as its last result

    @property
    def arch(self) -> WRNConfig:
        return self.run.arch

    @property
    def last(self) -> dict[str, Any] | None:
        return self.epochs[max(self.epochs)] if self.epochs else None

    def best(self, selected_by: tuple[str, ...]) -> dict[str, Any] | None:
        """The selected epoch, by the trainer's rule (``Recipe.selected_by``), as best.pt is."""
        return best_epoch([r for r in self.epochs.values() if r.get(TRIAL_STATUS) != Status.DIVERGED],
                          selected_by)


def final_status(spec: SweepSpec, trainer_status: str | None, epochs_done: int, errored: bool) -> Status:
    if errored:
        return Status.FAILED
    if trainer_status in (Status.DIVERGED, Status.CATASTROPHIC_OVERFIT, Status.FINISHED):
        return Status(trainer_status)
    return Status.STOPPED_EARLY if epochs_done < spec.recipe.epochs else Status.FINISHED


class SweepRecorder(tune.Callback):
    """Writes the trials and epochs tables (the database's only writer) and prints progress."""

    def __init__(self, spec: SweepSpec, storage: str):
        self.spec = spec
        self.storage = storage
        self._state()

    def _state(self) -> None:
        self._store = None
        self._trials: dict[str, _Trial] = {}
        self._uniform: WRNConfig | None = None
        self._best: tuple[float, str] | None = None
        self._ended: dict[str, int] = {}
        self._earlier: dict[str, dict[str, Any]] | None = None
        self._synced = False
        self._writer: Writer | None = None
        self._store_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec, "storage": self.storage}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._state()

    @property
    def store(self):
        """The sweep's TrialStore (opened on first use, by whichever thread needs it first)."""
        with self._store_lock:
            if self._store is None:
                self._store = open_store(self.storage, self.spec.name)
            return self._store

    @property
    def writer(self) -> Writer:
        if self._writer is None:
            self._writer = Writer(lambda: self.store, self.spec.name)
        return self._writer

    def get_state(self) -> None:
        """Called by Tune as it snapshots its state, before it uploads the snapshot: every row
        queued so far is written first. (No state of its own: None keeps Tune from writing any.)"""
        if self._writer is not None:
            self._writer.drain()
        return None

    # -- Tune hooks ----------------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        t = self._track(trial)
        self._write(trial, Status.RUNNING)
        flops = trial_flops(t.arch, self.spec.recipe, self.spec.dataset).total
        self._say(trial, f"started {t.arch.name}, {format_count(param_count(t.arch))} params, "
                         f"{format_count(macs(t.arch))} MACs, {format_sci(flops)} FLOPs to train")

    def on_step_begin(self, iteration, trials, **info):
        """Every step: a failed database write is raised here, in Tune's thread. Once per driver
        run: a driver that died with rows still queued (or between Tune's snapshot and its own
        database write) leaves Tune ahead of the database; write what the database lacks from
        Tune's records of every trial it restored (its result.json and last result)."""
        if self._writer is not None:
            self._writer.raise_error()
        if self._synced:
            return
        self._synced = True
        from ..storage import open_storage
        from .tune_state import resume_from_checkpoints_that_exist

        resume_from_checkpoints_that_exist(trials, self._say,
                                           trust_log=open_storage(self.storage).trusts_tune_log)
        recorded = self._recorded()
        for trial in trials:
            record = recorded.get(trial.trial_id, {})
            # A trial the database shows running; or one whose row is ahead of its epoch rows
            # (written by a recorder that flushed trials first and died between the two).
            behind = record.get("epochs_done", 0) > len(record.get("epochs", {}))
            if record.get("status", Status.RUNNING) != Status.RUNNING and not behind:
                continue
            ended = trial.status in ("TERMINATED", "ERROR")
            results = _tune_results(trial)
            if not results and not ended:
                continue  # not started yet
            t = self._track(trial)
            backfilled = False
            for result in results:
                if result.get(TRIAL_STATUS) == Status.FAILED:
                    if ended:  # a trial that runs again may yet succeed
                        t.failure = result.get(ERROR) or "failed"
                elif "epoch" in result and int(result["epoch"]) not in t.epochs:
                    self._record_epoch(trial, t, result)
                    backfilled = True
            if ended:
                self._end(trial, errored=trial.status == "ERROR")
            elif backfilled or behind:
                self._write(trial, Status.RUNNING)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        t = self._track(trial)
        if result.get(TRIAL_STATUS) == Status.FAILED:
            t.failure = result.get(ERROR) or "failed"
            return
        if result.get(NOTE):
            self._say(trial, result[NOTE])
        epoch = self._record_epoch(trial, t, result)
        self._write(trial, Status.RUNNING)
        robust, clean = result["val_robust_acc"], result["val_clean_acc"]
        self._say(trial, f"epoch {epoch}/{self.spec.recipe.epochs}: val robust {robust:.1%}, "
                         f"clean {clean:.1%}, {result['epoch_seconds']:.1f} s")
        if t.run.role != SEARCH:
            return  # "best so far" is the search's
        if self._best is None:
            self._best = self._best_recorded()
        if self._best is None or robust > self._best[0]:
            self._best = (robust, trial.trial_id)
            self._say(trial, f"best so far: {robust:.1%} val robust ({t.arch.name}, epoch {epoch})")

    def _best_recorded(self) -> tuple[float, str] | None:
        """The sweep's best val robust accuracy before this driver run (from the database), so
        "best so far" does not restart when the sweep is resumed or extended."""
        scored = [(r["val_robust_acc"], trial_id) for trial_id, rec in self._recorded().items()
                  if rec.get("role") in (None, SEARCH)
                  for r in rec.get("epochs", {}).values() if r.get("val_robust_acc") is not None]
        return max(scored, default=None)

    def _record_epoch(self, trial, t: _Trial, result: dict[str, Any]) -> int:
        epoch = int(result["epoch"])
        t.epochs[epoch] = {k: result.get(k) for k in (*EPOCH_FIELDS, TRIAL_STATUS, DEVICE, GPUS)}
        self.writer.put(epochs=[EpochRow(sweep=self.spec.name, trial_id=trial.trial_id,
                                         epoch=epoch, recorded_at=_now(),
                                         **{k: _number(result.get(k)) for k in EPOCH_FIELDS})])
        return epoch

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, errored=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        if not self._environment_failed(trial):
            self._end(trial, errored=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        from .failures import describe_error, is_node_loss, trial_error

        if self._environment_failed(trial):
            return
        error = trial_error(trial)
        what = "lost its node" if is_node_loss(error) else "failed"
        self._say(trial, f"{what}, retrying from its last checkpoint: {describe_error(error)}")

    def _environment_failed(self, trial) -> bool:
        """A trial that failed for its node's environment, not its config (EnvironmentProblem):
        recorded as env_failed (not one of --trials), and the sweep stops (environment_stop)."""
        from .failures import environment_problem, trial_error

        problem = environment_problem(trial_error(trial))
        if problem is None:
            return False
        self._track(trial)
        self._write(trial, Status.ENV_FAILED, error=problem)
        self.writer.drain()
        self._say(trial, f"cannot run here: {problem}")
        environment_stop(f"trial {trial.trial_id} could not run: {problem}")
        return True

    def on_experiment_end(self, trials, **info):
        self.writer.close()  # every queued row written; from here on this thread writes
        mark_lost(self.spec.name, self.storage, live={t.trial_id for t in trials}, store=self.store)
        self.store.close()

    def _track(self, trial) -> _Trial:
        """This trial's record; a trial resumed after a driver restart starts from what the
        database already holds for it."""
        if trial.trial_id not in self._trials:
            earlier = self._recorded().get(trial.trial_id, {})
            self._trials[trial.trial_id] = _Trial(TrialRun.of(trial.config, self.spec),
                                                  earlier.get("started_at") or _now(),
                                                  earlier.get("epochs", {}))
        return self._trials[trial.trial_id]

    def _recorded(self) -> dict[str, dict[str, Any]]:
        if self._earlier is None:
            from ..db import load_epochs, load_trials

            self.writer.drain()
            self.store.flush()  # (nothing buffered) opened: its tables exist, the sweep is known
            self._earlier = {}
            trials = load_trials(self.storage, self.spec.name)
            for row in trials.itertuples():
                self._earlier[row.trial_id] = {"started_at": row.started_at.to_pydatetime(),
                                               "status": row.status, "epochs": {},
                                               "role": row.role if isinstance(row.role, str) else None,
                                               "epochs_done": int(row.epochs_done or 0)}
            for row in load_epochs(self.storage, self.spec.name).to_dict("records"):
                record = self._earlier.setdefault(row["trial_id"], {"epochs": {}})
                record["epochs"][int(row["epoch"])] = {
                    **{k: _number(row[k]) for k in EPOCH_FIELDS}, TRIAL_STATUS: None}
        return self._earlier

    def _end(self, trial, *, errored: bool) -> None:
        t = self._track(trial)
        last = t.last
        failed = errored or t.failure is not None
        status = final_status(self.spec, last and last[TRIAL_STATUS], len(t.epochs), failed)
        error = (t.failure or _failure(trial)) if failed else None
        self._write(trial, status, error=error)
        self._ended[status] = self._ended.get(status, 0) + 1
        detail = f": {error}" if error else f" after {len(t.epochs)} epochs"
        self._say(trial, f"{status.replace('_', ' ')}{detail}")

    def _write(self, trial, status: str, error: str | None = None) -> None:
        self.writer.put(trials=[self.trial_row(trial, status, error)])

    def trial_row(self, trial, status: str, error: str | None) -> TrialRow:
        spec, t = self.spec, self._track(trial)
        recipe = t.run.recipe(spec)
        if self._uniform is None:
            self._uniform = spec.uniform_baseline()
        last, best = t.last, t.best(recipe.selected_by)
        return TrialRow(
            sweep=spec.name, trial_id=trial.trial_id, status=status, space=spec.space,
            **t.arch.to_dict(), params=param_count(t.arch), macs=macs(t.arch), budget=spec.budget,
            dataset=spec.dataset, method=recipe.method, epochs_planned=recipe.epochs,
            eps=recipe.eps,
            seed=recipe.seed, role=t.run.role,
            baseline="uniform" if t.arch == self._uniform else None, recipe_json=json.dumps(recipe.to_dict(), sort_keys=True),
            val_size=recipe.val_size, selected_on=recipe.select_on, epochs_done=len(t.epochs),
            best_val_robust_acc=best and best["val_robust_acc"],
            best_val_robust_epoch=best and _epoch_of(t, best),
            best_val_clean_acc=best and best["val_clean_acc"],
            last_val_robust_acc=last and last["val_robust_acc"],
            last_val_clean_acc=last and last["val_clean_acc"],
            last_epoch=max(t.epochs) if t.epochs else None,
            train_seconds=sum(r.get("train_seconds") or 0 for r in t.epochs.values()),
            eval_seconds=sum(r.get("eval_seconds") or 0 for r in t.epochs.values()),
            gpu_hours=sum(_seconds(r) * (r.get(GPUS) if r.get(GPUS) is not None else spec.gpus_per_trial)
                          for r in t.epochs.values()) / 3600,
            device_name=next((r[DEVICE] for r in reversed(t.epochs.values()) if r.get(DEVICE)),
                             "cpu" if not spec.gpus_per_trial else "GPU"),
            code_version=code_version(), library_versions=json.dumps(library_versions()),
            started_at=t.started_at, updated_at=_now(), error=error)

    def _say(self, trial, message: str) -> None:
        print(f"[{trial.trial_id}] {message}", file=sys.stdout, flush=True)


# -- a sweep stopped for its environment ----------------------------------------------------
_environment: list[str] = []  # what stopped this process's sweep (a driver runs one sweep)


class EnvironmentStop(Exception):
    """Raised out of Tune where its graceful stop is not installed (Tune not in the main
    thread): the sweep then stops as if its driver were killed."""


def environment_stop(problem: str) -> None:
    """Stop the sweep for what is wrong where a trial ran (an EnvironmentProblem), without
    spending its trials: by Tune's own graceful stop, the one Ctrl+C uses (its SIGUSR1 handler):
    the current step ends, Tune snapshots the experiment with every unfinished trial pending or
    running, the failed one included, and returns; the next run of the same command restores
    the snapshot and runs them from their checkpoints. The driver then exits 2 with
    ``problem`` (driver.run_segments)."""
    if _environment:
        return
    _environment.append(problem)
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)  # its "interrupted" notices: ours is one line
    if callable(signal.getsignal(signal.SIGUSR1)):
        os.kill(os.getpid(), signal.SIGUSR1)
    else:
        raise EnvironmentStop(problem)


def environment_problem() -> str | None:
    """What stopped this process's sweep, if environment_stop did."""
    return _environment[0] if _environment else None


def _seconds(result: dict[str, Any]) -> float:
    return (result.get("train_seconds") or 0) + (result.get("eval_seconds") or 0)


def _epoch_of(t: _Trial, result: dict[str, Any]) -> int:
    return next(e for e, r in t.epochs.items() if r is result)


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _tune_results(trial) -> list[dict[str, Any]]:
    """Every result Tune logged for the trial (its result.json in storage), then those its
    snapshot holds: the results of the checkpoints it keeps (the newest, which the trial
    resumes from, among them) and its last."""
    from .tune_state import logged_results

    manager = getattr(getattr(trial, "run_metadata", None), "checkpoint_manager", None)
    kept = [r.metrics for r in (internals.checkpoint_results(manager) if manager is not None else [])
            if r.metrics]
    return logged_results(trial) + kept + ([trial.last_result] if trial.last_result else [])


def _failure(trial) -> str:
    from .failures import describe_error, trial_error

    return describe_error(trial_error(trial))
