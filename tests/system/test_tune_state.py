"""A trial resumes from its newest checkpoint that exists, on a real Ray."""

import tempfile
from pathlib import Path

import pytest
from ray import tune

from search.tune.tune_state import resume_from_checkpoints_that_exist


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
