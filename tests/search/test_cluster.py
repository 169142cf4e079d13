"""search.cluster without a cluster: the attach rule's refusals, what an autoscaler config
promises, the GPU, fit and storage decisions, failure classification, own-error counting and
the trial device. (With real Ray clusters: tests/harness/test_fake_cluster.py.)"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml

from search.cluster import place, target
from search.cluster.place import NodeShape, Place
from search.trial import device
from search.tune import failures
from search.trial.retry import OwnErrors
from space_defs.cli import UsageError

ROOT = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- which cluster ------------------------------------------------------------------------------
def test_an_address_or_ray_address_is_used_as_given_and_local_means_embedded(tmp_path):
    env = {"RAY_TMPDIR": str(tmp_path)}
    assert target.find_target("10.1.2.3:6379", env).address == "10.1.2.3:6379"
    assert target.find_target(None, {**env, "RAY_ADDRESS": "10.1.2.3:6379"}).source == "RAY_ADDRESS"
    assert target.find_target("local", {**env, "RAY_ADDRESS": "10.1.2.3:6379"}).embedded
    assert target.find_target(None, {**env, "RAY_ADDRESS": "local"}).embedded
    with pytest.raises(UsageError, match="no Ray cluster was started on this machine"):
        target.find_target("auto", env)


def test_no_recorded_cluster_means_an_embedded_ray(tmp_path):
    assert target.find_target(None, {"RAY_TMPDIR": str(tmp_path)}).embedded


@pytest.mark.parametrize("recorded", ["127.0.0.1:{port}", "203.0.113.7:6379", "garbage", ""])
def test_a_stale_or_foreign_current_cluster_file_is_not_attached(tmp_path, recorded):
    """The cluster is gone, or its head is another machine (this is one of its workers)."""
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(recorded.format(port=free_port()))
    env = {"RAY_TMPDIR": str(tmp_path)}
    assert target.local_head(env) is None and target.find_target(None, env).embedded


def test_rays_temp_dir_is_computed_as_ray_does():
    assert target.ray_temp_dir({"RAY_TMPDIR": "/x", "TMPDIR": "/y"}) == Path("/x/ray")
    assert target.ray_temp_dir({}) == Path("/tmp/ray")
    if sys.platform.startswith("linux"):
        assert target.ray_temp_dir({"TMPDIR": "/y"}) == Path("/y/ray")


def test_loopback_and_own_addresses_are_this_machine():
    assert target.is_this_machine("127.0.0.1") and target.is_this_machine("127.0.0.2")
    assert target.is_this_machine("localhost")
    assert not target.is_this_machine("203.0.113.7") and not target.is_this_machine("no.such.host.invalid")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_process_left_to_init_counts_as_ray_start_one_under_python_does_not():
    child = subprocess.Popen(["sleep", "60"])  # parent: this Python program, alive
    orphan = int(subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"],
                                capture_output=True, text=True).stdout)  # parent exited
    try:
        time.sleep(0.2)
        assert not target._started_by_ray_start(child.pid)
        assert target._started_by_ray_start(orphan)
    finally:
        child.kill()
        child.wait()
        os.kill(orphan, signal.SIGKILL)


# -- what the autoscaler may add ----------------------------------------------------------------
def test_cluster_yaml_promises_gpu_spot_workers_on_other_machines():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    capacity = place.autoscaler_capacity(config)
    assert capacity.provider == "aws" and capacity.other_hosts
    assert {(t.name, t.gpu_model) for t in capacity.types} == {("gpu_a10g", "A10G"), ("gpu_l4", "L4")}
    assert capacity.max_gpus == config["max_workers"]  # one GPU each, within the cluster's max_workers
    assert capacity.max_cpus == 8 * config["max_workers"]


def test_capacity_respects_the_cluster_cap_and_unknown_resources():
    config = {"provider": {"type": "aws"}, "head_node_type": "h", "max_workers": 3,
              "available_node_types": {
                  "h": {"resources": {"CPU": 0}},
                  "big": {"max_workers": 2, "resources": {"CPU": 8, "GPU": 4}},
                  "small": {"max_workers": 5, "resources": {"CPU": 8, "GPU": 1}},
                  "cpu": {"max_workers": 5, "resources": {"CPU": 16}}}}
    assert place.autoscaler_capacity(config).max_gpus == 2 * 4 + 1 * 1
    assert place.autoscaler_capacity(config).max_cpus == 3 * 16
    config["available_node_types"]["auto"] = {"max_workers": 2, "resources": {}}
    config["available_node_types"] = {k: v for k, v in config["available_node_types"].items()
                                      if k in ("h", "cpu", "auto")}
    assert place.autoscaler_capacity(config).max_gpus is None  # left for AWS to detect: unknown
    fake = {"provider": {"type": "fake_multinode"}, "head_node_type": "h", "max_workers": 2,
            "available_node_types": {"h": {}, "g": {"max_workers": 2, "resources": {"GPU": 1}}}}
    assert place.autoscaler_capacity(fake).other_hosts is False  # fake workers are local processes


# -- decisions ------------------------------------------------------------------------------------
def a_place(hosts=("10.0.0.1",), gpus=0.0, may_add=0.0, may_add_hosts=False, shapes=(), address="10.0.0.1:6379"):
    return Place(address, "head", len(hosts), tuple(hosts), gpus, may_add, "aws", may_add_hosts,
                 tuple(shapes))


def test_trials_ask_for_a_gpu_when_the_cluster_has_or_may_launch_one():
    assert place.gpus_per_trial(a_place(gpus=0, may_add=8), None) == 1
    assert place.gpus_per_trial(a_place(gpus=2, may_add=0), None) == 1
    assert place.gpus_per_trial(a_place(gpus=0, may_add=0), None) == 0
    assert place.gpus_per_trial(a_place(gpus=0, may_add=None), None) == 0  # unknown: say so, use 0
    assert place.gpus_per_trial(a_place(gpus=0, may_add=8), 0.5) == 0.5  # fractions pack
    assert place.gpus_per_trial(a_place(gpus=0, may_add=0), 0) == 0
    with pytest.raises(UsageError, match="no GPUs and none can be added"):
        place.gpus_per_trial(a_place(gpus=0, may_add=0), 1)


def test_a_trial_no_node_can_hold_is_refused():
    shapes = [NodeShape("10.0.0.1", 0, 0, up=True), NodeShape("gpu", 8, 1, up=False, count=8)]
    place.check_trial_fits(a_place(shapes=shapes, may_add=8), cpus=4, gpus=0.5)
    with pytest.raises(UsageError, match="no node of this cluster"):
        place.check_trial_fits(a_place(shapes=shapes, may_add=8), cpus=16, gpus=1)
    place.check_trial_fits(a_place(shapes=shapes, may_add=None), cpus=16, gpus=1)  # unknown types


def test_local_storage_is_refused_on_several_machines_unless_declared_shared():
    one, two = a_place(), a_place(hosts=("10.0.0.1", "10.0.0.2"))
    place.check_storage("./runs", one)
    for many in (two, a_place(may_add_hosts=True), a_place(address="ray://10.0.0.1:10001")):
        with pytest.raises(UsageError, match="--shared-storage") as e:
            place.check_storage("./runs", many)
        assert "s3://" in str(e.value) and "\n" not in str(e.value)
        place.check_storage("./runs", many, shared=True)
        place.check_storage("s3://bucket/runs?region=us-west-2", many)
    with pytest.raises(UsageError):
        place.check_storage("file:///data/runs", two)
    embedded = Place(None, "embedded", 1, ("127.0.0.1",), 0.0, 0.0)
    place.check_storage("./runs", embedded)
    assert "embedded local Ray" in embedded.describe()


def test_trials_at_once_default_to_what_the_cluster_can_run():
    gpu_cluster = a_place(gpus=0, may_add=8, shapes=[NodeShape("10.0.0.1", 0, 0, up=True),
                                                    NodeShape("gpu_a10g", 8, 1, up=False, count=8)])
    assert place.concurrent_trials(gpu_cluster, cpus=1, gpus=1) == 8  # cluster.yaml's 8 GPUs
    assert place.concurrent_trials(gpu_cluster, cpus=1, gpus=0.5) == 16
    assert place.concurrent_trials(a_place(gpus=2, may_add=None), cpus=1, gpus=1) == 2  # unknown: up
    cpus = Place(None, "embedded", 1, ("127.0.0.1",), 0.0, 0.0, shapes=(NodeShape("127.0.0.1", 2, 0, up=True),))
    assert place.concurrent_trials(cpus, cpus=1, gpus=0) == 2
    assert place.concurrent_trials(cpus, cpus=4, gpus=0) == 1  # at least one
    cpu_cluster = dataclasses.replace(cpus, cpus_may_add=30.0)
    assert place.concurrent_trials(cpu_cluster, cpus=8, gpus=0) == 4


def test_describe_says_where_nodes_and_gpus_now_and_to_come():
    text = a_place(gpus=0, may_add=8, shapes=[NodeShape("gpu_a10g", 8, 1, up=False, count=8)]).describe()
    assert "10.0.0.1:6379" in text and "this machine is its head node" in text
    assert "0 GPUs up now" in text and "up to 8 more" in text and "gpu_a10g x8" in text
    assert "unknown" in a_place(may_add=None).describe()


# -- retries --------------------------------------------------------------------------------------
def test_node_and_process_losses_are_told_apart_from_a_trials_own_errors():
    from ray import exceptions as rex

    try:
        raise ValueError("boom")
    except ValueError as e:
        own = rex.RayTaskError("train", "Traceback ...", e)
    assert failures.is_node_loss(rex.ActorDiedError())
    assert failures.is_node_loss(rex.NodeDiedError("node died"))
    assert not failures.is_node_loss(own) and not failures.is_node_loss(ValueError("x"))
    assert failures.is_node_loss("Failure # 1 (occurred at ...)\nray.exceptions.ActorDiedError: The actor died")
    assert not failures.is_node_loss("Failure # 1\nray.exceptions.RayTaskError(ValueError): boom")
    assert not failures.is_node_loss(None)
    assert failures.failure_config().max_failures == failures.NODE_LOSS_RETRIES + failures.OWN_ERROR_RETRIES


def test_the_error_of_a_failure_is_its_own_not_the_one_before(tmp_path):
    """Tune appends every failure to the trial's local error.txt, but rewrites error.pkl only
    for Ray's errors: the pickled exception counts only when it is the last failure."""
    from types import SimpleNamespace

    import cloudpickle
    from ray import exceptions as rex

    def failed(*errors, pickled=None):
        trial = SimpleNamespace(error_file=str(tmp_path / "error.txt"),
                                pickled_error_file=str(tmp_path / "error.pkl"))
        (tmp_path / "error.txt").write_text("".join(  # as Trial.handle_error writes it
            f"Failure # {n} (occurred at 2026-11-27_10-00-0{n})\n{e}\n" for n, e in enumerate(errors, 1)))
        (tmp_path / "error.pkl").write_bytes(cloudpickle.dumps(pickled))
        return failures.trial_error(trial)

    lost = rex.ActorDiedError()
    assert isinstance(failed(lost, pickled=lost), rex.ActorDiedError)  # the last one: the object
    stale = failed(lost, RuntimeError("restoring failed: no space left"), pickled=lost)
    assert stale == "restoring failed: no space left" and not failures.is_node_loss(stale)
    assert failures.describe_error(stale) == "restoring failed: no space left"
    try:
        raise ValueError("boom")
    except ValueError as e:
        own = rex.RayTaskError("train", "Traceback ...", e)
    assert failures.describe_error(own) == "ValueError: boom"  # the trial's exception, not Ray's
    assert failures.describe_error(None) == "unknown error"


