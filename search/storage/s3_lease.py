"""Object storage (s3://): ``driver.lease``, an object holding the owner's id, host and pid, taken
and renewed only by S3 conditional writes (PutObject If-None-Match / If-Match, which AWS S3 has
honoured since 2024, moto's server too; a store that ignores them is found out by a probe when
the lease is taken, and refused): of two drivers starting together exactly one creates
the object; the holder renews it several times per ttl (``LeaseTimes``: the ttl and every
period derived from it) by overwriting it only if it is still the version it wrote. A lease
not renewed for its ttl (its holder was killed or cut off) is taken over, again by a
conditional overwrite, so one of several waiting drivers wins. Expiry is judged by the
store's own clock (the object's Last-Modified against the response's Date), so machines with
skewed clocks agree. A driver rerun on the machine of a killed one need not wait for its lease
to lapse: the lease names its holder's machine (boot id and pid namespace), and a holder whose
pid no longer runs there is dead for sure, so its lease is taken over at once.
pyarrow cannot send these headers (it drops them silently), so this object and the entries of
the commit logs are written with boto3; every other file of a sweep goes through pyarrow.

What fences a holder that lost its lease is the store, not a check: each holder has a
generation (one more than the lease it replaced, taken by the conditional write that took the
lease) and, once it holds the lease, commits a takeover entry at the end of each of the sweep's
commit logs (search.storage.commits): the study journal, and the log of the trial database's parts
and the sweep's files. Every later commit of an earlier holder lands on a taken slot and is
refused by the store, however long that holder was paused. The holder also gives up on its own
before anyone else can take over: a watchdog thread marks the lease lost once it has not been
renewed for ``LeaseTimes.give_up_after`` seconds, a margin short of the ttl, counted on
CLOCK_BOOTTIME (which goes on while the machine is suspended) and whether or not a renewal is
stuck on the network; ``lease.check()`` raises LeaseLost from then on, and ``on_lost`` is
called once (from the thread that notices).
"""

from __future__ import annotations

import email.utils
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from space_defs.cli import UsageError

from .commits import LOGS, json_object, open_log
from .errors import StoreError

from .base import DEFAULT_TTL, Lease, LeaseLost, busy
from .s3_client import _code, _refused, s3_client

LEASE_FILE = "driver.lease"  # the lease object, in the sweep directory


@dataclass(frozen=True)
class LeaseTimes:
    """The S3 lease's timing, all derived from its ttl (seconds); docs/RELIABILITY.md renders it."""

    ttl: float = DEFAULT_TTL  # a lease lives this long without renewal

    @property
    def renew_every(self) -> float:
        return self.ttl / 3

    @property
    def margin(self) -> float:
        """The holder gives up this long before anyone else may take over; also the timeout
        of each request on the lease object."""
        return self.ttl / 6

    @property
    def give_up_after(self) -> float:
        """Without an accepted renewal for this long (CLOCK_BOOTTIME), the holder stops."""
        return self.ttl - self.margin

    @property
    def lapses_after(self) -> float:
        """Unrenewed for longer than this by the store's clock, the lease is another driver's to
        take: Last-Modified and Date count whole seconds, so one more second makes sure the
        lease's real age exceeds its ttl."""
        return self.ttl + 1


_BOOTTIME = sys.platform.startswith("linux") and hasattr(time, "CLOCK_BOOTTIME")


