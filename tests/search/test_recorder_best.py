"""The recorder's "best so far" and best columns: seeded from the database, and chosen by the
trainer's model-selection rule (in process, no Ray cluster)."""

from types import SimpleNamespace

from search.db.store import TrialStore, load_trials
from search.tune.recorder import SweepRecorder
from search.spec import demo
from space_defs import baselines

from .db.test_store import epoch, trial


def _result(epoch_no, robust, clean):
    return {"epoch": epoch_no, "val_robust_acc": robust, "val_clean_acc": clean, "epoch_seconds": 1.0,
            "train_seconds": 0.8, "eval_seconds": 0.2, "trial_status": "running", "note": ""}


def test_best_so_far_continues_from_the_database_and_best_columns_follow_the_rule(tmp_path, capsys):
    spec = demo(name="s", recipe={"method": "standard"}, gpus_per_trial=0.0)  # as the driver resolves it
    with TrialStore(str(tmp_path), "s") as store:  # an earlier driver run's trial
        store.write(trials=[trial(trial_id="t0")], epochs=[epoch("t0", 1, 0.5), epoch("t0", 2, 0.3)])
    recorder = SweepRecorder(spec, str(tmp_path))
    t1 = SimpleNamespace(trial_id="t1", config=baselines(spec.budget, space=spec.search_space())[0].to_dict())
    recorder.on_trial_start(0, [], t1)
    recorder.on_trial_result(0, [], t1, _result(1, 0.40, 0.90))
    recorder.on_trial_result(0, [], t1, _result(2, 0.10, 0.95))  # standard: selected by clean
    assert "best so far" not in capsys.readouterr().out  # 40% is below the sweep's 50%
    recorder.on_trial_result(0, [], t1, _result(3, 0.60, 0.80))
    assert "best so far: 60.0% val robust" in capsys.readouterr().out
    recorder.writer.drain()
    row = load_trials(str(tmp_path), "s").set_index("trial_id").loc["t1"]
    assert (row.best_val_robust_epoch, row.best_val_clean_acc, row.best_val_robust_acc) == (2, 0.95, 0.10)
