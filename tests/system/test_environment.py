"""What is wrong with the environment rather than with a config stops the sweep with exit 2 and
one line, and uses up none of its trials: the README's headline command on this machine, which
has no CIFAR-10 and cannot download it (checked by the driver before Ray starts), and a trial
granted a GPU that CUDA cannot use (`ray start --head --num-gpus=1` on this CPU machine: the
trial's own check, after which the driver stops the sweep); after the fix the same command runs
every trial."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys

import pytest

from trainer.status import Status

from tests.harness import ray_nodes

from tests.harness.sweeps import check_database, snapshot, sweep_command, sweep_env



def study_states(sweep_dir) -> dict[str, int]:
    import collections

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(sweep_dir / "optuna.journal")))
    study = optuna.load_study(study_name=sweep_dir.name, storage=storage)
    return dict(collections.Counter(t.state.name for t in study.get_trials(deepcopy=False)))


def one_error_line(out) -> str:
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    return errors[0]


@pytest.mark.parametrize("where", ["TRAINER_DATA_DIR", "--data-dir"])
def test_the_headline_command_without_the_data_stops_before_anything_runs(tmp_path, where):
    storage, data = tmp_path / "runs", tmp_path / "empty"
    data.mkdir()
    (storage / "other").mkdir(parents=True)
    before = snapshot(storage)
    cmd = [sys.executable, "-m", "search.run", "--budget", "36M", "--storage", str(storage)]
    env = sweep_env()
    if where == "--data-dir":
        cmd += ["--data-dir", str(data)]
    else:
        env["TRAINER_DATA_DIR"] = str(data)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    line = one_error_line(out)
    assert f"cifar10 is not in {data / 'cifar10'}" in line and "could not be downloaded" in line
    assert "python -m trainer fetch cifar10" in line and "Nothing was run or written" in line
    assert out.stdout == ""  # no Ray started, no sweep announced
    assert snapshot(storage) == before


@pytest.fixture
def gpu_head(tmp_path_factory):
    """A `ray start --head --num-gpus=1` node on this CPU machine, with a token of its own."""
    temp = tmp_path_factory.mktemp("gpuhead")
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = sweep_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    try:
        yield ray_nodes.start_head(temp, num_cpus=2, num_gpus=1, env=env), env
    finally:
        ray_nodes.stop(temp)


def test_a_gpu_cuda_cannot_use_stops_the_sweep_and_after_the_fix_the_same_command_runs_it(
        gpu_head, tmp_path):
    address, env = gpu_head
    cmd = sweep_command(tmp_path, "gpu", "--address", address, "--trials", "2", "--epochs", "2",
                        "--scheduler", "none")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    line = one_error_line(out)
    node = re.search(r"node (\S+) was granted 1 GPU \(Ray GPU ids \['0'\]\) that CUDA cannot use", line)
    assert node, line
    assert "no NVIDIA driver found" in line and "built for CUDA 13.0" in line
    assert "--fake-gpus" in line and "no trial used up" in line
    assert "trained on the CPU" not in out.stdout and "epoch 1/2" not in out.stdout
    from search.db import load_epochs, load_trials

    failed = load_trials(tmp_path, "gpu")
    assert list(failed["status"]) == [Status.ENV_FAILED] and load_epochs(tmp_path, "gpu").empty
    assert "CUDA cannot use" in failed["error"].iloc[0]
    assert set(study_states(tmp_path / "gpu")) == {"RUNNING"}  # the sampler learned nothing

    # a GPU task, as docs/CLUSTER.md checks a node from the head
    check = ("import ray; from search.trial.device import gpu_status; ray.init(); "
             "print(ray.get(ray.remote(num_gpus=1)(gpu_status).remote()).describe())")
    seen = subprocess.run([sys.executable, "-c", check], env={**env, "RAY_ADDRESS": address},
                          capture_output=True, text=True, timeout=300)
    assert f"node {node[1]} was granted 1 GPU (Ray GPU ids ['0']) that CUDA cannot use" in seen.stdout

    # the fix (here: Ray's fake GPU allowed), then the same command: every trial runs
    out = subprocess.run([*cmd, "--fake-gpus", "--final-eval", "1", "--final-attacks", "clean"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "trained on the CPU (--fake-gpus)" in out.stdout
    assert "FLOPs per trial trained to the end" in out.stdout  # the cost, said first
    assert "] test: clean " in out.stdout  # the final evaluation's task, on the fake GPU too
    assert study_states(tmp_path / "gpu") == {"COMPLETE": 2}  # the stopped trial, told once
    trials, _ = check_database(tmp_path, "gpu", 2, 2)
    assert set(trials["status"]) <= {"finished", "catastrophic_overfit"}
    assert failed["trial_id"].iloc[0] in set(trials["trial_id"])  # the stopped trial, run now
    assert "2 trials: 2 finished" in out.stdout or "catastrophic" in out.stdout
