"""The fake autoscaling cluster (tests/harness/fake_cluster.py) and search.cluster on it, with
real Ray processes: a driver on the head attaches with no address; a task or trial asking for a
GPU makes the autoscaler launch a GPU worker from zero, which is removed when idle; a killed
worker node's trial is retried from its checkpoint while a trial's own errors are retried twice;
a node on 127.0.0.2 makes the cluster multi-machine, and a local storage path is refused there.
Every cluster is shut down by its temp root and pids, never `ray stop`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.harness import last_json
from tests.harness.fake_cluster import GPU_TASK, RAY, FakeCluster, processes_of, stop_processes

from tests.harness.sweeps import check_database, epochs_so_far, sweep_command, sweep_env, wait_for

HERE = Path(__file__).parents[1] / "harness"
TIMINGS: dict[str, float] = {}


def where(env: dict[str, str], *args: str) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "where.py"), *args], env=env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return last_json(out.stdout)


@pytest.fixture(scope="module")
def cluster():
    with FakeCluster() as c:
        TIMINGS["head_start_s"] = c.timings["head_start_s"]
        yield c
    assert not processes_of(c.root), "a process of the cluster survived its shutdown"
    print("\nfake cluster timings (s):", json.dumps({k: round(v, 1) for k, v in TIMINGS.items()}))


def test_the_head_starts_with_no_worker_and_a_driver_there_attaches_without_an_address(cluster):
    assert [n["head"] for n in cluster.nodes()] == [True]
    assert (cluster.temp_dir / "ray_current_cluster").read_text() == cluster.address
    seen = where(cluster.env)
    assert seen["source"] == "head" and seen["address"] == cluster.address
    assert seen["gpus"] == 0 and seen["gpus_may_add"] == 2 and seen["provider"] == "fake_multinode"
    assert seen["gpus_per_trial"] == 1  # none up now, but the autoscaler can add them
    assert seen["trials_at_once"] == 2  # --max-concurrent's default: the 2 GPUs it may add
    assert not seen["multi_host"] and seen["storage"] == "accepted"  # fake workers: this machine
    assert "this machine is its head node" in seen["describe"]
    (cluster.root / "wrong_token").write_text("1" * 64)
    refused = where({**cluster.env, "RAY_AUTH_TOKEN_PATH": str(cluster.root / "wrong_token")})
    assert "refused this command's authentication token" in refused["error"]


def test_a_gpu_task_makes_the_autoscaler_launch_a_worker_from_zero_then_idle_removes_it(cluster):
    driver = subprocess.Popen([sys.executable, "-c", GPU_TASK],
                              env={**cluster.env, "RAY_ADDRESS": cluster.address},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.monotonic()
    up = cluster.wait_for(cluster.gpu_nodes, timeout=180)
    assert up, "the autoscaler launched no GPU worker:\n" + cluster.logs()
    TIMINGS["gpu_worker_launch_s"] = time.monotonic() - t0
    out, _ = driver.communicate(timeout=180)
    assert driver.returncode == 0, out
    assert "with GPU ids [0]" in out
    t0 = time.monotonic()
    assert cluster.wait_for(lambda: not cluster.gpu_nodes(), timeout=180), cluster.logs()
    TIMINGS["idle_worker_removed_s"] = time.monotonic() - t0


def test_search_run_on_the_head_trains_on_gpu_workers_the_autoscaler_starts_from_zero(cluster, tmp_path):
    """The README's use: on the head node, `python -m search.run` with no --address. Trials ask
    for a GPU, the autoscaler starts GPU workers from zero, the trials land in the database; a
    worker node killed mid-trial is replaced and its trial resumes from its checkpoint."""
    assert not cluster.gpu_nodes()
    cmd = sweep_command(tmp_path, "gpu", "--trials", "2", "--epochs", "5", "--scheduler", "none",
                        "--fake-gpus")  # the fake workers' `GPU: 1` has no CUDA device
    at = cmd.index("--max-concurrent")
    cmd = cmd[:at] + cmd[at + 2:]  # its default: what the cluster can run at once
    driver = subprocess.Popen(cmd, env={**sweep_env(), **cluster.env}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    assert cluster.wait_for(cluster.gpu_nodes, timeout=180), cluster.logs()
    TIMINGS["search_run_first_gpu_worker_s"] = time.monotonic() - t0

    def a_trial_mid_way():
        rows = epochs_so_far(tmp_path, "gpu")
        return rows is not None and (rows.groupby("trial_id")["epoch"].max() >= 2).any() and rows

    rows = wait_for(a_trial_mid_way, timeout=240)
    assert rows is not None, cluster.logs()
    first_epochs = rows[rows.epoch == 1].set_index("trial_id")["recorded_at"]
    cluster.kill_node(cluster.gpu_nodes()[0]["node_id"])
    out, err = driver.communicate(timeout=400)
    assert driver.returncode == 0, err[-3000:]
    head = out.splitlines()[:5]  # what the sweep is, its objectives, where it runs, at once
    assert any("this machine is its head node" in line and "0 GPUs up now" in line
               and "up to 2 more from the autoscaler" in line for line in head), head
    assert any("trials at once: 2 (what the cluster can run at once; 1 GPUs" in line
               for line in head), head
    assert "lost its node, retrying from its last checkpoint" in out
    assert "that CUDA cannot use" in out and "trained on the CPU (--fake-gpus)" in out
    trials, epochs = check_database(tmp_path, "gpu", 2, 5)
    assert set(trials["status"]) <= {"finished", "catastrophic_overfit"}
    assert (trials["device_name"] == "cpu").all() and (trials["gpu_hours"] > 0).all()
    again = epochs[epochs.epoch == 1].set_index("trial_id")["recorded_at"]
    assert (again[first_epochs.index] == first_epochs).all()  # no trial restarted from scratch


def test_a_node_on_127_0_0_2_is_another_machine_and_local_storage_is_refused(cluster, tmp_path):
    t0 = time.monotonic()
    node = cluster.add_node("127.0.0.2", cpus=1)
    TIMINGS["node_on_127.0.0.2_joined_s"] = time.monotonic() - t0
    assert {n["ip"] for n in cluster.nodes()} == {"127.0.0.1", "127.0.0.2"}
    refused = where(cluster.env, "--storage", str(tmp_path / "runs"))
    assert refused["multi_host"] and "127.0.0.2" in refused["error"]
    assert "--shared-storage" in refused["error"] and "s3://" in refused["error"]
    assert where(cluster.env, "--storage", "s3://bucket/runs")["storage"] == "accepted"
    cmd = sweep_command(tmp_path / "runs", "m", "--trials", "1", "--epochs", "1", "--fake-gpus")
    out = subprocess.run(cmd, env={**sweep_env(), **cluster.env}, capture_output=True, text=True,
                         timeout=300)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2 and len(errors) == 1, out.stderr  # (Ray may warn as it connects)
    assert out.stderr.strip().splitlines()[-1] == errors[0] and "Traceback" not in out.stderr
    assert "is a local path" in errors[0] and "--shared-storage" in errors[0]
    assert not (tmp_path / "runs").exists()  # nothing written
    out = subprocess.run([*cmd, "--shared-storage"], env={**sweep_env(), **cluster.env},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    check_database(tmp_path / "runs", "m", 1, 1)
    cluster.kill_node(node)


def test_ray_start_on_127_0_0_2_joins_a_head_with_its_token_and_not_without():
    with FakeCluster(loopback=False) as head:  # bound as `ray start --head` binds: this machine's IP
        env = {k: v for k, v in head.env.items() if not k.startswith("RAY_AUTH")}
        env["RAY_AUTH_TOKEN_PATH"] = str(head.root / "wrong_token")
        (head.root / "wrong_token").write_text("0" * 64)
        env["RAY_AUTH_MODE"] = "token"
        bad = subprocess.run([RAY, "start", f"--address={head.address}", "--node-ip-address=127.0.0.3",
                              "--num-cpus=1"], env=env, capture_output=True, text=True, timeout=120)
        assert bad.returncode != 0 and "auth" in (bad.stdout + bad.stderr).lower()
        t0 = time.monotonic()
        head.add_node("127.0.0.2", cpus=1)  # `ray start --address ... --node-ip-address 127.0.0.2`
        TIMINGS["ray_start_127.0.0.2_joined_s"] = time.monotonic() - t0
        seen = where(head.env, "--storage", "./runs")
        assert seen["source"] == "head" and seen["nodes"] == 2 and seen["multi_host"]
        assert "local path" in seen["error"]


def test_a_ray_owned_by_a_python_program_is_never_attached():
    """ray.cluster_utils.Cluster (test fixtures) records itself where `ray start` does."""
    root = Path(tempfile.mkdtemp(prefix="rfc-owned-", dir="/tmp"))  # short: socket paths
    env = {**os.environ, "RAY_TMPDIR": str(root), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom ray.cluster_utils import Cluster\n"
         "c = Cluster(initialize_head=True, head_node_args={'num_cpus': 0})\n"
         "print(c.address, flush=True)\nsys.stdin.read()\nc.shutdown()"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        address = owner.stdout.readline().strip()
        assert address and (root / "ray" / "ray_current_cluster").read_text().strip() == address
        from search.cluster.target import find_target, local_head

        assert local_head({"RAY_TMPDIR": str(root)}) is None
        assert find_target(None, {"RAY_TMPDIR": str(root)}).embedded
    finally:
        owner.stdin.close()
        owner.wait(timeout=60)
        stop_processes(lambda: processes_of(root))
        shutil.rmtree(root, ignore_errors=True)
