"""Tune's snapshot before a restore: torn ones set aside whole, deleted checkpoints forgotten."""

import pickle
import tempfile
from pathlib import Path

import pytest
from ray import tune

from search.sweep.files import Segment, SweepDir
from search.sweep.tune_state import resume_from_checkpoints_that_exist, set_aside_unreadable_state


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


def count_to_eight(config):
    """A trial that checkpoints every step; its first attempt dies after step 4."""
    start, checkpoint = 0, tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start = int(Path(d, "step").read_text())
    for step in range(start + 1, 9):
        with tempfile.TemporaryDirectory() as d:
            Path(d, "step").write_text(str(step))
            tune.report({"step": step, "resumed_after": start},
                        checkpoint=tune.Checkpoint.from_directory(d))
        if step == 4 and not Path(config["died"]).exists():
            Path(config["died"]).touch()
            raise RuntimeError("the first attempt dies")


class Repair(tune.Callback):
    """What the recorder does at its first step; what it says is kept in ``said``."""

    said: list[str] = []

    def __init__(self):
        self.done = False

    def on_step_begin(self, iteration, trials, **info):
        if not self.done:
            self.done = True
            resume_from_checkpoints_that_exist(trials, lambda trial, message: self.said.append(message))


@pytest.fixture(scope="module")
def errored_experiment(tmp_path_factory, ray_address):
    """A Tune experiment whose one trial errored after checkpoints 2 and 3 (steps 3 and 4),
    the two it keeps, as its snapshot records."""
    import ray

    root = tmp_path_factory.mktemp("tune")
    ray.init(address=ray_address, logging_level="error", log_to_driver=False)
    tune.Tuner(count_to_eight, param_space={"died": str(root / "died")},
               run_config=tune.RunConfig(name="e", storage_path=str(root), verbose=0,
                                         callbacks=[Repair()],
                                         failure_config=tune.FailureConfig(max_failures=0),
                                         checkpoint_config=tune.CheckpointConfig(num_to_keep=2))).fit()
    yield root
    ray.shutdown()


@pytest.mark.system
@pytest.mark.parametrize("deleted, lagged, resumed_after, said", [
    (["checkpoint_000003"], False, 3,
     "resuming from checkpoint_000002, the newest checkpoint on the storage (Tune's snapshot "
     "named checkpoint_000003, gone)"),
    (["checkpoint_000002"], False, 4, None),
    (["checkpoint_000002", "checkpoint_000003"], False, 0,
     "none of its checkpoints is left on the storage; restarted from epoch 0"),
    (["checkpoint_000002", "checkpoint_000003"], True, 6,
     "resuming from checkpoint_000005, the newest checkpoint on the storage (Tune's snapshot "
     "named checkpoint_000003, gone)"),
], ids=["newest-deleted", "older-deleted", "both-deleted", "snapshot-lagging"])
def test_a_trial_resumes_from_its_newest_checkpoint_that_exists(errored_experiment, tmp_path,
                                                                 deleted, lagged, resumed_after, said):
    """The race behind a resumed trial that ended `failed` ("Could not recover from checkpoint
    as it does not exist on storage anymore"): the driver died after the trial deleted a
    checkpoint that Tune's last snapshot named. ``lagged``: the trial had also written
    checkpoints 4 and 5 (steps 5 and 6) that the snapshot never heard of."""
    import json
    import shutil

    shutil.copytree(errored_experiment / "e", tmp_path / "e")
    (trial,) = (tmp_path / "e").glob("count_to_eight_*")
    if lagged:
        log = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        for step in (5, 6):
            name = f"checkpoint_{step - 1:06d}"
            (trial / name).mkdir()
            (trial / name / "step").write_text(str(step))
            log.append({**log[-1], "step": step, "training_iteration": step,
                        "checkpoint_dir_name": name})
        (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in log))
    for name in deleted:
        shutil.rmtree(trial / name)
    Repair.said.clear()
    (result,) = tune.Tuner.restore(str(tmp_path / "e"), count_to_eight, resume_errored=True).fit()
    assert result.error is None and result.metrics["step"] == 8
    assert result.metrics["resumed_after"] == resumed_after
    assert Repair.said == ([said] if said else [])
    kept = sorted(p.name for p in trial.iterdir() if p.name.startswith("checkpoint_"))
    assert len(kept) == 2 and kept[-1] == result.checkpoint.path.rsplit("/", 1)[-1]
