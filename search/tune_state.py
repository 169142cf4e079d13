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


CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)")


def logged_results(trial) -> list[dict]:
    """Every result Tune logged for the trial (its result.json on the storage), oldest first."""
    try:
        storage = trial.storage
        with storage.storage_filesystem.open_input_stream(f"{storage.trial_fs_path}/result.json") as f:
            return [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
    except (OSError, ValueError, AttributeError):
        return []


def resume_from_checkpoints_that_exist(trials, say) -> None:
    """Point every restored trial at checkpoints that exist, before it runs again.

    Tune's snapshot lags its trials by a few seconds, and a trial keeps only its newest
    ``num_to_keep`` checkpoints: after a driver dies, the snapshot can name checkpoints deleted
    since (the one the trial would resume from among them: Tune then fails the trial with
    "does not exist on storage anymore"), and not know newer ones. Each trial resumes from the
    newest checkpoint that exists among those its snapshot or its result.json names (a
    checkpoint is logged only once it was written whole), or, if none exists, restarts from
    epoch 0, said through ``say(trial, message)``. The deleted ones are forgotten (else the
    trial's next checkpoint makes Tune delete them again: FileNotFoundError, an ERROR traceback,
    the rest of its bookkeeping skipped), and the next checkpoint is numbered after every one
    that exists, so none is overwritten."""
    from ray.train._internal.checkpoint_manager import _TrainingResult
    from ray.train.constants import CHECKPOINT_DIR_NAME
    from ray.tune import Checkpoint

    for trial in trials:
        if trial.status == "TERMINATED":
            continue  # runs no more
        manager, storage = trial.run_metadata.checkpoint_manager, trial.storage
        fs = storage.storage_filesystem
        latest = manager._latest_checkpoint_result
        known = {r.checkpoint.path: r for r in [*manager._checkpoint_results, *([latest] if latest else [])]}
        logged = {}
        for result in logged_results(trial):
            if name := result.get(CHECKPOINT_DIR_NAME):
                path = f"{storage.trial_fs_path}/{name}"
                logged[path] = _TrainingResult(checkpoint=Checkpoint(path, fs), metrics=result)
        candidates = {**logged, **known}  # the snapshot's own records where it has them
        if not candidates:
            continue  # never checkpointed: starts from epoch 0 anyway
        infos = fs.get_file_info(list(candidates))
        exists = sorted((p for p, info in zip(candidates, infos) if info.type != pafs.FileType.NotFound),
                        key=_index)
        manager._checkpoint_results = [candidates[p] for p in exists]  # Tune deletes the oldest
        manager._latest_checkpoint_result = candidates[exists[-1]] if exists else None
        trial.run_metadata.invalidate_cache()
        if not exists:
            say(trial, "none of its checkpoints is left on the storage; restarted from epoch 0")
            continue
        storage.current_checkpoint_index = max(storage.current_checkpoint_index, _index(exists[-1]))
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
