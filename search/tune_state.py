"""Tune's driver snapshot, checked before a restore.

Tune rewrites its driver state (experiment, search generator, searcher, callbacks; one file each,
stamped per run) in place and copies it to storage without a rename, so a full disk or a kill
mid-write leaves a snapshot torn, and Tune then fails or silently starts over.
"""

from __future__ import annotations

import dataclasses
import json
import pickletools
import re
from concurrent.futures import ThreadPoolExecutor

import pyarrow.fs as pafs

from .sweepdir import Segment, SweepDir

TUNE_STATE = re.compile(r"(experiment_state|search_gen_state|searcher-state|callback-states)-(.+)\.(json|pkl)")


def set_aside_unreadable_state(sweep: SweepDir, segment: Segment, say=print) -> None:
    """Newest first, move a snapshot with any torn file aside, whole, so that the restore
    uses the newest intact one."""
    entries = sweep.fs.get_file_info(pafs.FileSelector(f"{sweep.path}/{segment.path}",
                                                       allow_not_found=True))
    snapshots: dict[str, list[str]] = {}
    for e in entries:
        if m := TUNE_STATE.fullmatch(e.base_name):
            snapshots.setdefault(m[2], []).append(e.path)
    for stamp in sorted(snapshots, reverse=True):
        torn = [p.rsplit("/", 1)[-1] for p in snapshots[stamp] if not _intact(sweep.fs, p)]
        if not torn:
            return
        for path in snapshots[stamp]:
            sweep.fs.move(path, path + ".unreadable")
        say(f"{segment.name}: Tune's snapshot {stamp} is torn ({', '.join(sorted(torn))}; kept as "
            ".unreadable); resuming from the one before it")


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


def _files(fs: pafs.FileSystem, directory: str) -> dict[str, tuple[int, object]]:
    """Every file below ``directory``: path -> (size, modification time)."""
    infos = fs.get_file_info(pafs.FileSelector(directory, recursive=True, allow_not_found=True))
    return {i.path: (i.size, i.mtime) for i in infos if i.type == pafs.FileType.File}


def drop_checkpoints_after_snapshot(trials) -> None:
    """Checkpoint directories of a restored trial newer than the newest its snapshot knows:
    uploads that Tune's snapshot never recorded (the trial reported after it, or was still
    uploading when its driver was cut off). Removed before the trial runs again, so that its
    next checkpoint, which gets the same number, is not mixed with their files."""
    for trial in trials:
        if trial.status == "TERMINATED":
            continue
        manager = getattr(getattr(trial, "run_metadata", None), "checkpoint_manager", None)
        latest = getattr(manager, "_latest_checkpoint_result", None)
        storage = getattr(trial, "storage", None)
        if storage is None:
            continue
        newest = _checkpoint_number(latest.checkpoint.path) if latest is not None else -1
        fs = storage.storage_filesystem
        entries = fs.get_file_info(pafs.FileSelector(storage.trial_fs_path, allow_not_found=True))
        for entry in entries:
            number = _checkpoint_number(entry.path)
            if entry.type == pafs.FileType.Directory and number > newest:
                fs.delete_dir(entry.path)


def _checkpoint_number(path: str) -> int:
    m = re.fullmatch(r"checkpoint_(\d+)", path.rstrip("/").rsplit("/", 1)[-1])
    return int(m[1]) if m else -1


def _intact(fs: pafs.FileSystem, path: str) -> bool:
    """Whether a state file parses to its end: the experiment state is JSON, the others are
    pickles (search_gen_state's ".json" too), walked with pickletools, never loaded."""
    with fs.open_input_stream(path) as f:
        data = f.read()
    try:
        if path.rsplit("/", 1)[-1].startswith("experiment_state-"):
            json.loads(data)
        else:
            for _ in pickletools.genops(data):
                pass
        return True
    except ValueError:
        return False


def forget_deleted_checkpoints(trials) -> None:
    """Tune's snapshot can remember trial checkpoints deleted after it was taken (a trial keeps
    the newest ``num_to_keep``, and the snapshot lags behind by a few seconds); a resumed trial's
    next checkpoint would make Tune delete them again, fail with FileNotFoundError, log an ERROR
    traceback and skip the rest of its bookkeeping for that checkpoint. Before the restored
    trials run again, drop such checkpoints from their records (one file-info call per
    remembered checkpoint; the newest one, which the trial resumes from, is kept whatever)."""
    for trial in trials:
        if trial.status == "TERMINATED":
            continue  # reports nothing more, so deletes nothing
        manager = getattr(getattr(trial, "run_metadata", None), "checkpoint_manager", None)
        remembered = list(getattr(manager, "_checkpoint_results", None) or [])
        latest = getattr(manager, "_latest_checkpoint_result", None)
        keep = latest.checkpoint.path if latest is not None else None
        older = [r for r in remembered if r.checkpoint.path != keep]
        if not older:
            continue
        infos = older[0].checkpoint.filesystem.get_file_info([r.checkpoint.path for r in older])
        gone = {r.checkpoint.path for r, info in zip(older, infos)
                if info.type == pafs.FileType.NotFound}
        if gone:
            manager._checkpoint_results = [r for r in remembered if r.checkpoint.path not in gone]
