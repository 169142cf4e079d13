"""Tune's driver snapshot, checked before a restore.

Tune rewrites its driver state (experiment, search generator, searcher, callbacks; one file each,
stamped per run) in place and copies it to storage without a rename, so a full disk or a kill
mid-write leaves a snapshot torn, and Tune then fails or silently starts over. Its pickles name
the project's classes by module (the searchers, the recorder): a class that moved is found where
it is now (MOVED), one this version lacks stops the driver before the restore (check_tune_state).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import pickletools
import re
import sys
import types
from concurrent.futures import ThreadPoolExecutor

import pyarrow.fs as pafs

from space_defs.cli import UsageError

from .. import internals
from ..sweep.files import Segment, SweepDir

TUNE_STATE = re.compile(r"(experiment_state|search_gen_state|searcher-state|callback-states)-(.+)\.(json|pkl)")
TUNER_STATE = "tuner.pkl"  # the Tuner's own state (its callbacks and search algorithm), not stamped
PROJECT = ("search", "space_defs", "trainer")

# Classes a sweep's Tune state pickles, by the module they were in before they moved (issue 29's
# layout): a sweep started before the move resumes after it.
MOVED = {
    "search.tuner": {"DefineByRun": "search.tune.searchers", "StudySearch": "search.tune.searchers",
                     "FixedRuns": "search.tune.searchers", "SweepSearch": "search.tune.searchers",
                     "GridOrder": "search.tune.grid_order"},
    "search.recorder": {"SweepRecorder": "search.tune.recorder"},
}


def resolve_moved_names() -> None:
    """Have MOVED's old names resolve: unpickling imports the module a class is named by, then
    looks the class up in it, so each old module is one whose attributes (PEP 562) are the moved
    classes."""
    for old, names in MOVED.items():
        if old not in sys.modules:
            module = types.ModuleType(old, f"moved: {', '.join(f'{n} to {m}' for n, m in names.items())}")
            module.__getattr__ = functools.partial(_moved, old, names)
            sys.modules[old] = module


def _moved(old: str, names: dict[str, str], name: str):
    if name not in names:
        raise AttributeError(f"module {old!r} has no attribute {name!r}")
    return getattr(importlib.import_module(names[name]), name)


def _versions(sweep: SweepDir) -> str:
    """The code versions the sweep's trials record, as the refusal names them."""
    from ..db import list_sweeps, load_trials

    if sweep.name not in list_sweeps(sweep.storage):
        return ""
    versions = sorted(load_trials(sweep.storage, sweep.name)["code_version"].dropna().unique())
    return f" (its trials record {', '.join(versions)})" if versions else ""


def _globals(data: bytes) -> set[tuple[str, str]]:
    """(module, qualified name) of every class or function of the project a pickle names. A
    STACK_GLOBAL's two names are the strings pushed just before it, written or fetched from
    the memo."""
    refs, pushed, memo = set(), [], {}
    for op, arg, _ in pickletools.genops(data):  # ValueError where it is torn
        if op.name == "GLOBAL":
            refs.add(tuple(arg.split(" ", 1)))
        elif op.name == "STACK_GLOBAL" and len(pushed) >= 2:
            refs.add((pushed[-2], pushed[-1]))
        elif op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(arg))
        elif op.name != "FRAME":
            pushed.append(arg if "UNICODE" in op.name else None)
    return {r for r in refs if isinstance(r[0], str) and isinstance(r[1], str)
            and r[0].split(".")[0] in PROJECT}


def _resolves(ref: tuple[str, str]) -> bool:
    module, name = ref
    try:
        found = importlib.import_module(module)
        for part in name.split("."):
            found = getattr(found, part)
        return True
    except (ImportError, AttributeError):
        return False