def test_own_errors_are_counted_on_storage_across_retries(tmp_path):
    fs = pafs.LocalFileSystem()
    first = OwnErrors(fs, str(tmp_path / "trial"), limit=2)
    assert first.record(RuntimeError("one")) and first.record(RuntimeError("two"))
    again = OwnErrors(fs, str(tmp_path / "trial"), limit=2)  # a retry, maybe on another node
    assert not again.record(RuntimeError("three"))
    assert again.errors() == ["RuntimeError: one", "RuntimeError: two", "RuntimeError: three"]
    (tmp_path / "trial" / OwnErrors.NAME).write_text("{torn")
    assert OwnErrors(fs, str(tmp_path / "trial")).errors() == []


def test_outside_a_trial_without_a_gpu_grant_the_device_is_the_cpu():
    cpu = device.trial_device()
    assert (cpu.device, cpu.name, cpu.gpus, cpu.note) == ("cpu", "cpu", 0.0, "")


# -- what is the environment's fault ------------------------------------------------------------
def test_environment_problems_are_told_apart_from_a_trials_own_errors():
    from ray import exceptions as rex

    from trainer.datasets import DataUnavailableError

    def in_a_trial(error):
        try:
            raise error
        except Exception as e:  # noqa: BLE001
            return rex.RayTaskError("train", "Traceback ...", e)

    gpu = device.GpuUnusableError("node 10.0.1.5 was granted 1 GPU that CUDA cannot use\nmore")
    assert failures.environment_problem(in_a_trial(gpu)) == "node 10.0.1.5 was granted 1 GPU that CUDA cannot use"
    assert failures.environment_problem(DataUnavailableError("cifar10 is not in /d")) == "cifar10 is not in /d"
    assert failures.environment_problem(in_a_trial(ValueError("bad config"))) is None
    assert failures.environment_problem(rex.ActorDiedError()) is None
    text = ("Failure # 1\nTraceback (most recent call last):\nray.exceptions.RayTaskError("
            "DataUnavailableError): ray::ImplicitFunc.train()\ntrainer.datasets."
            "DataUnavailableError: svhn is not in /d/svhn\n")
    assert failures.environment_problem(text) == "svhn is not in /d/svhn"
    assert failures.environment_problem("Failure # 1\nValueError: DataUnavailableError: no") is None
    assert failures.environment_problem(None) is None


def test_a_gpu_status_names_the_node_the_driver_and_the_cuda_build():
    status = device.GpuStatus(node="10.0.1.5", granted=1.0, ray_gpu_ids=("0",), driver="470.57.02",
                               torch="2.14.1+cu130", cuda_build="13.0", device=None,
                               reason="The NVIDIA driver on your system is too old (found version 11040)")
    line = status.describe()
    assert not status.usable and "\n" not in line
    assert line.startswith("node 10.0.1.5 was granted 1 GPU (Ray GPU ids ['0']) that CUDA cannot use")
    assert "NVIDIA driver 470.57.02" in line and "built for CUDA 13.0 (needs driver >= 580" in line
    assert "too old" in line
    none = dataclasses.replace(status, driver=None, cuda_build=None, reason="no CUDA device")
    assert "no NVIDIA driver found" in none.describe() and "built without CUDA" in none.describe()
    ok = dataclasses.replace(status, driver="595.71.05", device="NVIDIA A10G", reason="")
    assert ok.usable and "NVIDIA A10G, NVIDIA driver 595.71.05" in ok.describe()
