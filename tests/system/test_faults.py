"""Fault injection on real sweeps (real Ray, real processes, CPU-sized trials): what survives."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search.db import load_evals, load_trials
from tests.harness import last_json

from tests.harness.faults import held, with_faults

from tests.harness.sweeps import (check_database, epochs_so_far, run, snapshot, snapshot_knows, sweep_command,
                       sweep_env, wait_for)



HARNESS = Path(__file__).parents[1] / "harness"


def started(driver: subprocess.Popen, text: str, timeout: float = 240) -> str:
    """Read the driver's stdout until a line containing ``text``; the output so far."""
    seen, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = driver.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"never saw {text!r}:\n{''.join(seen)}")


def popen(cmd, **env):
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=sweep_env(**env))


def test_trial_failures_are_recorded_and_the_sweep_goes_on(tmp_path, ray_address):
    cmd = sweep_command(tmp_path, "f", "--trials", "6", "--epochs", "3", "--scheduler", "none",
                        "--address", ray_address)
    out = run(with_faults(cmd, tmp_path,
                          {"at": "epoch", "epoch": 1, "action": "raise"},  # every retry fails again
                          {"at": "epoch", "epoch": 2, "action": "raise", "sticky": False},  # once
                          {"at": "epoch", "epoch": 1, "action": "oom"},
                          {"at": "start", "action": "diverge"}))
    assert out.returncode == 0, out.stderr[-3000:]
    trials, epochs = check_database(tmp_path, "f", 6, 3)
    by_status = trials.groupby("status")["trial_id"].apply(list).to_dict()
    assert len(by_status["diverged"]) == 1
    failed = trials[trials.status == "failed"].set_index("trial_id")["error"]
    assert len(failed) == 2
    assert sum("InjectedFault: injected failure after epoch" in e for e in failed) == 1
    assert sum("OutOfMemoryError" in e for e in failed) == 1
    oom = failed.index[failed.str.contains("OutOfMemoryError")][0]
    raised = failed.index[failed.str.contains("InjectedFault")][0]
    assert f"[{oom}] failed, retrying" not in out.stdout  # retrying cannot help: not retried
    assert out.stdout.count(f"[{raised}] failed, retrying") == 2  # FailureConfig(max_failures=2)
    # the trial that failed once was retried from its epoch-2 checkpoint and finished
    assert len(by_status["finished"]) == 3
    retried = [t for t in by_status["finished"] if f"[{t}] failed, retrying" in out.stdout]
    assert len(retried) == 1
    assert epochs[epochs.trial_id == retried[0]]["epoch"].tolist() == [1, 2, 3]


def test_sigkill_before_the_first_result(tmp_path, ray_address):
    cmd = sweep_command(tmp_path, "b", "--trials", "3", "--epochs", "2", "--address", ray_address)
    driver = popen(cmd)
    started(driver, "] started")
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=60)
    out = run(cmd)
    assert out.returncode == 0, out.stderr[-3000:]
    check_database(tmp_path, "b", 3, 2)


def test_sigkill_while_the_database_is_written(tmp_path, ray_address):
    cmd = sweep_command(tmp_path, "w", "--trials", "3", "--epochs", "3", "--address", ray_address)
    killed = run(with_faults(cmd, tmp_path, {"at": "db_write", "action": "kill", "nth": 6}))
    assert killed.returncode == -signal.SIGKILL
    torn = list((tmp_path / "w" / "db").rglob(".*.tmp"))
    assert torn, "the kill did not land inside a database write"
    epochs_before = epochs_so_far(tmp_path, "w")  # readers skip the torn write
    out = run(cmd)
    assert out.returncode == 0, out.stderr[-3000:]
    _, epochs = check_database(tmp_path, "w", 3, 3)
    assert len(epochs) >= len(epochs_before)


