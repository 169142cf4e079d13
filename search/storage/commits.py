"""A commit log on an object store: what fences the writes of a sweep's driver on s3://.

The log is a sequence of entries, entry ``i`` an object of its own, created only by a
put-if-absent (S3 ``If-None-Match: *``) and never overwritten or deleted. A writer commits at
the index after the last entry it knows; when the store refuses (the slot is taken), the writer
reads what took it: its own entry (the reply was lost and the request retried) is a success,
another writer's means someone else writes this log now, and the writer is fenced (``Fenced``).
A driver that takes a sweep over first commits a ``takeover`` entry at the end of each log of
the sweep, so the next commit of the driver it replaced, whenever that driver wakes up, lands
on a taken slot and is refused by the store itself: no check before the write is involved
(Delta Lake commits table versions the same way). What a log makes visible (the trial
database's parts, the sweep's files, the study's journal) is exactly what its entries say.

Layout in the log's directory: ``{index // 1000:06d}/{index:012d}.json`` (the entries, a
thousand per block so that a reader lists only the last blocks) and
``seg-{first:012d}-{end:012d}.jsonl`` (entries first..end-1 as JSON lines: a copy for readers,
written by the log's writer every SEGMENT entries; entries never change, so a segment is the
same whoever writes it, and needs no fence). A reader takes the segments chained from 0 that
reach furthest, then the entries after them.

Reading needs pyarrow alone; committing needs a ``writer`` (search.storage.lease: the lease holder),
which can put an object only if absent.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import pyarrow.fs as pafs

from .errors import StoreError

__all__ = ["CommitLog", "LogWriter", "Fenced", "open_log", "SWEEP_LOG", "STUDY_LOG", "LOGS",
           "BLOCK", "SEGMENT"]

SWEEP_LOG = "commits"  # the trial database's parts and the sweep's files (sweep.json, segments.json)
STUDY_LOG = "optuna-log"  # the Optuna study's journal
LOGS = {SWEEP_LOG: "sweep's commit log", STUDY_LOG: "study journal"}

BLOCK = 1000  # entries per block directory
SEGMENT = 256  # the writer copies every SEGMENT entries into one segment object
_ENTRY = re.compile(r"^(\d{12})\.json$")
_BLOCK = re.compile(r"^\d{6}$")
_SEG = re.compile(r"^seg-(\d{12})-(\d{12})\.jsonl$")
_FETCHERS = 8


class Fenced(StoreError):
    """The store refused this writer's commit: another driver has taken the sweep over."""


class LogWriter(Protocol):
    """Who commits (the lease holder of the sweep)."""

    token: str  # unique per holder
    generation: int  # the lease's generation, taken by a conditional write

    def put_if_absent(self, path: str, data: bytes) -> bool:
        """Create the object at ``path`` (a path in the log's filesystem) unless it exists:
        True if this call created it, False if the store refused (412 or 409)."""

    def fenced(self, message: str) -> None:
        """Called once the store refused a commit of this writer (it lost the sweep)."""


