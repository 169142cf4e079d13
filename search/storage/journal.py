"""The sweep's Optuna journal on object storage, where nothing can be appended to: the study log
``optuna-log/`` (search.storage.commits): each append is one entry holding its journal logs,
created by a put-if-absent, so the store itself refuses an append of a driver that lost the
sweep (the driver that took over committed a takeover entry there first). A killed driver
leaves whole entries only, and the next driver reads every earlier trial: from segments (one
object per few hundred entries, written as the log grows) and the entries after them, never
rewriting the study whole. The lease holder reads the log once (when it takes it over; nobody
else can write it meanwhile) and keeps it in memory; a reader reads what was added since it
last looked. Logs that only fill in the trial being asked (its creation, parameters,
attributes: a dozen logs per trial) or report intermediate values (one per Tune result) are
held back and written with the next other log, or at the end of the searcher's ``suggest``
(StudySearch), so a trial costs the driver two or three PUTs (see DEFER_LOGS).

On local disk the journal is Optuna's own file (LocalJournalBackend), whose appends ask the same
guard first.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from optuna.storages.journal import BaseJournalBackend, JournalFileBackend

from space_defs.cli import UsageError

from .. import internals
from . import uri as storage
from .base import check_writer, held_lease
from .commits import STUDY_LOG, CommitLog, open_log
from .errors import StoreError

# Logs held back (written with the next log of another kind, when the searcher's suggest ends,
# or when the driver releases the sweep): the trial being asked is filled in by many small logs,
# and intermediate values come one per Tune result. At most DEFER_LOGS of them, or DEFER_S
# seconds' worth, are lost with a killed driver: the parts of a trial being asked (the resumed
# searcher fails such a trial, which no Tune trial runs) and intermediate values (they only draw
# learning curves in optuna-dashboard: TPE reads final values, and ASHA is Tune's own).
DEFER_LOGS = 64
DEFER_S = 60.0
# the op codes (Optuna's JournalOperation) of the logs held back
_DEFERRED = frozenset(internals.JOURNAL_OPS[op] for op in (
    "CREATE_TRIAL", "SET_TRIAL_PARAM", "SET_TRIAL_INTERMEDIATE_VALUE", "SET_TRIAL_USER_ATTR",
    "SET_TRIAL_SYSTEM_ATTR"))



@dataclass
class _Journal:
    """What this process knows of one study log as a journal (shared by every backend object
    on it, e.g. the copies Tune unpickles with its searcher)."""

    log: CommitLog
    logs: list[dict[str, Any]] = field(default_factory=list)  # every log, the pending ones last
    folded: int = 0  # entries of ``log`` whose logs are in ``logs``
    synced_under: str | None = None  # the lease token it was last read under
    pending: int = 0  # the last ``pending`` logs are not written yet
    pending_since: float = 0.0
    flush_on_release: str | None = None  # the lease that writes the pending logs when released
    resets: int = 0  # times the log was found made anew (the sweep removed and run again)
    lock: threading.Lock = field(default_factory=threading.Lock)


_JOURNALS: dict[str, _Journal] = {}
_JOURNALS_LOCK = threading.Lock()


class ObjectJournalBackend(BaseJournalBackend):
    """Optuna's journal on the sweep's study log (see the module's docstring). Pickles as its
    URI alone (no credentials, no cache)."""

    def __init__(self, sweep_uri: str):
        self.uri = sweep_uri
        self._resets = 0  # of the journal, when this backend last read it

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["uri"])

    # -- BaseJournalBackend -----------------------------------------------------------------
    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        journal = self._journal()
        with journal.lock:
            self._sync(journal)
            if journal.resets != self._resets:
                self._resets = journal.resets
                if log_number_from > 0:  # Optuna's replay of the old study cannot be undone here
                    raise StoreError(f"the study in {self.uri} was removed and made anew since this "
                                     "process read it; open it again to read the new one")
            return json.loads(json.dumps(journal.logs[log_number_from:]))  # the cache stays as read

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        lease = held_lease(self.uri)
        if lease is None:
            raise UsageError(f"the study of {self.uri} is written only by the sweep's driver, "
                             "which holds its lease (search.storage.lease.sweep_lock)")
        lease.check()  # before any lock: a process forked from the holder is refused at once
        journal = self._journal()
        with journal.lock:
            check_writer(self.uri)
            self._sync(journal)
            journal.logs.extend(json.loads(json.dumps(logs)))  # as a reader will see them
            if not journal.pending:
                journal.pending_since = time.monotonic()
            journal.pending += len(logs)
            if (all(log.get("op_code") in _DEFERRED for log in logs)
                    and journal.pending < DEFER_LOGS
                    and time.monotonic() - journal.pending_since < DEFER_S):
                if journal.flush_on_release != lease.token:  # a driver that ends writes them
                    journal.flush_on_release = lease.token
                    lease.before_release(self.flush)
                return  # written with the next append that is not one (see DEFER_LOGS)
            self._write_pending(journal)

    def flush(self) -> None:
        """Write the logs held back (StudySearch calls it when a suggest ends)."""
        journal = self._journal()
        with journal.lock:
            self._write_pending(journal)

    def _write_pending(self, journal: _Journal) -> None:
        if journal.pending:
            logs = journal.logs[len(journal.logs) - journal.pending:]
            try:
                journal.log.commit({"logs": logs})
            except StoreError:
                self._forget_pending(journal)
                raise
            journal.pending = 0
            journal.folded = journal.log.end

    # -- the log ----------------------------------------------------------------------------
    def _journal(self) -> _Journal:
        log = open_log(self.uri, STUDY_LOG)
        with _JOURNALS_LOCK:
            journal = _JOURNALS.get(storage.location(self.uri))
            if journal is None or journal.log is not log:
                journal = _JOURNALS[storage.location(self.uri)] = _Journal(log)
            return journal

    @staticmethod
    def _forget_pending(journal: _Journal) -> None:
        """Logs held back under a lease that was lost: never written, so forgotten."""
        if journal.pending:
            del journal.logs[len(journal.logs) - journal.pending:]
            journal.pending = 0

    def _sync(self, journal: _Journal) -> None:
        """Bring ``journal`` up to date with the store: always for a reader; for the lease
        holder once (nobody else can commit while it holds the lease)."""
        lease = held_lease(self.uri)
        holder = lease is not None and lease.held
        if holder and journal.synced_under == lease.token:
            return
        self._forget_pending(journal)
        journal.log.sync()
        if journal.log.end < journal.folded:  # the log was read anew from its start
            journal.logs, journal.folded = [], 0
            journal.resets += 1
        for entry in journal.log.entries[journal.folded:]:
            journal.logs.extend(entry.get("logs", ()))
        journal.folded = journal.log.end
        journal.synced_under = lease.token if holder else None


class LocalJournalBackend(JournalFileBackend):
    """Optuna's journal file, whose appends first ask ``check_writer``: a process forked from the
    driver holding the sweep (which inherits its lease, not the hold) is refused with LeaseLost,
    as on object storage; Optuna's file lock and format are its own."""

    def __init__(self, file_path: str, sweep_uri: str) -> None:
        super().__init__(file_path)
        self.uri = sweep_uri

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        check_writer(self.uri)
        super().append_logs(logs)
