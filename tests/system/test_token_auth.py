"""`python -m search.run` decides Ray's token authentication as ``ray.init()`` does, and says so
to Ray (RAY_AUTH_MODE) so that Ray's "Token authentication is enabled" warning is not printed on
every run. As a new user meets it: a token in ~/.ray/auth_token (any earlier ``ray.init()``
wrote it, this project's demo included), RAY_AUTH_MODE unset, `ray start --head` (which then
enables token auth), then the command with no address: it attaches and runs. And with no
cluster, the embedded Ray says nothing either, there shown on a CPU sweep the cost check
refuses. Every process here has the test's own HOME and Ray temp dir; the head is stopped by
its pids."""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.harness.fake_cluster import RAY, free_port, processes_of, stop_processes

from tests.harness.sweeps import check_database, sweep_command

WARNING = "Token authentication is enabled for this Ray cluster"


@pytest.fixture
def user(tmp_path):
    """A user's environment: a HOME holding ~/.ray/auth_token, Ray's temp dir of its own, and
    no RAY_AUTH_MODE (nor a token path) set."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    root = Path(tempfile.mkdtemp(prefix="rta-", dir="/tmp"))  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(HOME=str(home), RAY_TMPDIR=str(root), PYTHONUNBUFFERED="1",
               TUNE_GLOBAL_CHECKPOINT_S="1", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    try:
        yield env
    finally:
        stop_processes(lambda: processes_of(root))
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_search_run_attaches_to_a_ray_start_head_with_token_auth_from_the_token_file(user, tmp_path):
    start = subprocess.run([RAY, "start", "--head", f"--port={free_port()}",
                            "--node-ip-address=127.0.0.1", "--num-cpus=2", "--num-gpus=0",
                            "--include-dashboard=false", "--disable-usage-stats"],
                           env=user, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stderr[-3000:]
    assert WARNING in start.stderr + start.stdout  # Ray's own `ray start` enabled token auth
    out = subprocess.run(sweep_command(tmp_path / "runs", "t", "--trials", "1", "--epochs", "1"),
                         env=user, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    assert any("this machine is its head node" in line for line in out.stdout.splitlines()[:4])
    assert WARNING not in out.stderr + out.stdout and "refused" not in out.stderr
    check_database(tmp_path / "runs", "t", 1, 1)


def test_an_embedded_ray_has_no_token_warning_and_a_cpu_sweep_over_a_day_is_refused(user, tmp_path):
    """No cluster on this machine: the command's own Ray, token auth on as ``ray.init()`` turns
    it on, and no warning. The run is a CPU sweep of 100 trials x 100,000 epochs: its
    throughput measured by a Ray task, it is estimated above a day and refused without --yes
    (exit 2, one line, nothing written)."""
    out = subprocess.run(sweep_command(tmp_path / "runs", "e", "--epochs", "100000",
                                       "--trials", "100"),
                         env=user, capture_output=True, text=True, timeout=400)
    assert out.returncode == 2 and "add --yes to run it anyway" in out.stderr, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "measured here: a training step of" in errors[0]  # on its CPU
    assert "this machine has no GPU" in errors[0] and "--demo" in errors[0]
    assert WARNING not in out.stderr + out.stdout and out.stdout == ""
    assert not (tmp_path / "runs").exists()  # nothing written


def test_an_explicit_address_attaches_to_a_token_head_and_a_wrong_token_is_refused(user, tmp_path):
    """Ray's SLURM pattern passes the head's address explicitly, which ``ray.init`` never joins
    with a token on its own: the command asks the head, and with the token available (here
    ~/.ray/auth_token, RAY_AUTH_MODE unset) attaches and runs; with a wrong one, one line."""
    port = free_port()
    start = subprocess.run([RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                            "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
                            "--disable-usage-stats"],
                           env=user, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stderr[-3000:]
    cmd = sweep_command(tmp_path / "runs", "x", "--trials", "1", "--epochs", "1",
                        "--address", f"127.0.0.1:{port}")
    out = subprocess.run(cmd, env=user, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    assert WARNING not in out.stderr + out.stdout and "refused" not in out.stderr
    check_database(tmp_path / "runs", "x", 1, 1)
    wrong = tmp_path / "wrong_token"
    wrong.write_text(secrets.token_hex(32))
    refused = subprocess.run(cmd, env={**user, "RAY_AUTH_TOKEN_PATH": str(wrong)},
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr[-3000:]
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "refused this command's authentication token" in lines[0]
