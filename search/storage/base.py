"""What every storage backend is: ``Storage``, where one sweep's files live (chosen once from
the sweep's URI by ``search.storage.open_storage``), and ``Lease``, a driver's hold on the sweep,
with the registry of the leases this process holds (``held_lease``, ``check_writer``).
Backends: local.py (local disk and shared mounts), s3.py (object storage)."""

from __future__ import annotations

import functools
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

from space_defs.cli import UsageError

from . import uri as storage
from .commits import CommitLog, Fenced

DEFAULT_TTL = 30.0  # seconds a lease lives without renewal


class SweepBusy(UsageError):
    """Another driver holds the sweep's lock."""


class LeaseLost(Fenced):
    """This driver no longer holds its sweep's lease: it must not write to the sweep again."""


def busy(name: str, holder: str) -> SweepBusy:
    return SweepBusy(f"sweep {name!r} is being run by another driver right now ({holder}); wait for "
                     "it to finish, or choose another --name")


_HELD: dict[str, Lease] = {}


_HELD_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    """A child forked while another thread held the registry's lock can still look its leases
    up (inherited ones, which refuse: Lease.check)."""
    if _HELD_LOCK.locked():
        _HELD_LOCK.release()


os.register_at_fork(after_in_child=_after_fork_in_child)


def held_lease(sweep_uri: str) -> Lease | None:
    """The lease this process holds on the sweep (possibly lost since: its check() raises), or
    None. Writers look it up here, so that copies of them unpickled by Tune find it too."""
    with _HELD_LOCK:
        return _HELD.get(storage.location(sweep_uri))


def check_writer(sweep_uri: str) -> None:
    """What every writer of the sweep calls before it writes, the one guard: LeaseLost once this
    process has lost the sweep's lease; nothing where it holds none (a store opened outside a
    driver, e.g. by a test or a benchmark). A process forked from the holder finds the lease it
    inherited here, and is refused (Lease.check), not taken for one that holds none."""
    if (lease := held_lease(sweep_uri)) is not None:
        lease.check()


def writer_guard(sweep_uri: str) -> Callable[[], None]:
    """``check_writer`` for one sweep, as TrialStore takes it (its ``guard``)."""
    return functools.partial(check_writer, sweep_uri)


class Lease:
    """This process's hold on one sweep. ``check()`` before every write to the sweep."""

    def __init__(self, sweep_uri: str, name: str, ttl: float):
        self.uri, self.name, self.ttl = sweep_uri, name, ttl
        self.token = uuid.uuid4().hex  # this holder, unique across hosts and runs
        self.owner = f"{socket.gethostname()} pid {os.getpid()}"
        self.pid = os.getpid()  # the process holding it: one forked from it holds nothing
        self.generation = 0  # on object storage: one more than the holder it replaced
        self._lost: str | None = None
        self._released = False
        self._before_release: list[Callable[[], None]] = []

    @property
    def held(self) -> bool:
        """Held and not lost (without raising)."""
        try:
            self.check()
        except LeaseLost:
            return False
        return True

    def check(self) -> None:
        """LeaseLost if this driver may no longer write to the sweep."""
        self.check_process()
        if self._released:
            raise LeaseLost(f"the lease on sweep {self.name!r} was released; nothing may write to it "
                            "from this driver any more")
        if self._lost:
            raise LeaseLost(self._lost)

    def check_process(self) -> None:
        """LeaseLost in a process forked from the holder (os.fork, multiprocessing's 'fork'): it
        inherits the lease, its token and the commit logs' writer, but does not hold the lease,
        so nothing it writes may land under it (the holder would never see it)."""
        if os.getpid() != self.pid:
            raise LeaseLost(f"this process (pid {os.getpid()}) was forked from the driver holding "
                            f"the lease on sweep {self.name!r} (pid {self.pid}): a forked process "
                            "does not hold its parent's lease, so it writes nothing to the sweep")

    @property
    def namespace(self) -> str:
        """A name only this holder uses (its Tune experiment directories on object storage)."""
        return f"g{self.generation:06d}-{self.token[:8]}"

    def before_release(self, write: Callable[[], None]) -> None:
        """Have ``write`` run when the lease is released, while it is still held (writers that
        hold data back use it); not run when the lease was lost."""
        self._before_release.append(write)

    def _run_before_release(self) -> None:
        writes, self._before_release = self._before_release, []
        for write in writes:
            if self.held:
                write()

    def release(self) -> None:
        self._released = True

    def _lose(self, reason: str) -> None:
        if self._lost is None:
            self._lost = (f"this driver lost the lease on sweep {self.name!r} ({reason}); another "
                          "driver may be running it now, so this one stops without writing more; "
                          "rerun the same command to resume once no other driver runs it")


class Storage:
    """Where one sweep's files live: what the sweep's files, its lease, its study and its trial
    database ask instead of looking at the URI. ``uri`` is the sweep's directory (a path, or a
    URI with its '?options')."""

    reaches_every_node = False  # trials on any node of a cluster can write it
    trusts_tune_log = True  # only the lease holder can write here, Tune's logs included

    def __init__(self, sweep_uri: str):
        self.uri = sweep_uri

    @functools.cached_property
    def _resolved(self):
        return storage.resolve(self.uri)  # asked when first used: choosing a backend asks no store

    @property
    def fs(self):
        return self._resolved[0]

    @property
    def path(self) -> str:
        return self._resolved[1]

    def read(self, name: str) -> str | None:
        """The sweep file ``name`` (sweep.json, segments.json), or None."""
        raise NotImplementedError

    def write(self, name: str, text: str) -> None:
        """Replace the sweep file whole (the caller checked the lease)."""
        raise NotImplementedError

    def lease(self, name: str, ttl: float, on_lost: Callable[[str], None] | None) -> Lease:
        """A lease on the sweep, not yet acquired."""
        raise NotImplementedError

    def journal(self) -> Any:
        """The Optuna journal backend of the sweep's study."""
        raise NotImplementedError

    def journal_logs(self) -> list[dict[str, Any]]:
        """Every log of the sweep's study, in order (empty when it has none)."""
        raise NotImplementedError

    def commit_log(self) -> CommitLog | None:
        """The log through which the trial database's parts become visible, if any."""
        return None

    def tune_dir(self, segment: str, lease: Lease | None) -> str:
        """Where the holder of ``lease`` runs the segment's Tune experiment."""
        return segment

    def trial_fence(self, lease: Lease | None) -> Any:
        """What a trial checks before it writes a checkpoint (``.current()``), or None."""
        return None

    def local_file(self, path: str, tmp: str) -> str:
        """A local path to the file ``path`` of this storage, copied into ``tmp`` if need be."""
        return path