def _clock() -> float:
    """Seconds on a clock that counts time the machine spent suspended (Linux CLOCK_BOOTTIME;
    elsewhere the monotonic clock), so that a lease deadline passes during a suspend too."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) if _BOOTTIME else time.monotonic()


class S3Lease(Lease):
    """A lease object renewed by conditional writes (see the module's docstring)."""

    def __init__(self, sweep_uri: str, name: str, ttl: float, on_lost: Callable[[str], None] | None):
        super().__init__(sweep_uri, name, ttl)
        if ttl < 3:
            raise ValueError("a lease needs ttl >= 3 s (the store's clock counts whole seconds)")
        self.times = LeaseTimes(ttl)
        self.client, self.bucket, self.object_key = s3_client(sweep_uri, LEASE_FILE,
                                                              timeout=self.times.margin)
        self._commits = None  # the client of the commit logs (longer timeouts), made when needed
        self._seq = 0
        self._etag: str | None = None
        self._sent: dict[int, float] = {}  # write number -> when it was sent (_clock)
        self._deadline = 0.0  # _clock: past it, the lease may be gone
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- the lease object ---------------------------------------------------------------------
    def _body(self, state: str = "held") -> bytes:
        return json.dumps({"owner": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                           "machine": _this_machine(), "sweep": self.name, "ttl_s": self.ttl,
                           "seq": self._seq, "gen": self.generation, "state": state,
                           "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
                          sort_keys=True).encode()

    def _put(self, body: bytes, **condition: str) -> str:
        self._last_body = body
        reply = self.client.put_object(Bucket=self.bucket, Key=self.object_key, Body=body,
                                       ContentType="application/json", **condition)
        return reply["ETag"]

    def _get(self) -> tuple[dict, str, datetime, datetime] | None:
        """(body, etag, last modified, the store's now), or None when there is no lease."""
        from botocore.exceptions import ClientError

        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=self.object_key)
        except ClientError as e:
            if _code(e) in ("NoSuchKey", "404"):
                return None
            raise
        body = json_object(reply["Body"].read(), f"{self.uri}/{LEASE_FILE} is not a lease this "
                           "program wrote; remove it if no driver runs this sweep")
        date = reply["ResponseMetadata"]["HTTPHeaders"].get("date")
        now = email.utils.parsedate_to_datetime(date) if date else datetime.now(timezone.utc)
        return body, reply["ETag"], reply["LastModified"], now

    def _lapses_after(self, body: dict) -> float:
        return LeaseTimes(float(body.get("ttl_s", self.ttl))).lapses_after

    def _expired(self, body: dict, modified: datetime, now: datetime) -> bool:
        return (now - modified).total_seconds() > self._lapses_after(body)

    def _ours(self, seen) -> bool:
        """Whether the lease object read is this holder's (a write whose reply was lost)."""
        return seen is not None and seen[0].get("owner") == self.token and seen[0].get("state") == "held"

    # -- taking it ----------------------------------------------------------------------------
    def acquire(self) -> None:
        from botocore.exceptions import ClientError

        for _ in range(5):
            seen = self._get()
            if self._ours(seen):  # our write landed; its reply was lost and the retry refused
                self._etag = seen[1]
                self._deadline = self._sent[int(seen[0]["seq"])] + self.times.give_up_after
                break
            self._seq += 1
            self._sent[self._seq] = _clock()
            try:
                if seen is None:
                    self.generation = 1
                    self._etag = self._put(self._body(), IfNoneMatch="*")
                else:
                    body, etag, modified, now = seen
                    if (body.get("state") != "released" and not self._expired(body, modified, now)
                            and not _dead_here(body)):
                        until = modified + timedelta(seconds=self._lapses_after(body))
                        raise busy(self.name, f"lease held by {body.get('host', '?')} pid "
                                               f"{body.get('pid', '?')} until "
                                               f"{until:%Y-%m-%dT%H:%M:%SZ}, renewed while it runs")
                    self.generation = int(body.get("gen", 0)) + 1
                    self._etag = self._put(self._body(), IfMatch=etag)
            except ClientError as e:
                if _refused(e):
                    continue  # another driver moved first, or our reply was lost: look again
                raise
            self._deadline = self._sent[self._seq] + self.times.give_up_after
            break
        else:
            raise busy(self.name, "its lease changed hands while this driver tried to take it")
        self._check_conditional_writes()
        for target in (self._beat, self._watch):
            thread = threading.Thread(target=target, name=f"lease {self.name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        try:
            self._take_over_logs()
        except BaseException:
            self.release()
            raise

    def _check_conditional_writes(self) -> None:
        """Refuse a store that ignores If-None-Match / If-Match: there a lease keeps no one out.
        Both probes rewrite the lease with the very bytes it holds when they are ignored."""
        from botocore.exceptions import ClientError

        body = self._last_body
        for condition in ({"IfNoneMatch": "*"}, {"IfMatch": '"0-not-the-etag"'}):
            try:
                self._etag = self._put(body, **condition)
            except ClientError as e:
                if _refused(e):
                    continue
                raise
            self._release_quietly()
            raise UsageError(f"the object store of {self.uri} ignores conditional writes "
                             f"({', '.join(condition)}), so it cannot keep a second driver off this "
                             "sweep; use AWS S3 or a store that supports them")

    def _take_over_logs(self) -> None:
        """The fence: a takeover entry at the end of each commit log of the sweep, after
        which no earlier holder's commit is accepted there."""
        about = {"host": socket.gethostname(), "pid": os.getpid(), "gen": self.generation}
        for name in LOGS:
            open_log(self.uri, name).take_over(self, about)

    # -- the commit logs' writer (search.storage.commits.LogWriter) ---------------------------------
    def put_if_absent(self, path: str, data: bytes) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        self.check_process()  # a process forked from the holder commits nothing under its token
        if self._commits is None:
            self._commits = s3_client(self.uri, timeout=max(10.0, self.ttl), attempts=5)[0]
        bucket, _, key = path.partition("/")
        try:
            self._commits.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*",
                                     ContentType="application/json")
        except ClientError as e:
            if _refused(e):
                return False
            raise StoreError(f"cannot write to the sweep directory {self.uri} ({e}); free space "
                             "or fix access and rerun the same command") from None
        except BotoCoreError as e:
            raise StoreError(f"cannot reach the store of {self.uri} ({e}); rerun the same command "
                             "once it answers") from None
        return True

    def fenced(self, message: str) -> None:
        self._lose(message)

    # -- keeping it ---------------------------------------------------------------------------
    def check(self) -> None:
        super().check()
        if _clock() > self._deadline:
            self._lose(f"not renewed for {self.times.give_up_after:.0f} s")
            super().check()

    def _watch(self) -> None:
        """The deadline, on a thread of its own: it passes while a renewal hangs on the network."""
        while not self._stop.wait(min(0.25, self.times.margin / 4)):
            if self._lost or self._released:
                return
            if _clock() > self._deadline:
                self._lose(f"the store did not accept a renewal for {self.times.give_up_after:.0f} s")
                return

    def _beat(self) -> None:
        interval = self.times.renew_every
        wait = interval
        while not self._stop.wait(wait):
            if self._lost or self._released:
                return
            try:
                self._renew()
                wait = interval
            except LeaseLost:
                return
            except Exception:  # the network or the store: try again soon, until the deadline
                wait = min(1.0, interval / 3)
        # stopped by release()

    def _renew(self) -> None:
        from botocore.exceptions import ClientError

        self._seq += 1
        seq, sent = self._seq, _clock()
        self._sent[seq] = sent
        try:
            self._etag = self._put(self._body(), IfMatch=self._etag)
        except ClientError as e:
            if not (_refused(e) or _code(e) in ("NoSuchKey", "404")):
                raise
            seen = self._get()  # an earlier renewal may have landed though its reply was lost
            if not self._ours(seen):
                who = ("gone" if seen is None
                       else f"now held by {seen[0].get('host')} pid {seen[0].get('pid')}")
                self._lose(f"the lease object is {who}")
                raise LeaseLost(self._lost) from None
            self._etag = seen[1]  # ours: keep the deadline of the renewal that landed
            sent = self._sent.get(int(seen[0].get("seq", 0)), self._deadline - self.times.give_up_after)
        self._deadline = max(self._deadline, sent + self.times.give_up_after)
        for old in [s for s in self._sent if s < seq]:
            del self._sent[old]

    def _lose(self, reason: str) -> None:
        first = self._lost is None
        super()._lose(reason)
        if first:
            self._fire()

    def _fire(self) -> None:
        callback, self._on_lost = self._on_lost, None
        if callback is not None:
            try:
                callback(self._lost)
            except Exception:
                pass

    # -- giving it back -----------------------------------------------------------------------
    def release(self) -> None:
        if self._released:
            return
        try:
            self._run_before_release()  # still renewed meanwhile
        finally:
            self._stop.set()
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join(timeout=self.ttl)
            still_ours = self.held
            Lease.release(self)
            for name in LOGS:
                log = open_log(self.uri, name)
                if log.writer is self:
                    log.writer = None
            if still_ours:
                self._release_quietly()

    def _release_quietly(self) -> None:
        """Mark the lease released (only if it is still ours), so the next driver need not
        wait for it to expire; if that fails it simply expires."""
        try:
            self._seq += 1
            self._put(self._body("released"), IfMatch=self._etag)
        except Exception:
            pass


def _this_machine() -> str | None:
    """What the processes that see the same pids as this one share exactly (Linux: the boot id
    and the pid namespace), or None where that is unknown."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot} {os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _dead_here(body: dict) -> bool:
    """Whether the lease's holder ran on this machine and its pid runs no more (a pid reused
    since makes it look alive: then the lease is waited out)."""
    pid, here = body.get("pid"), _this_machine()
    if here is None or body.get("machine") != here or not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return False  # this process: held_lease says whether it still holds it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    try:  # killed but not yet reaped by its parent: a zombie holds nothing
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def held_by(sweep_uri: str, generation: int) -> bool:
    """Whether the lease object names ``generation`` as its holder, held; True when it cannot
    be read (the holder's own fence still holds then)."""
    try:
        client, bucket, key = s3_client(sweep_uri, LEASE_FILE)
        body = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception:  # noqa: BLE001 - unreadable now: the driver's own fence still holds
        return True
    return body.get("gen") == generation and body.get("state") == "held"
