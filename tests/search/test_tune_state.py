"""Tune's snapshot before a restore: torn ones set aside whole, deleted checkpoints forgotten,
the classes it names found where they are now or refused in one line."""

import importlib
import pickle
import pickletools
import sys

import pytest

from search.sweep.files import Segment, SweepDir
from search.tune.tune_state import (MOVED, _globals, check_tune_state, resolve_moved_names,
                                    resume_from_checkpoints_that_exist)
from space_defs.cli import UsageError


def pickled_under(old_module: str, obj, *classes, monkeypatch):
    """``obj`` pickled as Tune pickles it (protocol 5), its ``classes`` named by ``old_module``,
    as the code before they moved wrote them."""
    with monkeypatch.context() as m:
        for cls in classes:
            m.setattr(cls, "__module__", old_module)
        return pickle.dumps(obj, protocol=5)


def test_tune_state_pickled_before_the_classes_moved_loads_them_from_where_they_are(monkeypatch):
    from search.run import build_spec, parser
    from search.tune.recorder import SweepRecorder

    resolve_moved_names()
    for old, names in MOVED.items():
        for name, new in names.items():
            cls = getattr(importlib.import_module(new), name)
            data = pickled_under(old, cls, cls, monkeypatch=monkeypatch)
            assert _globals(data) == {(old, name)}
            assert pickle.loads(data) is cls
            with monkeypatch.context() as m:
                m.delitem(sys.modules, old)
                with pytest.raises(ModuleNotFoundError, match=old):
                    pickle.loads(data)  # what a sweep started before the move met on resume

    spec = build_spec(parser().parse_args(["--dataset", "digits", "--budget", "30K"]))
    recorder = pickle.loads(pickled_under("search.recorder", SweepRecorder(spec, "/runs"), SweepRecorder,
                                          monkeypatch=monkeypatch))
    assert type(recorder) is SweepRecorder and (recorder.spec, recorder.storage) == (spec, "/runs")


def test_the_names_a_pickle_gives_are_read_without_loading_it_memo_included(monkeypatch):
    from search.tune.searchers import DefineByRun, StudySearch

    data = pickled_under("search.tuner", [DefineByRun, StudySearch, dict], DefineByRun, StudySearch,
                         monkeypatch=monkeypatch)
    assert "BINGET" in {op.name for op, _, _ in pickletools.genops(data)}  # the module's name, again
    assert _globals(data) == {("search.tuner", "DefineByRun"), ("search.tuner", "StudySearch")}
    assert _globals(b"csearch.gone\nThing\n.") == {("search.gone", "Thing")}  # protocol 0
    with pytest.raises(ValueError):
        _globals(data[:-3])  # torn: check_tune_state sets its snapshot aside


def test_a_tune_state_naming_a_class_this_version_lacks_is_refused_before_the_restore(tmp_path, monkeypatch):
    from search.tune.searchers import SweepSearch

    tune_dir = tmp_path / "s" / "tune-1"
    tune_dir.mkdir(parents=True)
    sweep, segment = SweepDir(str(tmp_path), "s"), Segment("tune-1", 2)
    (tune_dir / "train_trial_1").mkdir()  # a trial's directory, before Tune's first snapshot
    check_tune_state(sweep, segment)
    (tune_dir / "tuner.pkl").write_bytes(pickled_under("search.tuner", SweepSearch, SweepSearch,
                                                       monkeypatch=monkeypatch))
    (tune_dir / "searcher-state-2026-01-01_00-00-00.pkl").write_bytes(pickle.dumps({"a": dict}))
    check_tune_state(sweep, segment)  # moved, and found

    (tune_dir / "searcher-state-2025-12-31_00-00-00.pkl").write_bytes(b"csearch.tune.searchers\nGone\n.")
    check_tune_state(sweep, segment)  # an older snapshot, which Tune does not restore
    (tune_dir / "searcher-state-2026-01-01_00-00-00.pkl").write_bytes(b"csearch.tune.searchers\nGone\n.")
    with pytest.raises(UsageError) as refused:
        check_tune_state(sweep, segment)
    assert str(refused.value) == (
        "tune-1: its Tune state (searcher-state-2026-01-01_00-00-00.pkl) names search.tune.searchers.Gone, "
        "which this version of robust-arch-search does not have: the sweep was started by another "
        "version; resume it with that one, or run this one under another --name")


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
    check_tune_state(SweepDir(str(tmp_path), "s"), Segment("tune-1", 2), say=said.append)
    names = sorted(p.name for p in tune_dir.iterdir())
    assert [n for n in names if "00-05-00" in n] == [
        "experiment_state-2026-01-01_00-05-00.json.unreadable",
        "search_gen_state-2026-01-01_00-05-00.json.unreadable",
        "searcher-state-2026-01-01_00-05-00.pkl.unreadable"]
    assert not any(n.endswith(".unreadable") for n in names if "00-00-00" in n)
    assert said == ["tune-1: Tune's snapshot 2026-01-01_00-05-00 is torn (searcher-state-2026-01-01_00-05-00.pkl; "
                    "kept as .unreadable); resuming from the one before it"]
    check_tune_state(SweepDir(str(tmp_path), "s"), Segment("tune-1", 2), say=said.append)
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