def check_tune_state(sweep: SweepDir, segment: Segment, say=print) -> None:
    """Before a restore, each state file read once. Newest first, a snapshot with any torn file
    is moved aside, whole, so that the restore uses the newest intact one. Then UsageError when
    that snapshot or the tuner's state names a class of this project that this version does not
    have (the sweep was started by another version): Tune would fail mid-restore with an import
    error. Pickles are walked with pickletools, never loaded."""
    resolve_moved_names()
    entries = sweep.fs.get_file_info(pafs.FileSelector(f"{sweep.path}/{segment.path}",
                                                       allow_not_found=True))
    snapshots: dict[str, list[str]] = {}
    for e in entries:
        if m := TUNE_STATE.fullmatch(e.base_name):
            snapshots.setdefault(m[2], []).append(e.path)
    restored: dict[str, set[tuple[str, str]]] = {}  # what Tune will load: path -> the names in it
    for stamp in sorted(snapshots, reverse=True):
        read = {p: _names_in(sweep.fs, p) for p in snapshots[stamp]}
        torn = [p.rsplit("/", 1)[-1] for p, names in read.items() if names is None]
        if not torn:
            restored = read
            break
        for path in snapshots[stamp]:
            sweep.fs.move(path, path + ".unreadable")
        say(f"{segment.name}: Tune's snapshot {stamp} is torn ({', '.join(sorted(torn))}; kept as "
            ".unreadable); resuming from the one before it")
    restored.update({e.path: _names_in(sweep.fs, e.path) or set() for e in entries
                     if e.base_name == TUNER_STATE})
    for path, names in sorted(restored.items()):
        for ref in sorted(names):
            if not _resolves(ref):
                raise UsageError(
                    f"{segment.name}: its Tune state ({path.rsplit('/', 1)[-1]}) names {ref[0]}.{ref[1]}, "
                    "which this version of robust-arch-search does not have: the sweep was started "
                    f"by another version{_versions(sweep)}; resume it with that one, or run this "
                    "one under another --name")


def take_over_experiment(sweep: SweepDir, segment: Segment, segments: list[Segment]) -> Segment:
    """On object storage: the segment's Tune experiment copied into this driver's own
    directory (``SweepDir.tune_dir``), which becomes the segment's directory (committed with
    segments.json). The driver that ran it before, and its trials, may still write where it
    was (they were paused, or are cut off): none of that reaches the copy, which is all this
    driver and the readers after it look at. Copies are made by the store (CopyObject); a file
    that changed while the directory was copied is copied again."""
    own = sweep.tune_dir(segment.name)
    if own == segment.path:
        return segment
    source, target = f"{sweep.path}/{segment.path}", f"{sweep.path}/{own}"
    copied: dict[str, tuple[int, object]] = {}
    for _ in range(5):
        files = _files(sweep.fs, source)
        todo = [p for p, stamp in files.items() if copied.get(p) != stamp]
        if not todo:
            break

        def copy(path: str) -> None:
            destination = target + path[len(source):]
            sweep.fs.create_dir(destination.rpartition("/")[0], recursive=True)
            sweep.fs.copy_file(path, destination)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(copy, todo))
        copied.update((p, files[p]) for p in todo)
    else:
        raise RuntimeError(f"{source} kept changing while it was copied; is its old driver running?")
    adopted = dataclasses.replace(segment, dir=own)
    sweep.save_segments([adopted if s == segment else s for s in segments])
    return adopted


def remove_earlier_holders(sweep: SweepDir, segment: Segment, say) -> None:
    """On object storage, once the segment is done: the Tune experiment directories of the
    drivers that ran it before this one (``take_over_experiment`` copied from them; nobody
    reads them), whose checkpoints can be most of the sweep's bytes. A driver that lost the
    sweep while paused may still write into its own afterwards; those files stay."""
    if segment.path == segment.name:  # local disk: one directory, the segment's own
        return
    own = f"{sweep.path}/{segment.path}"
    try:
        entries = sweep.fs.get_file_info(pafs.FileSelector(f"{sweep.path}/{segment.name}",
                                                           allow_not_found=True))
        earlier = [e.path for e in entries if e.type == pafs.FileType.Directory and e.path != own]
        for path in earlier:
            sweep.fs.delete_dir(path)
    except OSError as e:  # the segment's work is done and committed: this is only tidying
        say(f"{segment.name}: the Tune directories of earlier drivers were left ({e}); "
            f"all but {segment.path} may be deleted")
        return
    if earlier:
        say(f"{segment.name}: removed the Tune directories of {len(earlier)} earlier drivers")


def _files(fs: pafs.FileSystem, directory: str) -> dict[str, tuple[int, object]]:
    """Every file below ``directory``: path -> (size, modification time)."""
    infos = fs.get_file_info(pafs.FileSelector(directory, recursive=True, allow_not_found=True))
    return {i.path: (i.size, i.mtime) for i in infos if i.type == pafs.FileType.File}


