"""Tune's driver snapshot, checked before a restore.

Tune rewrites its driver state (experiment, search generator, searcher, callbacks; one file each,
stamped per run) in place and copies it to storage without a rename, so a full disk or a kill
mid-write leaves a snapshot torn, and Tune then fails or silently starts over.
"""

from __future__ import annotations

import json
import pickletools
import re

import pyarrow.fs as pafs

from .sweepdir import Segment, SweepDir

TUNE_STATE = re.compile(r"(experiment_state|search_gen_state|searcher-state|callback-states)-(.+)\.(json|pkl)")


def set_aside_unreadable_state(sweep: SweepDir, segment: Segment, say=print) -> None:
    """Newest first, move a snapshot with any torn file aside, whole, so that the restore
    uses the newest intact one."""
    entries = sweep.fs.get_file_info(pafs.FileSelector(f"{sweep.path}/{segment.name}",
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