@pytest.mark.parametrize("old_order", [False, True], ids=["epochs-first", "trials-first-repaired"])
def test_sigkill_between_the_parts_of_one_flush(tmp_path, ray_address, old_order):
    """A flush writes one file per table; the driver is killed between the two files of the
    flush that records a trial's end. Epochs first (ours): the database never shows a trial
    ahead of its epoch rows. Trials first (the recorder before, on a slow store so that the
    last result and the end share a flush): it shows the finished trial ahead, and the resumed
    sweep repairs it. Either way the sweep ends exact."""
    from search.db import load_epochs

    cmd = sweep_command(tmp_path, "f", "--trials", "2", "--epochs", "2", "--scheduler", "none",
                        "--address", ray_address)
    killed = run(with_faults(cmd, tmp_path, {"at": "db_write", "action": "kill_between_parts",
                                             "status": "finished", "old_order": old_order}))
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    trials = load_trials(tmp_path, "f").set_index("trial_id")
    recorded = load_epochs(tmp_path, "f").groupby("trial_id")["epoch"].count()
    ahead = trials[trials["epochs_done"] > recorded.reindex(trials.index, fill_value=0)]
    if old_order:
        assert list(ahead["status"]) == ["finished"], trials
    else:
        assert ahead.empty, trials
    out = run(cmd)
    assert out.returncode == 0, out.stderr[-3000:]
    check_database(tmp_path, "f", 2, 2)


def test_sigkill_during_final_evaluation(tmp_path, ray_address):
    cmd = sweep_command(tmp_path, "e", "--trials", "3", "--epochs", "2", "--address", ray_address,
                        "--scheduler", "none", "--final-eval", "2", "--final-attacks", "clean,pgd20")
    killed = run(with_faults(cmd, tmp_path, {"at": "final_eval", "action": "kill", "nth": 1}))
    assert killed.returncode == -signal.SIGKILL
    first = load_evals(tmp_path, "e")
    assert first["trial_id"].nunique() == 1
    out = run(cmd)
    assert out.returncode == 0, out.stderr[-3000:]
    evals = load_evals(tmp_path, "e")
    assert evals["trial_id"].nunique() == 2 and len(evals) == 4
    kept = evals.merge(first, on=["trial_id", "attack"])
    assert len(kept) == 2 and (kept["recorded_at_x"] == kept["recorded_at_y"]).all()
    check_database(tmp_path, "e", 3, 2)


def test_a_corrupted_checkpoint_restarts_the_trial_and_says_so(tmp_path, ray_address):
    """A trial is held after epoch 3 (checkpoint_000002, epochs left) until Tune's snapshot
    names that checkpoint; the driver is killed, every checkpoint of the trial torn."""
    cmd = sweep_command(tmp_path, "c", "--trials", "2", "--epochs", "6", "--address", ray_address,
                        "--scheduler", "none")
    driver = popen(with_faults(cmd, tmp_path, {"at": "epoch", "epoch": 3, "action": "hold",
                                               "sticky": False}))
    claims = str(tmp_path / "claims")
    assert wait_for(lambda: held(claims)), "no trial reached epoch 3"
    (trial_id,) = [h["trial_id"] for h in held(claims)]
    assert wait_for(lambda: snapshot_knows(tmp_path / "c" / "tune-1", "checkpoint_000002"))
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=60)
    damaged = [p for p in (tmp_path / "c" / "tune-1").glob(f"*{trial_id}*/checkpoint_*/checkpoint.pt")]
    assert damaged
    for path in damaged:  # a torn upload: the first bytes only
        path.write_bytes(path.read_bytes()[:100])
    out = run(cmd)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"[{trial_id}] checkpoint unreadable" in out.stdout
    trials, _ = check_database(tmp_path, "c", 2, 6)
    assert set(trials["status"]) <= {"finished", "catastrophic_overfit"}