def _names_in(fs: pafs.FileSystem, path: str) -> set[tuple[str, str]] | None:
    """The project's classes a state file names (``_globals``), or None when it does not parse
    to its end: the experiment state is JSON (naming none), the others are pickles
    (search_gen_state's ".json" too)."""
    with fs.open_input_stream(path) as f:
        data = f.read()
    try:
        if path.rsplit("/", 1)[-1].startswith("experiment_state-"):
            json.loads(data)
            return set()
        return _globals(data)
    except ValueError:
        return None


CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)")


def logged_results(trial) -> list[dict]:
    """Every result Tune logged for the trial (its result.json on the storage), oldest first."""
    try:
        storage = trial.storage
        with storage.storage_filesystem.open_input_stream(f"{storage.trial_fs_path}/result.json") as f:
            return [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
    except (OSError, ValueError, AttributeError):
        return []


def resume_from_checkpoints_that_exist(trials, say, *, trust_log: bool = True) -> None:
    """Point every restored trial at a checkpoint that exists, before it runs again.

    Tune's snapshot lags its trials by a few seconds, and a trial keeps only its newest
    ``num_to_keep`` checkpoints: after a driver dies, the snapshot can name checkpoints deleted
    since (the one the trial would resume from among them: Tune then fails the trial with
    "does not exist on storage anymore"), and not know newer ones. Each trial resumes from the
    newest checkpoint that exists among those its snapshot names and, with ``trust_log``, those
    its result.json names (a checkpoint is logged only once it was written whole); if none
    exists it restarts from epoch 0, said through ``say(trial, message)``. Checkpoint
    directories newer than the one it resumes from (uploads cut off mid-way, or, without
    ``trust_log``, ones the snapshot never recorded: on object storage a driver that lost the
    sweep may have written them) are removed, the deleted ones forgotten (else Tune deletes
    them again as the trial goes on: FileNotFoundError, an ERROR traceback, the rest of its
    bookkeeping skipped), and the next checkpoint is numbered after the one it resumes from."""
    from ray.train.constants import CHECKPOINT_DIR_NAME
    from ray.tune import Checkpoint

    for trial in trials:
        if trial.status == "TERMINATED":
            continue  # runs no more
        manager, storage = trial.run_metadata.checkpoint_manager, trial.storage
        fs = storage.storage_filesystem
        on_storage = {e.path for e in fs.get_file_info(pafs.FileSelector(storage.trial_fs_path,
                                                                         allow_not_found=True))
                      if e.type == pafs.FileType.Directory and _index(e.path) >= 0}
        latest = internals.latest_checkpoint_result(manager)
        known = {r.checkpoint.path: r
                 for r in [*internals.checkpoint_results(manager), *([latest] if latest else [])]}
        logged = {}
        for result in logged_results(trial) if trust_log else ():
            if name := result.get(CHECKPOINT_DIR_NAME):
                path = f"{storage.trial_fs_path}/{name}"
                logged[path] = internals.training_result(Checkpoint(path, fs), result)
        candidates = {**logged, **known}  # the snapshot's own records where it has them
        exists = sorted((p for p in candidates if p in on_storage), key=_index)
        resume = _index(exists[-1]) if exists else -1
        for path in on_storage:
            if _index(path) > resume:
                fs.delete_dir(path)
        if not candidates:
            continue  # never checkpointed: starts from epoch 0 anyway
        # what Tune keeps (it deletes the oldest as new ones come) and resumes from
        internals.set_checkpoint_results(manager, [candidates[p] for p in exists],
                                         candidates[exists[-1]] if exists else None)
        trial.run_metadata.invalidate_cache()
        if not exists:
            say(trial, "none of its checkpoints is left on the storage; restarted from epoch 0")
            continue
        storage.current_checkpoint_index = resume
        if latest is None or latest.checkpoint.path != exists[-1]:
            named = "none" if latest is None else _name(latest.checkpoint.path)
            state = "" if latest is None else (", gone" if latest.checkpoint.path not in exists else ", older")
            say(trial, f"resuming from {_name(exists[-1])}, the newest checkpoint on the storage "
                       f"(Tune's snapshot named {named}{state})")


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _index(path: str) -> int:
    m = CHECKPOINT_DIR.fullmatch(_name(path))
    return int(m[1]) if m else -1
