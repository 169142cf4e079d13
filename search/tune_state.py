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