class CommitLog:
    """One log (see the module's docstring), as one process knows it: every entry read or
    committed so far, in order. Thread-safe."""

    def __init__(self, fs: pafs.FileSystem, directory: str, what: str):
        self.fs, self.dir, self.what = fs, directory.rstrip("/"), what
        self.entries: list[dict[str, Any]] = []
        self.segmented = 0  # entries [0, segmented) are in segments on the store
        self.writer: LogWriter | None = None
        self.lock = threading.RLock()

    @property
    def end(self) -> int:
        return len(self.entries)

    # -- reading ----------------------------------------------------------------------------
    def sync(self) -> list[dict[str, Any]]:
        """Read the entries committed since this process last looked; returns them. A log that
        no longer holds what this process read (the directory was removed and made anew) is
        read again from its start."""
        with self.lock:
            listing = self._list(self.end)
            if listing.last < self.end - 1:  # shorter than what we read: not the same log
                self.entries, self.segmented = [], 0
            start = self.end
            for first, end, path in listing.segments_from(self.end):
                self._extend(first, self._get_segment(path, first, end))
                self.segmented = end
            todo = list(listing.entries_from(self.end))
            if todo:
                with ThreadPoolExecutor(min(_FETCHERS, len(todo))) as pool:
                    bodies = list(pool.map(self._get_entry, todo))
                self._extend(todo[0], bodies)
            return self.entries[start:]

    def _extend(self, first: int, bodies: list[dict[str, Any]]) -> None:
        if first != self.end:
            raise StoreError(f"{self.what} in {self.dir} lacks entry {self.end} (later ones exist); "
                             "it was changed by something other than this program")
        self.entries.extend(bodies)

    def _list(self, start: int) -> _Listing:
        """The segments, and the entries in the blocks from ``start``'s on (the last block at
        least, which tells how long the log is)."""
        try:
            top = self.fs.get_file_info(pafs.FileSelector(self.dir, allow_not_found=True))
            segments, blocks = [], []
            for info in top:
                if info.type == pafs.FileType.File and (m := _SEG.match(info.base_name)):
                    segments.append((int(m[1]), int(m[2]), info.path))
                elif info.type == pafs.FileType.Directory and _BLOCK.match(info.base_name):
                    blocks.append(int(info.base_name))
            chained = _Listing.chain(segments)
            reach = chained[-1][1] if chained else 0
            indices: list[int] = []
            first_block = min(max(start, reach) // BLOCK, max(blocks, default=0))
            for block in sorted(b for b in blocks if b >= first_block):
                for info in self.fs.get_file_info(pafs.FileSelector(f"{self.dir}/{block:06d}")):
                    if m := _ENTRY.match(info.base_name):
                        indices.append(int(m[1]))
        except OSError as e:
            raise StoreError(f"cannot read the {self.what} in {self.dir} ({e})") from None
        indices.sort()
        last = max([*indices, reach - 1]) if indices or reach else -1
        return _Listing(chained, indices, last)

    def _get(self, path: str) -> bytes:
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except OSError as e:
            raise StoreError(f"cannot read {path} of the {self.what} ({e})") from None

    def _get_entry(self, index: int) -> dict[str, Any]:
        return json_object(self._get(self._path(index)),
                           f"{self._path(index)} is not an entry of a {self.what} this program "
                           "wrote; move the sweep's directory away to start over")

    def _get_segment(self, path: str, first: int, end: int) -> list[dict[str, Any]]:
        lines = self._get(path).decode("utf-8", errors="replace").splitlines()
        try:
            bodies = [json.loads(line) for line in lines]
        except ValueError:
            bodies = []
        if len(bodies) != end - first or not all(isinstance(b, dict) for b in bodies):
            raise StoreError(f"{path} is not a segment of a {self.what} this program wrote "
                             f"(expected {end - first} entries); move it away to read the log")
        return bodies

    def _path(self, index: int) -> str:
        return f"{self.dir}/{index // BLOCK:06d}/{index:012d}.json"

    # -- writing ----------------------------------------------------------------------------
    def take_over(self, writer: LogWriter, about: dict[str, Any]) -> int:
        """Commit a takeover entry for ``writer`` at the end of the log, reading what others
        committed meanwhile first; from then on only ``writer`` can commit. Its index."""
        with self.lock:
            self.writer = writer
            for _ in range(50):
                self.sync()
                index = self._put_at_end({"takeover": about}, conflict_is_fenced=False)
                if index is not None:
                    return index
            raise StoreError(f"could not take over the {self.what} in {self.dir}: it kept changing")

    def commit(self, body: dict[str, Any]) -> int:
        """Append ``body`` as this writer's next entry; its index. Fenced when the store refuses
        it because another writer took the log over."""
        with self.lock:
            if self.writer is None:
                raise StoreError(f"the {self.what} in {self.dir} is written only by the driver "
                                 "holding the sweep's lease")
            for attempt in range(20):
                index = self._put_at_end(body, conflict_is_fenced=True)
                if index is not None:
                    return index
                time.sleep(min(1.0, 0.05 * 2 ** attempt))  # a 409: a write still in flight
            raise StoreError(f"the store kept refusing commits to the {self.what} in {self.dir} "
                             "without another entry appearing there")

    def _put_at_end(self, body: dict[str, Any], *, conflict_is_fenced: bool) -> int | None:
        writer = self.writer
        entry = {**body, "token": writer.token, "gen": writer.generation, "id": uuid.uuid4().hex}
        index = self.end
        if writer.put_if_absent(self._path(index), json.dumps(entry, separators=(",", ":")).encode()):
            self.entries.append(entry)
            self._segment()
            return index
        # Taken: by this very entry (its reply was lost, and the retry was refused), or by
        # another writer; or a concurrent write is still in flight (409) and nothing is there yet.
        for offset, seen in enumerate(self.sync()):
            if seen.get("id") == entry["id"]:
                self._segment()
                return index + offset
            if seen.get("token") != writer.token and conflict_is_fenced:
                taker = seen.get("takeover") or {}
                message = (f"the store refused this driver's commit to the {self.what}: another "
                           f"driver ({taker.get('host', '?')} pid {taker.get('pid', '?')}, "
                           f"generation {seen.get('gen')}) took the sweep over at entry "
                           f"{index + offset}")
                writer.fenced(message)
                raise Fenced(message)
        return None

    def _segment(self) -> None:
        """Copy the entries since the last segment into one, every SEGMENT entries."""
        if self.end - self.segmented < SEGMENT:
            return
        first, end = self.segmented, self.end
        lines = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in self.entries[first:end])
        try:
            with self.fs.open_output_stream(f"{self.dir}/seg-{first:012d}-{end:012d}.jsonl") as out:
                out.write(lines.encode())
            self.segmented = end
        except OSError:
            pass  # only readers' speed depends on it: tried again at the next commit


