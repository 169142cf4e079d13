"""Driver-side Tune callbacks: every trial event goes into the trial database and onto the console.

Tune pickles its callbacks into the experiment state and unpickles them on ``Tuner.restore``,
so these hold only plain data and open their store lazily.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any

from ray import tune

from space_defs import WRNConfig, format_count, macs, param_count

from trainer.report import METRICS as EPOCH_FIELDS
from trainer.status import Status

from .db.schema import EpochRow, TrialRow
from .provenance import code_version, library_versions
from .spec import SweepSpec
from .trainable import ERROR, NOTE, TRIAL_STATUS


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class _Trial:
    """What the driver has learned about one trial so far."""

    arch: WRNConfig
    started_at: dt.datetime
    epochs: dict[int, dict[str, Any]] = field(default_factory=dict)  # epoch -> Tune result
    failure: str | None = None  # a failure the trial reported as its last result

    @property
    def last(self) -> dict[str, Any] | None:
        return self.epochs[max(self.epochs)] if self.epochs else None

    @property
    def best(self) -> dict[str, Any] | None:
        return max(self.epochs.values(), key=lambda r: r["val_robust_acc"], default=None)


def final_status(spec: SweepSpec, trainer_status: str | None, epochs_done: int, errored: bool) -> Status:
    if errored:
        return Status.FAILED
    if trainer_status in (Status.DIVERGED, Status.CATASTROPHIC_OVERFIT, Status.FINISHED):
        return Status(trainer_status)
    return Status.STOPPED_EARLY if epochs_done < spec.recipe.epochs else Status.FINISHED


class SweepRecorder(tune.Callback):
    """Writes the trials and epochs tables (the database's only writer) and prints progress."""

    def __init__(self, spec: SweepSpec, storage: str, *, device_name: str = "cpu"):
        self.spec_json = spec.to_json()
        self.storage = storage
        self.device_name = device_name
        self._state()

    def _state(self) -> None:
        self.spec = SweepSpec.from_json(self.spec_json)
        self._store = None
        self._trials: dict[str, _Trial] = {}
        self._best: tuple[float, str] | None = None
        self._ended: dict[str, int] = {}
        self._earlier: dict[str, dict[str, Any]] | None = None
        self._synced = False

    def __getstate__(self) -> dict[str, Any]:
        return {"spec_json": self.spec_json, "storage": self.storage, "device_name": self.device_name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._state()

    @property
    def store(self):
        if self._store is None:
            from .db import TrialStore

            self._store = TrialStore(self.storage, self.spec.name)
        return self._store

    # -- Tune hooks ----------------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        t = self._track(trial)
        self._write(trial, Status.RUNNING)
        self._say(trial, f"started {t.arch.name}, {format_count(param_count(t.arch))} params, "
                         f"{format_count(macs(t.arch))} MACs")

    def on_step_begin(self, iteration, trials, **info):
        """Once per driver run: a driver that died between Tune's snapshot and its own database
        write leaves Tune ahead of the database; write what the database lacks from Tune's
        records of the trials it will not run again."""
        if self._synced:
            return
        self._synced = True
        recorded = self._recorded()
        for trial in trials:
            if trial.status not in ("TERMINATED", "ERROR"):
                continue
            if recorded.get(trial.trial_id, {}).get("status", Status.RUNNING) != Status.RUNNING:
                continue
            t = self._track(trial)
            for result in _tune_results(trial):
                if result.get(TRIAL_STATUS) == Status.FAILED:
                    t.failure = result.get(ERROR) or "failed"
                elif "epoch" in result and int(result["epoch"]) not in t.epochs:
                    self._record_epoch(trial, t, result)
            self._end(trial, errored=trial.status == "ERROR")

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
        if self._best is None or robust > self._best[0]:
            self._best = (robust, trial.trial_id)
            self._say(trial, f"best so far: {robust:.1%} val robust ({t.arch.name}, epoch {epoch})")

    def _record_epoch(self, trial, t: _Trial, result: dict[str, Any]) -> int:
        epoch = int(result["epoch"])
        t.epochs[epoch] = {k: result.get(k) for k in (*EPOCH_FIELDS, TRIAL_STATUS)}
        self.store.write(epochs=[EpochRow(sweep=self.spec.name, trial_id=trial.trial_id,
                                          epoch=epoch, recorded_at=_now(),
                                          **{k: _number(result.get(k)) for k in EPOCH_FIELDS})])
        return epoch

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, errored=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, errored=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._say(trial, f"failed, retrying from its last checkpoint: {_error(trial)}")

    def on_experiment_end(self, trials, **info):
        self.store.flush()
        mark_lost(self.spec.name, self.storage, live={t.trial_id for t in trials}, store=self.store)
        self.store.close()

    def _track(self, trial) -> _Trial:
        """This trial's record; a trial resumed after a driver restart starts from what the
        database already holds for it."""
        if trial.trial_id not in self._trials:
            earlier = self._recorded().get(trial.trial_id, {})
            self._trials[trial.trial_id] = _Trial(WRNConfig.from_dict(trial.config),
                                                  earlier.get("started_at") or _now(),
                                                  earlier.get("epochs", {}))
        return self._trials[trial.trial_id]

    def _recorded(self) -> dict[str, dict[str, Any]]:
        if self._earlier is None:
            from .db import load_epochs, load_trials

            self.store.flush()
            self._earlier = {}
            trials = load_trials(self.storage, self.spec.name)
            for row in trials.itertuples():
                self._earlier[row.trial_id] = {"started_at": row.started_at.to_pydatetime(),
                                               "status": row.status, "epochs": {}}
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
        error = (t.failure or _error(trial)) if failed else None
        self._write(trial, status, error=error)
        self._ended[status] = self._ended.get(status, 0) + 1
        detail = f": {error}" if error else f" after {len(t.epochs)} epochs"
        self._say(trial, f"{status.replace('_', ' ')}{detail}")

    def _write(self, trial, status: str, error: str | None = None) -> None:
        self.store.write(trials=[self.trial_row(trial, status, error)])

    def trial_row(self, trial, status: str, error: str | None) -> TrialRow:
        spec, t = self.spec, self._track(trial)
        recipe = spec.recipe
        last, best = t.last, t.best
        seconds = sum((r.get("train_seconds") or 0) + (r.get("eval_seconds") or 0)
                      for r in t.epochs.values())
        return TrialRow(
            sweep=spec.name, trial_id=trial.trial_id, status=status, space=spec.space,
            **t.arch.to_dict(), params=param_count(t.arch), macs=macs(t.arch), budget=spec.budget,
            dataset=spec.dataset, method=recipe.method, epochs_planned=recipe.epochs,
            eps=recipe.eps,
            seed=recipe.seed, recipe_json=json.dumps(recipe.to_dict(), sort_keys=True),
            val_size=recipe.val_size, epochs_done=len(t.epochs),
            best_val_robust_acc=best and best["val_robust_acc"],
            best_val_robust_epoch=best and _epoch_of(t, best),
            best_val_clean_acc=best and best["val_clean_acc"],
            last_val_robust_acc=last and last["val_robust_acc"],
            last_val_clean_acc=last and last["val_clean_acc"],
            last_epoch=max(t.epochs) if t.epochs else None,
            train_seconds=sum(r.get("train_seconds") or 0 for r in t.epochs.values()),
            eval_seconds=sum(r.get("eval_seconds") or 0 for r in t.epochs.values()),
            gpu_hours=seconds * spec.gpus_per_trial / 3600, device_name=self.device_name,
            code_version=code_version(), library_versions=json.dumps(library_versions()),
            started_at=t.started_at, updated_at=_now(), error=error)

    def _say(self, trial, message: str) -> None:
        print(f"[{trial.trial_id}] {message}", file=sys.stdout, flush=True)


def mark_lost(sweep: str, storage: str, *, live: set[str], store=None) -> int:
    """Record as lost the trials the database shows running that no Tune experiment will
    resume (its snapshot was torn, or never written); returns how many there were."""
    import dataclasses

    from .db import TrialStore, list_sweeps, load_trials

    if sweep not in list_sweeps(storage):
        return 0
    rows = load_trials(storage, sweep)
    lost = rows[(rows["status"] == Status.RUNNING) & ~rows["trial_id"].isin(live)].to_dict("records")
    if not lost:
        return 0
    store = store or TrialStore(storage, sweep)
    store.write(trials=[dataclasses.replace(
        TrialRow.from_record(row), status=Status.LOST, updated_at=_now(),
        error="lost: Tune's experiment state holding it was torn (full disk or a kill "
              "mid-write); a new trial replaces it") for row in lost])
    store.flush()
    for row in lost:
        print(f"[{row['trial_id']}] lost with a torn Tune snapshot: recorded as lost, a new "
              "trial replaces it", flush=True)
    return len(lost)


def _epoch_of(t: _Trial, result: dict[str, Any]) -> int:
    return next(e for e, r in t.epochs.items() if r is result)


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _tune_results(trial) -> list[dict[str, Any]]:
    """Every result Tune logged for the trial (its result.json in storage), then its last."""
    results = []
    try:
        storage = trial.storage
        with storage.storage_filesystem.open_input_stream(f"{storage.trial_fs_path}/result.json") as f:
            results = [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
    except (OSError, ValueError, AttributeError):
        pass
    return results + ([trial.last_result] if trial.last_result else [])


def _error(trial) -> str:
    text = trial.get_error() if hasattr(trial, "get_error") else None
    lines = [line for line in str(text or "unknown error").strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else "unknown error"

