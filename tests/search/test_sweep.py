"""search.run end to end on a real local Ray: run, extend, refuse changes, resume after SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest

from search.store import load_epochs, load_evals, load_trials
from space_defs import WRNConfig, param_count

from .conftest import sweep_command, sweep_env

TERMINAL = {"finished", "stopped_early", "failed", "diverged", "catastrophic_overfit"}


def run(cmd, timeout=400):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=sweep_env())


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def study_trials(storage: Path, name: str):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    backend = JournalFileBackend(str(storage / name / "optuna.journal"))
    return optuna.load_study(study_name=name, storage=JournalStorage(backend)).trials


def check_database(storage: Path, name: str, n_trials: int, epochs: int):
    trials = load_trials(storage, name)
    assert len(trials) == n_trials and trials["trial_id"].is_unique
    assert set(trials["status"]) <= TERMINAL
    for row in trials.to_dict("records"):
        assert abs(param_count(WRNConfig.from_dict(row)) / 30_000 - 1) <= 0.01
        assert row["epochs_done"] == epochs or row["status"] != "finished"
    rows = load_epochs(storage, name)
    assert not rows.duplicated(["trial_id", "epoch"]).any()
    per_trial = rows.groupby("trial_id")["epoch"].agg(["min", "max", "count"])
    assert (per_trial["min"] == 1).all() and (per_trial["max"] == per_trial["count"]).all()
    return trials, rows


def test_sweep_extend_and_refuse_changes(tmp_path, ray_address):
    first = run(sweep_command(tmp_path, "s1", "--trials", "3", "--epochs", "2",
                              "--address", ray_address, "--final-eval", "1",
                              "--final-attacks", "clean,pgd20"))
    assert first.returncode == 0, first.stderr[-3000:]
    trials, _ = check_database(tmp_path, "s1", 3, 2)
    evals = load_evals(tmp_path, "s1").set_index("attack")
    finished = trials[trials.status == "finished"]
    assert list(evals["trial_id"].unique()) == [
        finished.sort_values("best_val_robust_acc").trial_id.iloc[-1]]
    assert evals.loc["pgd20", "accuracy"] <= evals.loc["clean", "accuracy"]
    assert (evals["n_examples"] == 397).all() and (evals["split"] == "test").all()
    assert "best:" in first.stdout and "next: python -m search.query" in first.stdout
    # the two baselines (uniform and reduced last stage) ran first
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study_trials(tmp_path, "s1")) == 3

    before = snapshot(tmp_path)
    changed = run(sweep_command(tmp_path, "s1", "--trials", "3", "--epochs", "3",
                                "--address", ray_address, "--final-eval", "1"))
    assert changed.returncode == 2
    assert changed.stderr.count("\n") == 1 and "epochs: 2 -> 3" in changed.stderr
    assert snapshot(tmp_path) == before

    extended = run(sweep_command(tmp_path, "s1", "--trials", "5", "--epochs", "2",
                                 "--address", ray_address))
    assert extended.returncode == 0, extended.stderr[-3000:]
    check_database(tmp_path, "s1", 5, 2)
    assert json.loads((tmp_path / "s1" / "segments.json").read_text())[-1]["trials"] == 2
    complete = [t for t in study_trials(tmp_path, "s1") if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 5  # the new trials were sampled knowing the first three

    again = run(sweep_command(tmp_path, "s1", "--trials", "5", "--epochs", "2",
                              "--address", ray_address, "--final-eval", "1",
                              "--final-attacks", "clean,pgd20"))
    assert again.returncode == 0 and len(load_trials(tmp_path, "s1")) == 5
    after = load_evals(tmp_path, "s1")
    trials = load_trials(tmp_path, "s1")
    top = trials[trials.status == "finished"].sort_values("best_val_robust_acc").trial_id.iloc[-1]
    assert set(after["trial_id"]) == {evals["trial_id"].iloc[0], top}
    assert not after.duplicated(["trial_id", "attack", "split"]).any()
    kept = after.merge(evals.reset_index(), on=["trial_id", "attack"])
    assert (kept["recorded_at_x"] == kept["recorded_at_y"]).all()  # not evaluated twice


def test_resume_after_sigkill_of_the_driver(tmp_path, ray_address):
    cmd = sweep_command(tmp_path, "k", "--trials", "3", "--epochs", "8", "--address", ray_address,
                        "--scheduler", "none")
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=sweep_env())
    deadline = time.time() + 240
    progressed = None
    while time.time() < deadline and progressed is None:
        time.sleep(1)
        if (tmp_path / "k" / "db" / "epochs").exists():
            rows = load_epochs(tmp_path, "k")
            counts = rows.groupby("trial_id")["epoch"].max()
            if (counts >= 3).any() and (counts < 8).any():
                progressed = rows
    assert progressed is not None, "the sweep made no progress to interrupt"
    time.sleep(2)  # let Tune's experiment state (every 1 s here) record the latest checkpoints
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=60)
    before = load_epochs(tmp_path, "k")
    status = load_trials(tmp_path, "k").set_index("trial_id")["status"]
    interrupted = [t for t, n in before.groupby("trial_id")["epoch"].max().items()
                   if n >= 2 and status[t] == "running"]
    assert interrupted

    resumed = run(cmd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming tune-1" in resumed.stdout
    trials, after = check_database(tmp_path, "k", 3, 8)
    assert set(trials["status"]) <= {"finished", "catastrophic_overfit"}  # none lost or failed
    for trial_id in interrupted:
        old = before[before.trial_id == trial_id].set_index("epoch")["recorded_at"]
        new = after[after.trial_id == trial_id].set_index("epoch")["recorded_at"]
        assert new[1] == old[1], "an interrupted trial restarted from scratch"
        assert new.index.max() > old.index.max() or status[trial_id] != "running"


@pytest.mark.parametrize("args, message", [
    (["--budget", "36MB"], "invalid budget"),
    (["--dataset", "mnist"], "unknown dataset"),
    (["--epochs", "0"], "epochs"),
    (["--objectives", "val_robust_acc,speed"], "unknown objective"),
    (["--name", "../evil"], "invalid sweep name"),
    (["--budget", "1K"], "budget"),
])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, args, message):
    out = run(sweep_command(tmp_path, "bad", *args), timeout=120)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert not any(tmp_path.iterdir())
