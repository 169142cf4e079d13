"""The sweep's Optuna study, on local disk or object storage: ``open_study_storage(sweep_uri)``.

Local disk: Optuna's own journal file, ``optuna.journal`` in the sweep directory (what every
sweep so far has; ``optuna-dashboard runs/NAME/optuna.journal`` opens it).

Object storage, where nothing can be appended to: the same journal as a chain of objects under
``optuna-journal/``, one per append, each named by the range of log numbers it holds
(``000000000000-000000000001.jsonl``: logs 0 up to, not including, 1; JSON lines exactly as in
the journal file). A PUT is atomic, so a killed driver leaves whole objects only, and the next
driver lists them and sees every earlier trial. Only the driver holding the sweep's lease
(search.lease) appends, after ``lease.check()``; while it holds the lease it reads from memory,
since nobody else writes, and when it starts it merges the chain into one object (readers take,
at each log number, the object reaching furthest, so a merge that died half-way is harmless).
Intermediate values (one per Tune result) are held back and written with the next other log
(see DEFER_LOGS), so a result costs the driver no PUT.
Anyone else reads (``export``, to open it in optuna-dashboard):

    python -m search.study export NAME --storage s3://bucket/runs   # writes NAME.optuna.journal
    optuna-dashboard NAME.optuna.journal
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend

from space_defs.cli import Parser, UsageError

from .db import storage
from .db.errors import StoreError
from .lease import held_lease, key

__all__ = ["open_study_storage", "ObjectJournalBackend", "read_journal", "export", "JOURNAL_FILE",
           "JOURNAL_DIR"]

JOURNAL_FILE = "optuna.journal"  # local disk: Optuna's JournalFileBackend file
JOURNAL_DIR = "optuna-journal"  # object storage: one object per append
_OBJECT = re.compile(r"^(\d{12})-(\d{12})\.jsonl$")
MERGE_AT = 32  # a driver starting on a chain of more objects merges them into one
# Intermediate values (one per Tune result, OptunaSearch.on_trial_result) are held back and
# written with the next other log (every trial's end is one), so a result costs no PUT; at most
# DEFER_LOGS of them, or DEFER_S seconds' worth, are lost with a killed driver (they only draw
# learning curves in optuna-dashboard: TPE reads final values, and ASHA is Tune's own).
DEFER_LOGS = 64
DEFER_S = 60.0
_INTERMEDIATE = 7  # optuna's JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE
_FETCHERS = 8  # objects read at once


def open_study_storage(sweep_uri: str) -> BaseStorage:
    """The Optuna storage of the sweep whose directory is ``sweep_uri`` (a path, or a URI with
    its '?options', e.g. s3://b/runs/demo?endpoint_override=127.0.0.1:9000&scheme=http). On
    object storage only the driver holding the sweep's lease may write to it."""
    if storage.is_local(sweep_uri):
        path = key(sweep_uri)
        os.makedirs(path, exist_ok=True)
        return JournalStorage(JournalFileBackend(os.path.join(path, JOURNAL_FILE)))
    return JournalStorage(ObjectJournalBackend(sweep_uri))


def read_journal(sweep_uri: str) -> list[dict[str, Any]]:
    """Every log of the sweep's study, in order (empty when it has none)."""
    if storage.is_local(sweep_uri):
        path = os.path.join(key(sweep_uri), JOURNAL_FILE)
        if not os.path.exists(path):
            return []
        return list(JournalFileBackend(path).read_logs(0))
    return list(ObjectJournalBackend(sweep_uri).read_logs(0))


@dataclass
class _Chain:
    """What this process knows of one journal (shared by every backend object on it, e.g. the
    copies Tune unpickles with its searcher)."""

    logs: list[dict[str, Any]] = field(default_factory=list)
    objects: list[tuple[int, int, str]] = field(default_factory=list)  # (first, end, path)
    synced_under: str | None = None  # the lease token it was last listed under
    pending: list[str] = field(default_factory=list)  # the last logs, not written yet
    pending_since: float = 0.0
    flush_on_release: str | None = None  # the lease that writes ``pending`` when released
    lock: threading.Lock = field(default_factory=threading.Lock)


_CHAINS: dict[str, _Chain] = {}
_CHAINS_LOCK = threading.Lock()


class ObjectJournalBackend(BaseJournalBackend):
    """Optuna's journal on a pyarrow filesystem without appends (see the module's docstring).
    Pickles as its URI alone (no credentials, no cache)."""

    def __init__(self, sweep_uri: str):
        self.uri = sweep_uri
        self._key = key(sweep_uri)
        self._fs: pafs.FileSystem | None = None
        self._dir = ""

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["uri"])

    # -- BaseJournalBackend -----------------------------------------------------------------
    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        chain = self._chain()
        with chain.lock:
            self._sync(chain)
            return copy.deepcopy(chain.logs[log_number_from:])  # the cache stays as read

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        lease = held_lease(self.uri)
        if lease is None:
            raise UsageError(f"the study of {self.uri} is written only by the sweep's driver, "
                             "which holds its lease (search.lease.sweep_lock)")
        chain = self._chain()
        with chain.lock:
            lease.check()
            self._sync(chain)
            lines = [json.dumps(log, separators=(",", ":")) for log in logs]
            chain.logs.extend(json.loads(line) for line in lines)  # as a reader will see them
            if not chain.pending:
                chain.pending_since = time.monotonic()
            chain.pending.extend(lines)
            if (all(log.get("op_code") == _INTERMEDIATE for log in logs)
                    and len(chain.pending) < DEFER_LOGS
                    and time.monotonic() - chain.pending_since < DEFER_S):
                if chain.flush_on_release != lease.token:  # a driver that ends writes them
                    chain.flush_on_release = lease.token
                    lease.before_release(lambda: self._flush(chain))
                return  # written with the next append that is not one (see DEFER_LOGS)
            self._write_pending(chain)

    def _flush(self, chain: _Chain) -> None:
        with chain.lock:
            self._write_pending(chain)

    def _write_pending(self, chain: _Chain) -> None:
        if chain.pending:
            first = len(chain.logs) - len(chain.pending)
            path = self._put(first, len(chain.logs), chain.pending)
            chain.objects.append((first, len(chain.logs), path))
            chain.pending = []

    # -- the chain --------------------------------------------------------------------------
    def _chain(self) -> _Chain:
        with _CHAINS_LOCK:
            return _CHAINS.setdefault(self._key, _Chain())

    def _filesystem(self) -> tuple[pafs.FileSystem, str]:
        if self._fs is None:
            self._fs, path = storage.resolve(self.uri)
            self._dir = f"{path}/{JOURNAL_DIR}"
        return self._fs, self._dir

    def _sync(self, chain: _Chain) -> None:
        """Bring ``chain`` up to date with the store: always for a reader; for the lease holder
        once (nobody else writes while it holds the lease), merging a long chain."""
        lease = held_lease(self.uri)
        holder = lease is not None and lease.held
        if holder and chain.synced_under == lease.token:
            return
        if chain.pending:  # held back under a lease that was lost: never written, so forgotten
            del chain.logs[len(chain.logs) - len(chain.pending):]
            chain.pending = []
        for attempt in range(3):
            try:
                self._extend(chain)
                break
            except FileNotFoundError:  # merged and deleted by the driver while we listed
                if attempt == 2:
                    raise
        if holder:
            chain.synced_under = lease.token
            if len(chain.objects) > MERGE_AT and not chain.pending:
                self._merge(chain)

    def _extend(self, chain: _Chain) -> None:
        fs, directory = self._filesystem()
        try:
            infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
        except OSError as e:
            raise StoreError(f"cannot read the study journal in {self.uri} ({e})") from None
        furthest: dict[int, tuple[int, str]] = {}
        for info in infos:
            match = _OBJECT.match(info.base_name)
            if info.type != pafs.FileType.File or not match:
                continue  # not a journal object: never read
            first, end = int(match[1]), int(match[2])
            if end > first and end > furthest.get(first, (-1, ""))[0]:
                furthest[first] = (end, info.path)
        todo, at = [], len(chain.logs)
        while at in furthest:
            end, path = furthest[at]
            todo.append((at, end, path))
            at = end
        if any(first > at for first in furthest):
            raise StoreError(f"the study journal in {directory} lacks the logs from {at} on "
                             f"(objects after them exist); it was changed by something other than "
                             "the sweep's driver")
        with ThreadPoolExecutor(min(_FETCHERS, max(1, len(todo)))) as pool:
            texts = list(pool.map(lambda item: self._get(fs, *item), todo))
        for (first, end, path), logs in zip(todo, texts):
            chain.logs.extend(logs)
            chain.objects.append((first, end, path))

    def _get(self, fs: pafs.FileSystem, first: int, end: int, path: str) -> list[dict[str, Any]]:
        try:
            with fs.open_input_stream(path) as f:
                raw = f.read()
        except FileNotFoundError:
            raise
        except OSError as e:
            if "not exist" in str(e) or "NoSuchKey" in str(e):
                raise FileNotFoundError(path) from None
            raise StoreError(f"cannot read the study journal object {path} ({e})") from None
        lines = raw.decode("utf-8", errors="replace").splitlines()
        try:
            logs = [json.loads(line) for line in lines]
        except json.JSONDecodeError:
            logs = []
        if len(logs) != end - first or not all(isinstance(log, dict) and "op_code" in log for log in logs):
            raise StoreError(f"{path} is not a study journal object this program wrote "
                             f"(expected {end - first} logs); move it away to open the study")
        return logs

    def _put(self, first: int, end: int, lines: list[str]) -> str:
        fs, directory = self._filesystem()
        path = f"{directory}/{first:012d}-{end:012d}.jsonl"
        try:
            storage.write_bytes(fs, path, ("\n".join(lines) + "\n").encode())
        except OSError as e:
            raise StoreError(f"cannot write the study journal in {self.uri} ({e}); free space "
                             "or fix access and rerun the same command") from None
        return path

    def _merge(self, chain: _Chain) -> None:
        """One object for the whole chain, then the objects it covers deleted (by the lease
        holder only; a merge that dies half-way leaves objects readers skip)."""
        held_lease(self.uri).check()
        lines = [json.dumps(log, separators=(",", ":")) for log in chain.logs]
        merged = self._put(0, len(lines), lines)
        covered = [path for _, _, path in chain.objects if path != merged]
        chain.objects = [(0, len(lines), merged)]
        fs, directory = self._filesystem()
        try:  # also the leftovers of earlier merges (covered, never on the chain)
            infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
            covered += [i.path for i in infos
                        if (m := _OBJECT.match(i.base_name)) and int(m[2]) <= len(lines)
                        and i.path != merged and i.path not in covered]
        except OSError:
            pass

        def delete(path: str) -> None:
            try:
                fs.delete_file(path)
            except OSError:
                pass  # left for the next merge; readers skip it

        with ThreadPoolExecutor(_FETCHERS) as pool:
            list(pool.map(delete, covered))


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
    p = Parser(prog="python -m search.study", description="The sweep's Optuna study.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="copy the study to a local journal file for optuna-dashboard")
    e.add_argument("name", help="the sweep's name (--name of search.run)")
    e.add_argument("--storage", default=storage.DEFAULT_STORAGE,
                   help=f"local path or s3:// URI holding the sweeps ({storage.DEFAULT_STORAGE})")
    e.add_argument("--out", help="the journal file to write (default: NAME.optuna.journal)")
    args = p.parse_args(argv)
    try:
        from .db.store import check_sweep_name

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
