"""What the sweep tests share: the command of a small real sweep, its environment, and checks of
what it left in its storage."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from trainer.status import NOT_COUNTED, Status


SWEEP_ARGS = ["--dataset", "digits", "--budget", "30K", "--min-blocks", "1", "--max-blocks", "2",
              "--channel-multiple", "4", "--method", "pgd_at", "--steps", "1",
              "--val-size", "200", "--max-concurrent", "2", "--cpus-per-trial", "1"]


def sweep_command(storage, name, *args) -> list[str]:
    return [sys.executable, "-m", "search.run", "--storage", str(storage), "--name", name,
            *SWEEP_ARGS, *args]


def sweep_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TUNE_GLOBAL_CHECKPOINT_S": "1", **extra}


TERMINAL = set(Status) - {Status.RUNNING} - NOT_COUNTED


def run(cmd, timeout=400, **env):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=sweep_env(**env))


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def check_database(storage: Path, name: str, n_trials: int, epochs: int, budget: int = 30_000):
    """The invariants every sweep's database keeps, whatever happened to the sweep."""
    from search.db import load_epochs, load_trials
    from space_defs import WRNConfig, param_count

    trials = load_trials(storage, name)
    assert trials["trial_id"].is_unique
    trials = trials[~trials["status"].isin(NOT_COUNTED)]  # replaced or rerun, kept for the record
    assert len(trials) == n_trials and set(trials["status"]) <= TERMINAL
    for row in trials.to_dict("records"):
        assert abs(param_count(WRNConfig.from_dict(row)) / budget - 1) <= 0.01
        assert row["epochs_done"] == epochs or row["status"] != "finished"
    rows = load_epochs(storage, name)
    assert not rows.duplicated(["trial_id", "epoch"]).any()
    per_trial = rows.groupby("trial_id")["epoch"].agg(["min", "max", "count"])
    assert (per_trial["min"] == 1).all() and (per_trial["max"] == per_trial["count"]).all()
    return trials, rows


def wait_for(predicate, timeout=240, every=0.5):
    """Poll until ``predicate()`` returns something truthy; that value, or None on timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if _ready(value):
            return value
        time.sleep(every)
    return None


def _ready(value) -> bool:
    if value is None:
        return False
    try:
        return bool(value)
    except ValueError:  # a DataFrame: something was returned
        return True


def epochs_so_far(storage: Path, name: str):
    from search.db import load_epochs

    if not (storage / name / "db" / "epochs").exists():
        return None
    return load_epochs(storage, name)


def interrupted_trials(storage, name: str):
    """After a driver was killed: (the epochs table, the trials the database shows running with
    two or more epochs done, i.e. with an epoch checkpoint in Tune's snapshot to continue from)."""
    from search.db import load_epochs, load_trials

    before = load_epochs(storage, name)
    status = load_trials(storage, name).set_index("trial_id")["status"]
    return before, [t for t, n in before.groupby("trial_id")["epoch"].max().items()
                    if n >= 2 and status[t] == "running"]


def snapshot_knows(experiment: Path, text: str) -> bool:
    """Whether Tune's newest snapshot of ``experiment`` (its experiment_state file on the
    storage) mentions ``text``, e.g. a trial's checkpoint directory."""
    states = sorted(experiment.glob("experiment_state-*.json"))
    return bool(states) and text in states[-1].read_text()


def check_confirmed(storage, name: str, seeds: set[int]):
    """A confirmed sweep's invariants: every (config, seed) trained once among the rows that
    count, confirmation runs on the seeds asked for, and every confirmed config on all of them
    (its search run on the first). The counted confirmation rows."""
    from search.db import load_trials
    from search.db.ranking import arch_label

    trials = load_trials(storage, name)
    trials = trials[~trials["status"].isin(NOT_COUNTED)].assign(arch=lambda t: arch_label(t))
    role = trials["role"].fillna("search")
    confirm = trials[role == "confirm"]
    assert len(confirm) and set(confirm["status"]) <= TERMINAL, trials
    assert set(confirm["seed"]) <= seeds and not confirm.duplicated(["arch", "seed"]).any(), confirm
    runs = trials[trials["arch"].isin(set(confirm["arch"])) & (trials["status"] != "stopped_early")]
    assert not runs.duplicated(["arch", "seed"]).any(), runs
    for arch, group in runs.groupby("arch"):
        assert set(group["seed"]) == seeds, (arch, group)
    return confirm
