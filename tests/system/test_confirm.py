"""--confirm on real sweeps (real Ray, real processes): the finalists and the uniform baseline
trained on more seeds as trials of the same sweep, through a kill -9 and an extension."""

from __future__ import annotations

import signal
import subprocess

from search.db import load_evals, load_trials
from tests.harness.sweeps import (check_confirmed, check_database, run, snapshot_knows,
                                  sweep_command, sweep_env, wait_for)

CONFIRM = ["--scheduler", "none", "--confirm", "2", "--confirm-seeds", "3", "--final-eval", "1",
           "--final-attacks", "clean,pgd20"]


def read_until(driver: subprocess.Popen, *texts: str) -> str:
    """The driver's stdout up to a line holding each of ``texts`` in turn."""
    seen: list[str] = []
    for text in texts:
        while not seen or text not in seen[-1]:
            line = driver.stdout.readline()
            assert line, f"the driver ended before {text!r}:\n" + "".join(seen)
            seen.append(line)
    return "".join(seen)


def test_killed_during_confirmation_resumes_exactly_and_an_extension_confirms_only_the_new(
        tmp_path, ray_address):
    cmd = sweep_command(tmp_path, "c", "--trials", "3", "--epochs", "3", "--address", ray_address,
                        *CONFIRM)
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env=sweep_env())
    try:
        said = read_until(driver, "starting confirm-2: ", "] finished after 3 epochs")
        # Tune's snapshot holds the confirmation runs given out so far: the rerun resumes it
        assert wait_for(lambda: snapshot_knows(tmp_path / "c" / "confirm-2", "train_trial_"))
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
    planned = said.split("starting confirm-2: ")[1].split(" confirmation runs")[0]
    before = load_trials(tmp_path, "c")
    assert (before["role"] == "confirm").sum() >= 1  # killed with confirmation under way

    out = run(cmd)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming confirm-2" in out.stdout and "starting confirm" not in out.stdout
    confirm = check_confirmed(tmp_path, "c", {0, 1, 2})
    assert len(confirm) == int(planned)
    trials, _ = check_database(tmp_path, "c", 3 + len(confirm), 3)
    assert (trials["role"] == "search").sum() == 3  # confirmation runs are not of --trials
    # the final evaluation: every seed of each confirmed config, its seed kept
    evals = load_evals(tmp_path, "c").merge(trials[["trial_id", "seed"]], on="trial_id",
                                            suffixes=("", "_trial"))
    assert (evals["seed"] == evals["seed_trial"]).all()
    assert set(confirm["trial_id"]) <= set(evals["trial_id"])
    assert "answer: " in out.stdout and "paired over 3 seeds" in out.stdout

    extended = run(sweep_command(tmp_path, "c", "--trials", "4", "--epochs", "3", "--address",
                                 ray_address, *CONFIRM))
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert "starting tune-3: 1 new trials" in extended.stdout
    again = check_confirmed(tmp_path, "c", {0, 1, 2})
    kept = again.merge(confirm, on="trial_id")
    assert len(kept) == len(confirm) and (kept["updated_at_x"] == kept["updated_at_y"]).all()
    new = again[~again["trial_id"].isin(confirm["trial_id"])]
    # the new trial, if it is now a finalist, is trained on the other seeds; nothing else is
    assert len(new) in (0, 2) and new["arch"].nunique() <= 1, new
    assert ("starting confirm-4: 2 confirmation runs" in extended.stdout) == (len(new) == 2)
    check_database(tmp_path, "c", 4 + len(again), 3)
