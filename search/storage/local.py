"""Local disk (a path or file://, a shared mount included): the sweep's files are plain files,
written whole by a rename; the study is Optuna's JournalFileBackend (journal.LocalJournalBackend:
its appends ask the lease first); the lease is ``driver.lock`` in the sweep directory, a FileLock
(the OS releases it when the process dies, however it dies). Beside it ``driver.json`` names the
holder for the message a second driver gets.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from datetime import datetime, timezone

from space_defs.cli import UsageError

from . import uri as storage
from .base import Lease, Storage, busy

LOCK_FILE = "driver.lock"  # the FileLock
OWNER_FILE = "driver.json"  # who holds it (for the message only)
JOURNAL_FILE = "optuna.journal"  # Optuna's JournalFileBackend file


CANNOT_LOCK = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP})  # flock refused or missing


class LocalStorage(Storage):
    """A sweep directory on local disk or a shared mount."""

    def read(self, name: str) -> str | None:
        return storage.read_text(self.fs, f"{self.path}/{name}")

    def write(self, name: str, text: str) -> None:
        self.fs.create_dir(self.path, recursive=True)
        storage.write_bytes(self.fs, f"{self.path}/{name}", text.encode())

    def lease(self, name, ttl, on_lost=None) -> LocalLease:
        return LocalLease(self.uri, name, ttl)

    def journal(self):
        from .journal import LocalJournalBackend

        os.makedirs(self.path, exist_ok=True)
        return LocalJournalBackend(os.path.join(self.path, JOURNAL_FILE), self.uri)

    def journal_logs(self) -> list[dict]:
        from optuna.storages.journal import JournalFileBackend

        path = os.path.join(self.path, JOURNAL_FILE)
        return list(JournalFileBackend(path).read_logs(0)) if os.path.exists(path) else []


class LocalLease(Lease):
    """The FileLock: held until released or the process ends; it cannot be lost."""

    def __init__(self, sweep_uri: str, name: str, ttl: float):
        super().__init__(sweep_uri, name, ttl)
        self._file = None

    def acquire(self) -> None:
        from filelock import FileLock, Timeout

        from trainer.atomic import write_atomic

        path = storage.location(self.uri)
        os.makedirs(path, exist_ok=True)
        # No fallback to filelock's SoftFileLock where flock is missing: a lock file that
        # outlives a killed driver would refuse every rerun.
        lock = FileLock(os.path.join(path, LOCK_FILE), fallback_to_soft=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise busy(self.name, _local_holder(path)) from None
        except OSError as e:
            if e.errno not in CANNOT_LOCK:
                raise
            _remove_unused(path)
            raise UsageError(
                f"the file system of {path} cannot lock files ({errno.errorcode[e.errno]} from "
                "flock), so one driver per sweep cannot be ensured there: put --storage on a "
                "file system with flock (NFS with its lock service; Lustre mounted with "
                "'flock', not 'localflock') or on object storage (s3://)") from None
        self._file = lock
        since = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            write_atomic(os.path.join(path, OWNER_FILE),
                         json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                     "since": since}).encode())
        except OSError:
            pass  # only the message of a second driver needs it (and a full disk is found later)

    def release(self) -> None:
        try:
            self._run_before_release()
        finally:
            super().release()
        if self._file is not None:
            if os.getpid() == self.pid:  # a forked child shares its parent's flock: left alone
                self._file.release()
            self._file = None


def _remove_unused(path: str) -> None:
    """The lock file the refused flock left, and the sweep directory if nothing else is in it."""
    with contextlib.suppress(OSError):
        os.remove(os.path.join(path, LOCK_FILE))
        os.rmdir(path)


def _local_holder(path: str) -> str:
    try:
        with open(os.path.join(path, OWNER_FILE)) as f:
            who = json.load(f)
        return f"locked by {who['host']} pid {who['pid']} since {who['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{os.path.join(path, LOCK_FILE)} is locked"