def test_a_second_driver_on_the_same_sweep_is_refused(tmp_path, ray_address):
    cmd = sweep_command(tmp_path, "x", "--trials", "2", "--epochs", "3", "--address", ray_address)
    first = popen(cmd)
    started(first, "starting tune-1")
    before = snapshot(tmp_path / "x")
    second = run(cmd, timeout=120)
    assert second.returncode == 2 and "being run by another driver" in second.stderr
    assert second.stderr.strip().count("\n") == 0
    other = run(sweep_command(tmp_path, "y", "--trials", "1", "--epochs", "1",
                              "--address", ray_address))
    assert other.returncode == 0, other.stderr[-3000:]  # another name runs side by side
    assert first.wait(timeout=300) == 0
    assert {k for k in before if "db/" not in k and "tune-1" not in k} <= set(snapshot(tmp_path / "x"))
    check_database(tmp_path, "x", 2, 3)
    check_database(tmp_path, "y", 1, 1)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs of its own, to fill up and to make read-only."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"needs permission to mount a tmpfs ({mounted.stderr.strip()})")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk) -> None:
    with open(disk / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass


def test_full_then_read_only_storage(small_disk, ray_address):
    cmd = sweep_command(small_disk, "d", "--trials", "3", "--epochs", "8", "--scheduler", "none",
                        "--address", ray_address)
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=sweep_env())
    assert wait_for(lambda: (rows := epochs_so_far(small_disk, "d")) is not None and len(rows) >= 2)
    fill(small_disk)
    _, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 2
    assert stderr.strip().splitlines()[-1].startswith("error: cannot write the trial database")
    assert not list((small_disk / "d" / "db").rglob(".*.tmp"))  # no torn write left behind
    rows = epochs_so_far(small_disk, "d")  # what was written is intact and readable
    assert rows is not None and not rows.duplicated(["trial_id", "epoch"]).any()

    (small_disk / "filler").unlink()
    resumed = run(cmd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    check_database(small_disk, "d", 3, 8)

    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    before = snapshot(small_disk)
    refused = run(sweep_command(small_disk, "d", "--trials", "4", "--epochs", "8", "--scheduler",
                                "none", "--address", ray_address))
    assert refused.returncode == 2 and "cannot write to the sweep directory" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0
    assert snapshot(small_disk) == before
    query = run([sys.executable, "-m", "search.query", "best", "--storage", str(small_disk)])
    assert query.returncode == 0 and "most robust" in query.stdout


def test_losing_a_worker_node_mid_trial(tmp_path):
    """A Ray cluster of three worker nodes on this machine (ray.cluster_utils.Cluster, in a
    process of its own so Ray starts with a clean configuration, tests/harness/node_loss.py).
    Each trial loses its node while it provably has epochs left (held after a given epoch, not
    after some time) and fails once by its own error: trial A first by its own error, then by
    losing its node; trial B the other way round. Each failure is told for what it is, only the
    own errors count against the trial's retries, and each retry continues from the trial's
    last checkpoint."""
    script = HARNESS / "node_loss.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                         text=True, timeout=600,
                         env={k: v for k, v in sweep_env().items() if not k.startswith("RAY_AUTH")})
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    seen, stdout = last_json(out.stdout), (tmp_path / "driver.out").read_text()
    told = {group: [line.split("] ", 1)[1] for line in stdout.splitlines()
                    if line.startswith(f"[{trial_id}]") and "retrying from its last checkpoint" in line]
            for trial_id, group in seen["groups"].items()}
    assert [line.split(",")[0] for line in told["A"]] == ["failed", "lost its node"], stdout
    assert [line.split(",")[0] for line in told["B"]] == ["lost its node", "failed"], stdout
    # each with its own reason, not the failure before it (Tune's storage copy lags by one)
    assert told["A"][0].endswith("InjectedFault: injected failure after epoch 2")
    assert told["B"][1].endswith("InjectedFault: injected failure after epoch 5")
    assert "Injected" not in told["A"][1] + told["B"][0]
    trials, after = check_database(tmp_path, "n", 2, 6)
    assert set(trials["status"]) <= {"finished", "catastrophic_overfit"}
    for own in (tmp_path / "n" / "tune-1").glob("*/own_errors.json"):
        assert len(json.loads(own.read_text())) == 1  # the node losses were not counted
    again = after.set_index(["trial_id", "epoch"])["recorded_at"]
    for key, first in seen["before"].items():  # no epoch recorded before the loss was redone
        trial_id, epoch = key.split()
        assert again[(trial_id, int(epoch))].isoformat() == first
