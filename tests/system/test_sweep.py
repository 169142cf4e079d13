"""search.run end to end on a real local Ray: run, extend, refuse changes, resume after SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest

from search.db import load_evals, load_trials

from tests.harness.sweeps import (check_database, epochs_so_far, interrupted_trials, run, snapshot,
                       sweep_command, sweep_env, wait_for)


def study_trials(storage: Path, name: str):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    backend = JournalFileBackend(str(storage / name / "optuna.journal"))
    return optuna.load_study(study_name=name, storage=JournalStorage(backend)).trials


def test_sweep_extend_and_refuse_changes(tmp_path, ray_address):
    first = run(sweep_command(tmp_path, "s1", "--trials", "3", "--epochs", "2",
                              "--address", ray_address, "--final-eval", "1",
                              "--final-attacks", "clean,pgd20"))
    assert first.returncode == 0, first.stderr[-3000:]
    trials, _ = check_database(tmp_path, "s1", 3, 2)
    evals = load_evals(tmp_path, "s1").set_index("attack")
    robust = trials[trials.status == "finished"].set_index("trial_id")["best_val_robust_acc"]
    (evaluated,) = evals["trial_id"].unique()
    assert robust[evaluated] == robust.max()  # the most robust (one of them, on a tie)
    assert evals.loc["pgd20", "accuracy"] <= evals.loc["clean", "accuracy"]
    assert (evals["n_examples"] == 397).all() and (evals["split"] == "test").all()
    assert (evals["attack_seconds"] > 0).all() and (evals["eps"] == 0.2).all()  # each attack's own
    assert (evals["protocol"] == "default").all() and evals.loc["pgd20", "steps"] == 20
    assert evals.loc["pgd20", "step_size"] == 0.05 and evals.loc["clean", "steps"] == 0
    assert f"[{evaluated}] pgd20: " in first.stdout  # progress as each attack finishes
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
    robust = trials[trials.status == "finished"].set_index("trial_id")["best_val_robust_acc"]
    new = set(after["trial_id"]) - {evaluated}
    assert evaluated in set(after["trial_id"]) and len(new) <= 1
    assert robust[(new or {evaluated}).pop()] == robust.max()  # top 1 of all 5 now evaluated
    assert not after.duplicated(["trial_id", "attack", "split"]).any()
    kept = after.merge(evals.reset_index(), on=["trial_id", "attack"])
    assert (kept["recorded_at_x"] == kept["recorded_at_y"]).all()  # not evaluated twice

    seeds = run(sweep_command(tmp_path, "s1", "--trials", "5", "--epochs", "2",
                              "--address", ray_address, "--final-eval", "1",
                              "--final-attacks", "clean,pgd20", "--final-protocol", "robustwrn"))
    assert seeds.returncode == 0 and "(robustwrn protocol)" in seeds.stdout, seeds.stderr[-3000:]
    both = load_evals(tmp_path, "s1")
    theirs = both[both["protocol"] == "robustwrn"].set_index("attack")
    assert len(theirs) == 2 and theirs.loc["pgd20", "step_size"] == pytest.approx(0.02)  # eps / 10
    assert len(both[both["protocol"] == "default"]) == len(after)  # the default's rows kept


def test_resume_after_sigkill_of_the_driver(tmp_path, ray_address):
    cmd = sweep_command(tmp_path, "k", "--trials", "3", "--epochs", "8", "--address", ray_address,
                        "--scheduler", "none")
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=sweep_env())

    def progressed():
        rows = epochs_so_far(tmp_path, "k")
        counts = rows.groupby("trial_id")["epoch"].max() if rows is not None else None
        return counts is not None and (counts >= 3).any() and (counts < 8).any()

    assert wait_for(progressed), "the sweep made no progress to interrupt"
    time.sleep(2)  # let Tune's experiment state (every 1 s here) record the latest checkpoints
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=60)
    before, interrupted = interrupted_trials(tmp_path, "k")
    assert interrupted
    status = load_trials(tmp_path, "k").set_index("trial_id")["status"]

    resumed = run(cmd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming tune-1" in resumed.stdout
    trials, after = check_database(tmp_path, "k", 3, 8)
    assert set(trials["status"]) <= {"finished", "catastrophic_overfit"}  # none lost or failed
    for trial_id in interrupted:
        old = before[before.trial_id == trial_id].set_index("epoch")["recorded_at"]
        new = after[after.trial_id == trial_id].set_index("epoch")["recorded_at"]
        assert new[1] == old[1], "an interrupted trial restarted from scratch"
        # it trained on after the resume, unless it had trained its last epoch before the kill
        assert new.index.max() > old.index.max() or status[trial_id] != "running" or old.index.max() == 8
