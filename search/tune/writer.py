"""The trial database as the sweep's driver writes it: ``open_store`` (every write checks the
driver's lease), the recorder's writer thread (``Writer``: see search.tune.recorder) and the
repair of trials no Tune experiment will resume (``mark_lost``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

from trainer.status import Status

from ..db.schema import EpochRow, TrialRow
from ..storage.lease import writer_guard
from ..storage.uri import join


def mark_lost(sweep: str, storage: str, *, live: set[str], store=None) -> int:
    """Record as lost the trials the database shows running that no Tune experiment will
    resume (its snapshot was torn, or never written); returns how many there were."""
    from ..db import list_sweeps, load_trials

    if sweep not in list_sweeps(storage):
        return 0
    rows = load_trials(storage, sweep)
    lost = rows[(rows["status"] == Status.RUNNING) & ~rows["trial_id"].isin(live)].to_dict("records")
    if not lost:
        return 0
    store = store or open_store(storage, sweep)
    store.write(trials=[dataclasses.replace(
        TrialRow.from_record(row), status=Status.LOST, updated_at=dt.datetime.now(dt.timezone.utc),
        error="lost: Tune's experiment state holding it was torn (full disk or a kill "
              "mid-write); a new trial replaces it") for row in lost])
    store.flush()
    for row in lost:
        print(f"[{row['trial_id']}] lost with a torn Tune snapshot: recorded as lost, a new "
              "trial replaces it", flush=True)
    return len(lost)


def open_store(storage: str, sweep: str):
    """The sweep's TrialStore as its driver writes it: every write checks the driver's lease,
    and on object storage its parts become visible through the sweep's commit log."""
    from ..db import TrialStore
    from ..storage import open_storage

    uri = join(storage, sweep)
    return TrialStore(storage, sweep, guard=writer_guard(uri), log=open_storage(uri).commit_log())


class Writer:
    """The trial database's writes, on a thread of their own (see the module's docstring):
    ``put`` queues rows, the thread writes everything queued as one flush (one part per table),
    ``drain`` waits until all rows put so far are written, ``close`` also ends the thread. The
    first error stops the writer and is raised by every later call, in the caller's thread."""

    def __init__(self, open_store, sweep: str):
        self._open_store = open_store
        self._trials: list[TrialRow] = []
        self._epochs: list[EpochRow] = []
        self._writing = False
        self._closed = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"trial database {sweep}", daemon=True)
        self._thread.start()

    def put(self, *, trials=(), epochs=()) -> None:
        self.raise_error()
        with self._cond:
            self._trials.extend(trials)
            self._epochs.extend(epochs)
            self._cond.notify_all()

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def drain(self) -> None:
        with self._cond:
            while (self._trials or self._epochs or self._writing) and self._error is None:
                self._cond.wait()
        self.raise_error()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.drain()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._trials or self._epochs or self._closed):
                    self._cond.wait()
                if not (self._trials or self._epochs):
                    return  # closed, and everything written
                trials, epochs = self._trials, self._epochs
                self._trials, self._epochs = [], []
                self._writing = True
            try:
                store = self._open_store()
                store.write(trials=trials, epochs=epochs)
                store.flush()
            except BaseException as e:  # noqa: BLE001  (raised again in Tune's thread)
                with self._cond:
                    self._error = e
                    self._writing = False
                    self._cond.notify_all()
                return
            with self._cond:
                self._writing = False
                self._cond.notify_all()
