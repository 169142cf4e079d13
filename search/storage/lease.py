"""One driver per sweep, on local disk and on object storage: ``with sweep_lock(uri, name) as lease``.

The sweep's storage makes the lease (search.storage.open_storage): on local disk a FileLock
(local.py), on object storage a lease object taken and renewed by the store's conditional
writes, with a generation that fences the commits of a driver that lost it (s3_lease.py). Every
writer of the sweep calls ``check_writer(uri)`` first, the one guard: it stops a driver that
knows it lost the sweep before it writes; on object storage what makes the write of one that
does not know invisible is the store (search.storage.commits).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from . import open_storage
from . import uri as storage
from .base import (_HELD, _HELD_LOCK, DEFAULT_TTL, Lease, LeaseLost, SweepBusy, busy, check_writer,
                   held_lease, writer_guard)
from .local import LOCK_FILE
from .s3_lease import LEASE_FILE

__all__ = ["sweep_lock", "Lease", "SweepBusy", "LeaseLost", "held_lease", "check_writer", "writer_guard",
           "DEFAULT_TTL", "LOCK_FILE", "LEASE_FILE"]


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
    lease = open_storage(sweep_uri).lease(name, ttl, on_lost)
    with _HELD_LOCK:
        if k in _HELD and not _HELD[k]._released:
            raise busy(name, f"held by this very process, {_HELD[k].owner}")
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
