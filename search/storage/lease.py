"""One driver per sweep, on local disk and on object storage: ``with sweep_lock(uri, name) as lease``.

Local disk: a FileLock (lease_local.py). Object storage: a lease object taken and renewed by
the store's conditional writes, with a generation that fences the commits of a driver that lost
it (lease_s3.py). Every writer of the sweep calls ``check_writer(uri)`` first, the one guard: it
stops a driver that knows it lost the sweep before it writes; on object storage what makes the
write of one that does not know invisible is the store (search.storage.commits).
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from space_defs.cli import UsageError

from . import uri as storage
from .commits import Fenced


__all__ = ["sweep_lock", "Lease", "SweepBusy", "LeaseLost", "held_lease", "check_writer", "writer_guard",
           "DEFAULT_TTL", "LOCK_FILE", "LEASE_FILE"]


DEFAULT_TTL = 30.0  # seconds a lease lives without renewal


LOCK_FILE = "driver.lock"  # local disk: the FileLock


OWNER_FILE = "driver.json"  # local disk: who holds it (for the message only)


LEASE_FILE = "driver.lease"  # object storage: the lease object


class SweepBusy(UsageError):
    """Another driver holds the sweep's lock."""


class LeaseLost(Fenced):
    """This driver no longer holds its sweep's lease: it must not write to the sweep again."""


def _busy(name: str, holder: str) -> SweepBusy:
    return SweepBusy(f"sweep {name!r} is being run by another driver right now ({holder}); wait for "
                     "it to finish, or choose another --name")


_HELD: dict[str, Lease] = {}


_HELD_LOCK = threading.Lock()


def held_lease(sweep_uri: str) -> Lease | None:
    """The lease this process holds on the sweep (possibly lost since: its check() raises), or
    None. Writers look it up here, so that copies of them unpickled by Tune find it too."""
    with _HELD_LOCK:
        return _HELD.get(storage.location(sweep_uri))


def check_writer(sweep_uri: str) -> None:
    """What every writer of the sweep calls before it writes, the one guard: LeaseLost once this
    process has lost the sweep's lease; nothing where it holds none (a store opened outside a
    driver, e.g. by a test or a benchmark)."""
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
        if self._released:
            raise LeaseLost(f"the lease on sweep {self.name!r} was released; nothing may write to it "
                            "from this driver any more")
        if self._lost:
            raise LeaseLost(self._lost)

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


@contextmanager
def sweep_lock(sweep_uri: str, name: str, *, ttl: float | None = None, wait: float = 0.0,
               on_lost: Callable[[str], None] | None = None) -> Iterator[Lease]:
    """Hold the sweep's driver lock while the block runs; SweepBusy (a UsageError: one line,
    exit 2) if another driver still holds it after ``wait`` seconds of trying (a rerun right
    after a driver was killed may pass ``wait=DEFAULT_TTL + 5`` to outwait its lease, at the
    cost of a live driver's refusal coming that much later). ``sweep_uri`` is the sweep's
    directory (a path, or a URI with its '?options'); ``name`` the sweep's name, for messages.
    On object storage the lease is renewed in the background; ``lease.check()`` raises
    LeaseLost once it is lost and ``on_lost(message)`` is called once (from the thread that
    notices)."""
    k = storage.location(sweep_uri)
    ttl = DEFAULT_TTL if ttl is None else ttl
    if storage.is_local(sweep_uri):
        from .local import LocalLease

        lease: Lease = LocalLease(sweep_uri, name, ttl)
    else:
        from .s3_lease import S3Lease

        lease = S3Lease(sweep_uri, name, ttl, on_lost)
    with _HELD_LOCK:
        if k in _HELD and not _HELD[k]._released:
            raise _busy(name, f"held by this very process, {_HELD[k].owner}")
    deadline = time.monotonic() + wait
    while True:
        try:
            lease.acquire()
            break
        except SweepBusy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    with _HELD_LOCK:
        _HELD[k] = lease
    try:
        yield lease
    finally:
        lease.release()
        with _HELD_LOCK:
            if _HELD.get(k) is lease:
                del _HELD[k]
