"""The embedded Ray is the command's alone: none of its processes outlives the command, whether
the sweep ends, is refused (exit 2) once Ray is up, or is stopped with Ctrl-C, which also leaves
the sweep resumable rather than done."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.harness.sweeps import check_database, epochs_so_far, sweep_command, sweep_env, wait_for



def processes_with(environ_entry: str) -> list[int]:
    """Live processes started with ``environ_entry`` in their environment (Ray's workers rename
    their command line, but keep the environment they inherited from the command)."""
    entry = environ_entry.encode()
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if entry in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


@pytest.fixture
def ray_temp():
    """Ray's temp dir for one test (short: Ray's socket paths must fit 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def embedded(tmp_path: Path, temp: Path, name: str, *args: str) -> tuple[list[str], dict[str, str], str]:
    """A sweep command on an embedded Ray of its own temp dir, its environment, and the
    environment entry that marks every process of that Ray."""
    env = {k: v for k, v in sweep_env(RAY_TMPDIR=str(temp)).items() if k != "RAY_ADDRESS"}
    return sweep_command(tmp_path / "runs", name, "--address", "local", *args), env, f"RAY_TMPDIR={temp}"


def gone_within(marker: str, seconds: float = 5.0) -> list[int]:
    """The processes still marked after ``seconds`` (none, when the command cleaned up)."""
    deadline = time.monotonic() + seconds
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_no_process_outlives_a_sweep_that_ends(tmp_path, ray_temp):
    cmd, env, marker = embedded(tmp_path, ray_temp, "end", "--trials", "1", "--epochs", "1")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert gone_within(marker) == []


def test_no_process_outlives_a_refusal_after_ray_started(tmp_path, ray_temp):
    cmd, env, marker = embedded(tmp_path, ray_temp, "refused", "--cpus-per-trial", "64")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "asks for 64 CPUs" in out.stderr, out.stderr[-3000:]
    assert gone_within(marker) == []


@pytest.mark.parametrize("stop, code, says", [
    (lambda pid: os.killpg(pid, signal.SIGINT), 130, "interrupted"),  # Ctrl-C in a terminal
    (lambda pid: os.kill(pid, signal.SIGTERM), 143, "terminated (SIGTERM)"),  # kill, a time limit
], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_the_sweep_resumably_and_leaves_no_process(tmp_path, ray_temp, stop, code, says):
    """Ctrl-C (SIGINT to the command's process group) or SIGTERM to the driver: Tune saves its
    state and returns as if it were done; the sweep must stop there (exit 130 or 143, one line,
    no native stack dump of Ray's), not mark the running trials lost and start new ones, and
    the same command resumes them."""
    cmd, env, marker = embedded(tmp_path, ray_temp, "int", "--trials", "2", "--epochs", "8",
                                "--scheduler", "none")
    log = tmp_path / "driver.out"
    with open(log, "w") as out:
        driver = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)

    def both_past_epoch_2():
        rows = epochs_so_far(tmp_path / "runs", "int")
        counts = rows.groupby("trial_id")["epoch"].max() if rows is not None else None
        return counts is not None and len(counts) == 2 and (counts >= 2).all() and rows

    rows = wait_for(both_past_epoch_2)
    assert rows is not None, log.read_text()[-3000:]
    stop(driver.pid)
    assert driver.wait(timeout=120) == code, log.read_text()[-3000:]
    text = log.read_text()
    assert text.strip().splitlines()[-1].startswith(f"{says}: sweep int stopped"), text[-3000:]
    assert "SIGTERM received" not in text and "PC: @" not in text
    assert gone_within(marker) == []

    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming tune-1" in resumed.stdout and "tune-2" not in resumed.stdout
    trials, after = check_database(tmp_path / "runs", "int", 2, 8)
    assert set(trials["status"]) <= {"finished", "catastrophic_overfit"}  # none lost
    first = rows[rows.epoch == 1].set_index("trial_id")["recorded_at"]
    again = after[after.epoch == 1].set_index("trial_id")["recorded_at"]
    assert (again[first.index] == first).all()  # continued, not restarted
    assert gone_within(marker) == []
