"""Tune's snapshot before a restore: torn ones set aside whole, deleted checkpoints forgotten."""

import pickle

import pytest

from search.sweep.files import Segment, SweepDir
from search.tune.tune_state import resume_from_checkpoints_that_exist, set_aside_unreadable_state


def test_a_torn_tune_snapshot_is_set_aside_whole(tmp_path):
    tune_dir = tmp_path / "s" / "tune-1"
    tune_dir.mkdir(parents=True)
    for stamp in ("2026-01-01_00-00-00", "2026-01-01_00-05-00"):
        (tune_dir / f"experiment_state-{stamp}.json").write_text('{"trials": []}')
        (tune_dir / f"search_gen_state-{stamp}.json").write_bytes(pickle.dumps({}))  # as Tune does
        (tune_dir / f"searcher-state-{stamp}.pkl").write_bytes(pickle.dumps({"trials": [1, 2]}))
    newest = tune_dir / "searcher-state-2026-01-01_00-05-00.pkl"
    newest.write_bytes(newest.read_bytes()[:-5])  # the disk filled while Tune copied it
    said = []
    set_aside_unreadable_state(SweepDir(str(tmp_path), "s"), Segment("tune-1", 2), say=said.append)
    names = sorted(p.name for p in tune_dir.iterdir())
    assert [n for n in names if "00-05-00" in n] == [
        "experiment_state-2026-01-01_00-05-00.json.unreadable",
        "search_gen_state-2026-01-01_00-05-00.json.unreadable",
        "searcher-state-2026-01-01_00-05-00.pkl.unreadable"]
    assert not any(n.endswith(".unreadable") for n in names if "00-00-00" in n)
    assert said == ["tune-1: Tune's snapshot 2026-01-01_00-05-00 is torn (searcher-state-2026-01-01_00-05-00.pkl; "
                    "kept as .unreadable); resuming from the one before it"]
    set_aside_unreadable_state(SweepDir(str(tmp_path), "s"), Segment("tune-1", 2), say=said.append)
    assert len(said) == 1  # the intact snapshot stays


def test_checkpoints_deleted_after_tunes_snapshot_are_forgotten_before_the_resume(tmp_path):
    """Why Tune printed an ERROR traceback (FileNotFoundError deleting checkpoint_000000) on
    resume, and that it no longer can."""
    from types import SimpleNamespace

    import pyarrow.fs as pafs
    from ray.train import Checkpoint, CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager, _TrainingResult

    def checkpoint(n):
        path = tmp_path / f"checkpoint_{n:06d}"
        path.mkdir(exist_ok=True)
        return _TrainingResult(checkpoint=Checkpoint.from_directory(str(path)), metrics={"epoch": n})

    def snapshot_then_two_more_checkpoints():
        manager = _CheckpointManager(CheckpointConfig(num_to_keep=2))
        manager.register_checkpoint(checkpoint(0))
        manager.register_checkpoint(checkpoint(1))  # Tune's snapshot is taken here ...
        (tmp_path / "checkpoint_000000").rmdir()  # ... and checkpoint 2 made Tune delete 0
        return manager

    stale = snapshot_then_two_more_checkpoints()  # the resumed trial reports checkpoint 2 again
    with pytest.raises(FileNotFoundError):
        stale.register_checkpoint(checkpoint(2))

    manager = snapshot_then_two_more_checkpoints()
    trial = SimpleNamespace(
        status="PENDING", run_metadata=SimpleNamespace(checkpoint_manager=manager, invalidate_cache=list),
        storage=SimpleNamespace(storage_filesystem=pafs.LocalFileSystem(), trial_fs_path=str(tmp_path),
                                current_checkpoint_index=1))
    resume_from_checkpoints_that_exist([trial], say=None)  # nothing to say: it resumes from 1
    manager.register_checkpoint(checkpoint(2))
    manager.register_checkpoint(checkpoint(3))  # deletes checkpoint 1, which exists
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000002", "checkpoint_000003"]
