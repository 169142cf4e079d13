"""Object storage (s3://): the sweep's files are entries of its commit log (search.storage.commits),
so only the driver holding the sweep can change them; the study is a journal on a commit log
of its own (journal.py); the lease is an object kept by conditional writes (s3_lease.py). Each
driver runs a segment's Tune experiment in a directory of its own, ``tune-N/g{generation}-{token}``,
and its trials check before each checkpoint that it still holds the sweep (``Fence``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .base import Lease, Storage
from .commits import SWEEP_LOG, CommitLog, open_log


class ObjectStorage(Storage):
    """A sweep directory on an object store."""

    reaches_every_node = True
    trusts_tune_log = False  # a driver that lost the sweep may have logged checkpoints since

    def read(self, name: str) -> str | None:
        log = open_log(self.uri, SWEEP_LOG)
        if log.writer is None:  # the holder knows every entry: only it commits
            log.sync()
        return next((e["files"][name] for e in reversed(log.entries) if name in e.get("files", {})),
                    None)

    def write(self, name: str, text: str) -> None:
        open_log(self.uri, SWEEP_LOG).commit({"files": {name: text}})

    def lease(self, name, ttl, on_lost=None) -> Lease:
        from .s3_lease import S3Lease

        return S3Lease(self.uri, name, ttl, on_lost)

    def journal(self):
        from .journal import ObjectJournalBackend

        return ObjectJournalBackend(self.uri)

    def journal_logs(self) -> list[dict]:
        return list(self.journal().read_logs(0))

    def commit_log(self) -> CommitLog:
        return open_log(self.uri, SWEEP_LOG)

    def tune_dir(self, segment: str, lease: Lease | None) -> str:
        return segment if lease is None else f"{segment}/{lease.namespace}"

    def trial_fence(self, lease: Lease | None) -> Fence | None:
        return None if lease is None else Fence(self.uri, lease.generation)

    def held_by(self, generation: int) -> bool:
        """Whether the holder of lease generation ``generation`` still holds the sweep (one GET
        of the lease object); a store that cannot be read says nothing (True)."""
        from .s3_lease import held_by

        return held_by(self.uri, generation)

    def local_file(self, path: str, tmp: str) -> str:
        import pyarrow.fs as pafs

        local = os.path.join(tmp, os.path.basename(path))
        pafs.copy_files(path, local, source_filesystem=self.fs)
        return local


@dataclass(frozen=True)
class Fence:
    """The sweep and the lease generation of the driver that runs a trial."""

    sweep_uri: str
    generation: int

    def current(self) -> bool:
        """Whether that driver still holds the sweep."""
        return ObjectStorage(self.sweep_uri).held_by(self.generation)
