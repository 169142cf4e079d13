"""The sweep's Optuna study, on local disk or object storage: ``open_study_storage(sweep_uri)``.

Local disk: Optuna's own journal file, ``optuna.journal`` in the sweep directory (what every
sweep so far has; ``optuna-dashboard runs/NAME/optuna.journal`` opens it).

Object storage, where nothing can be appended to: the same journal as the sweep's study log,
``optuna-log/`` (search.storage.commits): each append is one entry holding its journal logs, created
by a put-if-absent, so the store itself refuses an append of a driver that lost the sweep (the
driver that took over committed a takeover entry there first). A killed driver leaves whole
entries only, and the next driver reads every earlier trial: from segments (one object per few
hundred entries, written as the log grows) and the entries after them, never rewriting the
study whole. The lease holder reads the log once (when it takes it over; nobody else can write
it meanwhile) and keeps it in memory; a reader reads what was added since it last looked.
Logs that only fill in the trial being asked (its creation, parameters, attributes: a dozen
logs per trial) or report intermediate values (one per Tune result) are held back and written
with the next other log, or at the end of the searcher's ``suggest`` (StudySearch), so a trial
costs the driver two or three PUTs (see DEFER_LOGS).
Anyone else reads (``export``, to open it in optuna-dashboard):

    python -m search.sweep.study export NAME --storage s3://bucket/runs   # writes NAME.optuna.journal
    optuna-dashboard NAME.optuna.journal
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend

from space_defs.cli import Parser, UsageError

from ..storage import uri as storage
from ..storage.commits import STUDY_LOG, CommitLog, open_log
from ..db.errors import StoreError
from ..storage.lease import check_writer, held_lease

__all__ = ["open_study_storage", "ObjectJournalBackend", "read_journal", "export", "flush",
           "JOURNAL_FILE", "STUDY_LOG"]

JOURNAL_FILE = "optuna.journal"  # local disk: Optuna's JournalFileBackend file
# Logs held back (written with the next log of another kind, when the searcher's suggest ends,
# or when the driver releases the sweep): the trial being asked is filled in by many small logs,
# and intermediate values come one per Tune result. At most DEFER_LOGS of them, or DEFER_S
# seconds' worth, are lost with a killed driver: the parts of a trial being asked (the resumed
# searcher fails such a trial, which no Tune trial runs) and intermediate values (they only draw
# learning curves in optuna-dashboard: TPE reads final values, and ASHA is Tune's own).
DEFER_LOGS = 64
DEFER_S = 60.0
# optuna's JournalOperation: CREATE_TRIAL, SET_TRIAL_PARAM, SET_TRIAL_INTERMEDIATE_VALUE,
# SET_TRIAL_USER_ATTR, SET_TRIAL_SYSTEM_ATTR
_DEFERRED = {4, 5, 7, 8, 9}


def open_study_storage(sweep_uri: str) -> BaseStorage:
    """The Optuna storage of the sweep whose directory is ``sweep_uri`` (a path, or a URI with
    its '?options', e.g. s3://b/runs/demo?endpoint_override=127.0.0.1:9000&scheme=http). On
    object storage only the driver holding the sweep's lease may write to it."""
    if storage.is_local(sweep_uri):
        path = storage.location(sweep_uri)
        os.makedirs(path, exist_ok=True)
        return JournalStorage(JournalFileBackend(os.path.join(path, JOURNAL_FILE)))
    return JournalStorage(ObjectJournalBackend(sweep_uri))


def read_journal(sweep_uri: str) -> list[dict[str, Any]]:
    """Every log of the sweep's study, in order (empty when it has none)."""
    if storage.is_local(sweep_uri):
        path = os.path.join(storage.location(sweep_uri), JOURNAL_FILE)
        if not os.path.exists(path):
            return []
        return list(JournalFileBackend(path).read_logs(0))
    return list(ObjectJournalBackend(sweep_uri).read_logs(0))


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


def flush(storage: BaseStorage) -> None:
    """Write what the study's backend holds back, if it holds anything back."""
    backend = getattr(storage, "_backend", None)
    if isinstance(backend, ObjectJournalBackend):
        backend.flush()


# -- optuna-dashboard -----------------------------------------------------------------------
def export(sweep_uri: str, out: str) -> int:
    """Write the sweep's study as one Optuna journal file (which optuna-dashboard opens);
    the number of logs written. The file is a copy: the sweep never reads it back."""
    from trainer.atomic import write_atomic

    logs = read_journal(sweep_uri)
    if not logs:
        raise UsageError(f"there is no study in {sweep_uri}: check --storage and the sweep name "
                         "(python -m search.query sweeps lists them)")
    write_atomic(out, "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode())
    return len(logs)


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m search.sweep.study", description="The sweep's Optuna study.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="copy the study to a local journal file for optuna-dashboard")
    e.add_argument("name", help="the sweep's name (--name of search.run)")
    e.add_argument("--storage", default=storage.DEFAULT_STORAGE,
                   help=f"local path or s3:// URI holding the sweeps ({storage.DEFAULT_STORAGE})")
    e.add_argument("--out", help="the journal file to write (default: NAME.optuna.journal)")
    args = p.parse_args(argv)
    try:
        from ..db.store import check_sweep_name

        check_sweep_name(args.name)
        out = args.out or f"{args.name}.optuna.journal"
        n = export(storage.join(args.storage, args.name), out)
    except (UsageError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote the study of sweep {args.name!r} ({n} journal entries) to {out}\n"
          f"open it with: optuna-dashboard {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