def json_object(raw: bytes, refusal: str) -> dict[str, Any]:
    """``raw`` as the JSON object it should be; StoreError(refusal) when it is not one."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise StoreError(refusal)
    return body


_SHARED: dict[tuple[str, str], CommitLog] = {}
_SHARED_LOCK = threading.Lock()


def open_log(sweep_uri: str, name: str, *, shared: bool = True) -> CommitLog:
    """The log ``name`` (one of LOGS) of the sweep whose directory is ``sweep_uri`` (a URI with
    its '?options'). ``shared``: the one object of this process, which its lease holder
    commits through; else a fresh reader."""
    from . import uri as storage

    if not shared:
        fs, path = storage.resolve(sweep_uri)
        return CommitLog(fs, f"{path}/{name}", LOGS[name])
    options = "&".join(sorted(sweep_uri.partition("?")[2].split("&")))  # the store it is on
    spelled = (storage.location(sweep_uri), options, name)
    with _SHARED_LOCK:
        log = _SHARED.get(spelled)
        if log is None:
            fs, path = storage.resolve(sweep_uri)
            log = _SHARED[spelled] = CommitLog(fs, f"{path}/{name}", LOGS[name])
        return log


class _Listing:
    """What one listing of a log found."""

    def __init__(self, segments: list[tuple[int, int, str]], indices: list[int], last: int):
        self._segments, self._indices, self.last = segments, indices, last

    @staticmethod
    def chain(segments: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
        """From 0, at each point the segment reaching furthest."""
        by_first: dict[int, tuple[int, int, str]] = {}
        for seg in segments:
            if seg[1] > seg[0] and seg[1] > by_first.get(seg[0], (0, -1, ""))[1]:
                by_first[seg[0]] = seg
        chained, at = [], 0
        while at in by_first:
            chained.append(by_first[at])
            at = by_first[at][1]
        return chained

    def segments_from(self, start: int) -> Iterator[tuple[int, int, str]]:
        """The chained segments that hold entries from ``start`` on, when one begins there
        (else the entries are read one by one)."""
        for first, end, path in self._segments:
            if first == start:
                yield first, end, path
                start = end

    def entries_from(self, start: int) -> Iterator[int]:
        """Entry indices from ``start`` on, while contiguous."""
        expected = start
        for index in self._indices:
            if index < expected:
                continue
            if index != expected:
                return
            yield index
            expected += 1
