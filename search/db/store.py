"""The trial database: per sweep, each table is a directory of immutable Parquet part files.

Layout: ``{root}/{sweep}/db/{table}/{hi}-{lo}-L{level}-{token}.parquet``. A part holds rows
written at write sequences ``lo..hi`` with one row per key. Readers take, per key, the row of
the part with the highest ``hi``; a part whose range lies inside another's was merged into it
(a compaction that died before deleting its inputs) and is skipped. Every part is written
atomically (temp file + fsync + rename on local disk, one object PUT on object stores), so a
reader never sees half a file, and a driver that died and resumed only adds newer rows.

Which parts exist: on local disk, the files in the table's directory (one driver at a time, by
an OS file lock); on object storage, the parts the sweep's commit log (search.storage.commits,
``{root}/{sweep}/commits/``) has added and not removed. There a flush writes its parts (under
names nobody else uses), then commits them all in one entry, so the tables change together
or not at all, and a driver that lost the sweep cannot make a part visible: its commit is
refused by the store.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..storage import uri as storage
from ..storage.commits import SWEEP_LOG, CommitLog
from .errors import StoreError, UsageError
from .schema import (EPOCHS, EVALS, METADATA_KEY, SCHEMA_VERSION, TABLES, TRIALS, EpochRow,
                     EvalRow, Table, TrialRow, file_metadata)
from ..storage.uri import DEFAULT_STORAGE

__all__ = ["TrialStore", "list_sweeps", "load_sweep", "load_trials", "load_epochs", "load_evals"]

DB_DIR = "db"
# Epochs before trials: on local disk a flush writes one file per table, and a driver killed
# between them must not leave a trial's row ahead of its epoch rows.
FLUSH_ORDER = (EPOCHS.name, EVALS.name, TRIALS.name)
_PART = re.compile(r"^(\d{20})-(\d{20})-L(\d+)-([0-9a-f]{12})\.parquet$")


@dataclass(frozen=True)
class Part:
    path: str
    hi: int  # newest write sequence whose rows it holds
    lo: int  # oldest
    level: int  # 0 = written by write(), n = merged from parts of level n - 1


def check_sweep_name(sweep: str) -> str:
    if not sweep or sweep in (".", "..") or any(c in sweep for c in "/\\\0"):
        raise UsageError(f"invalid sweep name {sweep!r}: use one path component (no '/', not '..')")
    return sweep


def list_sweeps(root: str | os.PathLike, *, filesystem: pafs.FileSystem | None = None) -> list[str]:
    """Names of the sweeps under a storage root that have a database, sorted."""
    fs, base = storage.resolve(root, filesystem)
    entries = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    dirs = [e for e in entries if e.type == pafs.FileType.Directory]
    dbs = fs.get_file_info([f"{e.path}/{DB_DIR}" for e in dirs])
    return sorted(e.base_name for e, db in zip(dirs, dbs) if db.type == pafs.FileType.Directory)


def load_sweep(sweep: str | Sequence[str] | None = None, storage: str = DEFAULT_STORAGE,
               **filters: Any) -> pd.DataFrame:
    """The trials of one sweep (several, or all when None), one row per trial."""
    return load_trials(storage, sweep, **filters)


def load_trials(root: str | os.PathLike, sweeps: str | Iterable[str] | None = None, *,
                filesystem: pafs.FileSystem | None = None, **filters: Any) -> pd.DataFrame:
    """One row per trial of the given sweeps (all by default); filters: column=value or list."""
    return _load(TRIALS, root, sweeps, filesystem, filters)


def load_epochs(root: str | os.PathLike, sweeps: str | Iterable[str] | None = None, *,
                filesystem: pafs.FileSystem | None = None, **filters: Any) -> pd.DataFrame:
    """One row per trial-epoch; filters as in ``load_trials`` on the epochs columns."""
    return _load(EPOCHS, root, sweeps, filesystem, filters)


def load_evals(root: str | os.PathLike, sweeps: str | Iterable[str] | None = None, *,
               filesystem: pafs.FileSystem | None = None, **filters: Any) -> pd.DataFrame:
    """One row per final (trial, attack, split) evaluation."""
    return _load(EVALS, root, sweeps, filesystem, filters)


class TrialStore:
    """The single writer of one sweep's database (the driver's Tune callback).

    ``write`` buffers rows and flushes when ``flush_interval_s`` has passed since the last flush
    (immediately by default); ``flush``/``close`` write what is buffered. Each flush writes one
    part per table with rows; rows with an existing key supersede the stored ones. Parts are
    merged ``fanout`` at a time so readers open O(fanout * log n) files. ``guard`` is called
    before every write and delete (the driver's lease check: it raises once this process may
    no longer write to the sweep). ``log``: the sweep's commit log, through which the parts of
    a sweep on object storage are made visible (see the module's docstring).
    """

    def __init__(self, root: str | os.PathLike, sweep: str, *, filesystem: pafs.FileSystem | None = None,
                 flush_interval_s: float = 0.0, fanout: int = 16,
                 guard: Callable[[], None] | None = None, log: CommitLog | None = None) -> None:
        self.sweep = check_sweep_name(sweep)
        self._guard = guard or (lambda: None)
        self._log = log
        self._fs, base = storage.resolve(root, filesystem)
        self._dir = f"{base}/{sweep}/{DB_DIR}"
        self._flush_interval_s = flush_interval_s
        self._fanout = max(2, fanout)
        self._buffer: dict[str, list] = {name: [] for name in TABLES}
        self._last_flush = time.monotonic()
        self._seq = 0
        horizon = time.time_ns() + 86_400 * 10**9  # a day of clock skew between driver hosts
        for name in TABLES:
            self._fs.create_dir(self._table_dir(name), recursive=True)
            for p in self._parts(TABLES[name]):
                if p.hi > horizon:
                    raise StoreError(f"{p.path}: write sequence {p.hi} lies in the future; not a part "
                                     "this store wrote - move it out of the db/ directory")
                self._seq = max(self._seq, p.hi)

    def write(self, *, trials: Sequence[TrialRow] = (), epochs: Sequence[EpochRow] = (),
              evals: Sequence[EvalRow] = ()) -> None:
        for table, rows in ((TRIALS, trials), (EPOCHS, epochs), (EVALS, evals)):
            for row in rows:
                if type(row) is not table.row:
                    raise TypeError(f"{table.name}= takes {table.row.__name__}, got {type(row).__name__}")
                if row.sweep != self.sweep:
                    raise ValueError(f"row of sweep {row.sweep!r} written to the store of sweep {self.sweep!r}")
            self._buffer[table.name].extend(rows)
        if time.monotonic() - self._last_flush >= self._flush_interval_s:
            self.flush()

    def flush(self) -> None:
        added: dict[str, list[str]] = {}
        for name in FLUSH_ORDER:
            if rows := self._buffer[name]:
                table = TABLES[name]
                latest = {tuple(getattr(r, k) for k in table.key): r for r in rows}
                self._seq = max(self._seq + 1, time.time_ns())
                added[name] = [self._put(table, table.to_arrow(list(latest.values())), self._seq,
                                         self._seq, 0)]
        self._commit(added, {})  # every table's new rows at once
        for name in FLUSH_ORDER:
            if self._buffer[name]:
                self._buffer[name].clear()
                self._merge_full_levels(TABLES[name])
        self._last_flush = time.monotonic()

    def _commit(self, added: dict[str, list[str]], removed: dict[str, list[str]]) -> None:
        """Make parts visible (and merged ones invisible) through the commit log, if the
        store has one (on local disk a part is visible once it is renamed into place)."""
        if self._log is not None and (added or removed):
            self._log.commit({"db": {"add": added, "remove": removed}})

    def _parts(self, table: Table) -> list[Part]:
        """The parts of the table that exist (see the module's docstring)."""
        if self._log is None:
            return _list_parts(self._fs, self._table_dir(table.name), strict=False)
        return committed_parts(self._log.entries, self._table_dir(table.name), table.name)

    def compact(self) -> None:
        """Merge every table into one part (e.g. at the end of a sweep)."""
        self.flush()
        for table in TABLES.values():
            live = self._drop_merged(table)
            if len(live) > 1:
                self._merge(table, live, max(p.level for p in live) + 1)

    def close(self, *, compact: bool = True) -> None:
        self.compact() if compact else self.flush()

    def __enter__(self) -> TrialStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(compact=exc[0] is None)

    def _table_dir(self, name: str) -> str:
        return f"{self._dir}/{name}"

    def _merge_full_levels(self, table: Table) -> None:
        while True:
            live = self._drop_merged(table)
            levels = sorted({p.level for p in live})
            full = next((lv for lv in levels if sum(p.level == lv for p in live) >= self._fanout), None)
            if full is None:
                return
            self._merge(table, [p for p in live if p.level == full], full + 1)

    def _drop_merged(self, table: Table) -> list[Part]:
        """Delete the inputs a dead compaction left behind, once their merged part checks out;
        return the live parts."""
        parts = self._parts(table)
        live = _live(parts)
        stale = [p for p in parts if p not in live]
        for container in {c for p in stale for c in live if c.lo <= p.lo and p.hi <= c.hi}:
            _open_part(self._fs, container, table, read=False)
        self._commit({}, {table.name: [p.path.rsplit("/", 1)[-1] for p in stale]} if stale else {})
        self._delete(stale)
        return live

    def _merge(self, table: Table, parts: list[Part], level: int) -> None:
        merged = _latest(table, [(p, _open_part(self._fs, p, table)) for p in parts])
        name = self._put(table, merged, max(p.hi for p in parts), min(p.lo for p in parts), level)
        self._commit({table.name: [name]}, {table.name: [p.path.rsplit("/", 1)[-1] for p in parts]})
        self._delete(parts)

    def _delete(self, parts: Iterable[Part]) -> None:
        parts = list(parts)
        if parts:
            self._guard()
        for p in parts:
            try:
                self._fs.delete_file(p.path)
            except FileNotFoundError:
                pass

    def _put(self, table: Table, data: pa.Table, hi: int, lo: int, level: int) -> str:
        name = f"{hi:020d}-{lo:020d}-L{level}-{secrets.token_hex(6)}.parquet"
        path = f"{self._table_dir(table.name)}/{name}"
        buf = pa.BufferOutputStream()
        pq.write_table(data.replace_schema_metadata(file_metadata(table)), buf, compression="zstd")
        self._guard()
        try:
            storage.write_bytes(self._fs, path, buf.getvalue().to_pybytes())
        except OSError as e:
            raise StoreError(f"cannot write the trial database in {self._dir}: {e.strerror or e}; "
                             "free space or make the storage writable, then rerun the same command "
                             "to resume (nothing written so far is lost)") from None
        return name


def _list_parts(fs: pafs.FileSystem, table_dir: str, *, strict: bool) -> list[Part]:
    parts = []
    for info in fs.get_file_info(pafs.FileSelector(table_dir, allow_not_found=True)):
        if info.base_name.startswith("."):
            continue  # a write in flight, or the leftover of a writer that died mid-write
        m = _PART.match(info.base_name)
        if m and info.type == pafs.FileType.File:
            parts.append(Part(info.path, int(m[1]), int(m[2]), int(m[3])))
        elif strict:
            raise StoreError(f"{info.path}: foreign entry in the trial database (not a part this "
                             "store wrote); move it out of the db/ directory")
    return parts


def committed_parts(entries: list[dict[str, Any]], table_dir: str, table: str) -> list[Part]:
    """The table's parts that a sweep's commit log has added and not removed."""
    names: dict[str, None] = {}
    for entry in entries:
        db = entry.get("db") or {}
        for name in db.get("remove", {}).get(table, ()):
            names.pop(name, None)
        for name in db.get("add", {}).get(table, ()):
            names[name] = None
    parts = []
    for name in names:
        if m := _PART.match(name):
            parts.append(Part(f"{table_dir}/{name}", int(m[1]), int(m[2]), int(m[3])))
    return parts


def _live(parts: list[Part]) -> list[Part]:
    """Parts not contained in another's sequence range, oldest first."""
    live, reach = [], -1
    for p in sorted(parts, key=lambda p: (p.lo, -p.hi, p.path)):
        if p.hi > reach or (live and (live[-1].lo, live[-1].hi) == (p.lo, p.hi)):
            live.append(p)
        reach = max(reach, p.hi)
    return sorted(live, key=lambda p: (p.hi, p.path))


def _open_part(fs: pafs.FileSystem, part: Part, table: Table, *, read: bool = True) -> pa.Table | None:
    """The part's rows in the current schema, after checking it is one of ours (read=False:
    only check the footer)."""
    try:
        with fs.open_input_file(part.path) as f:
            pf = pq.ParquetFile(f)
            meta = _our_metadata(pf.schema_arrow.metadata, part.path)
            data = pf.read() if read else None
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as e:
        if fs.get_file_info(part.path).type == pafs.FileType.NotFound:
            # deleted while read (on an object store the open and the reads are requests of
            # their own): a compaction merged it, and the caller lists the parts again
            raise FileNotFoundError(part.path) from None
        raise StoreError(f"{part.path}: not a readable Parquet file ({e}); it was left as is - "
                         "move it out of the db/ directory") from None
    if meta.get("table") != table.name:
        raise StoreError(f"{part.path}: holds table {meta.get('table')!r}, not {table.name!r}")
    return None if data is None else _conform(data, table, part.path)


def _our_metadata(metadata: dict[bytes, bytes] | None, path: str) -> dict[str, Any]:
    raw = (metadata or {}).get(METADATA_KEY)
    try:
        meta = json.loads(raw) if raw is not None else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise StoreError(f"{path}: Parquet file without robust-arch-search schema metadata (foreign "
                         "file); move it out of the db/ directory")
    version = meta.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise StoreError(f"{path}: schema version {version!r} is newer than this code's "
                         f"{SCHEMA_VERSION}; upgrade robust-arch-search to read it")
    return meta


def _conform(data: pa.Table, table: Table, path: str) -> pa.Table:
    """The file's columns in the current schema; columns added since it was written are null."""
    columns = []
    for field in table.schema:
        if field.name in data.column_names:
            column = data.column(field.name)
            if column.type != field.type:
                raise StoreError(f"{path}: column {field.name} is {column.type}, expected {field.type}")
            columns.append(column)
        elif field.nullable:
            columns.append(pa.nulls(len(data), field.type))
        else:
            raise StoreError(f"{path}: required column {field.name} is missing")
    return pa.Table.from_arrays(columns, schema=table.schema)


def _latest(table: Table, parts: list[tuple[Part, pa.Table]]) -> pa.Table:
    """The newest row per key of parts given oldest first (each part has unique keys)."""
    if not parts:
        return table.schema.empty_table()
    if len(parts) == 1:
        return parts[0][1]
    data = pa.concat_tables([t for _, t in parts])
    order = pa.array(np.arange(len(data), dtype=np.int64))
    last = data.select(list(table.key)).append_column("_row", order) \
        .group_by(list(table.key), use_threads=False).aggregate([("_row", "max")]).column("_row_max")
    return data.take(np.sort(last.to_numpy()))


def _read_table(fs: pafs.FileSystem, sweep_dir: str, table: Table) -> pa.Table:
    table_dir = f"{sweep_dir}/{DB_DIR}/{table.name}"
    log = CommitLog(fs, f"{sweep_dir}/{SWEEP_LOG}", "sweep's commit log")
    for _ in range(5):
        log.sync()  # on local disk there is none
        if log.end:
            live = _live(committed_parts(log.entries, table_dir, table.name))
        else:
            live = _live(_list_parts(fs, table_dir, strict=True))
        try:
            return _latest(table, [(p, _open_part(fs, p, table)) for p in live])
        except FileNotFoundError:
            continue  # a compaction merged and deleted a listed part; list again
    raise StoreError(f"{table_dir}: parts keep disappearing while reading; is a compaction looping?")


def _load(table: Table, root: str | os.PathLike, sweeps: str | Iterable[str] | None,
          filesystem: pafs.FileSystem | None, filters: dict[str, Any]) -> pd.DataFrame:
    fs, base = storage.resolve(root, filesystem)
    known = list_sweeps(base, filesystem=fs)
    if sweeps is None:
        names = known
    else:
        names = [sweeps] if isinstance(sweeps, str) else list(sweeps)
        unknown = [s for s in names if s not in known]
        if unknown:
            raise UsageError(f"unknown sweep {unknown[0]!r} under {root}; known sweeps: "
                             f"{', '.join(known) or 'none'}")
    data = [_read_table(fs, f"{base}/{s}", table) for s in names]
    df = (pa.concat_tables(data) if data else table.schema.empty_table()).to_pandas()
    return filter_rows(df, table.columns, filters)


def filter_rows(df: pd.DataFrame, columns: Sequence[str], filters: dict[str, Any]) -> pd.DataFrame:
    """Rows whose column equals the value (or one of the values); None means no filter."""
    mask = np.ones(len(df), dtype=bool)
    for name, value in filters.items():
        if value is None:
            continue
        if name not in columns:
            raise UsageError(f"cannot filter on unknown column {name!r}; columns: {', '.join(columns)}")
        values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
        mask &= df[name].isin(values).to_numpy()
    return df[mask].reset_index(drop=True) if not mask.all() else df
