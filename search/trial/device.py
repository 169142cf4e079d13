"""The device a trial really runs on: a granted GPU that CUDA can use, or an environment
problem that stops the sweep (never a silent CPU fallback)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from trainer.status import EnvironmentProblem

from .. import internals


# The oldest NVIDIA driver each CUDA major version runs on (NVIDIA's CUDA compatibility table).
MIN_DRIVER = {"12": "525.60.13", "13": "580.65.06"}


class GpuUnusableError(EnvironmentProblem):
    """Ray granted this process a GPU that CUDA cannot use (no driver, a driver too old for
    torch's CUDA build, no device visible): the node's environment, not the trial's config."""


@dataclass(frozen=True)
class GpuStatus:
    """What a process Ray granted GPUs finds: whether CUDA can use them, and what decides it."""

    node: str  # the node's IP address
    granted: float  # GPUs Ray granted (fractions included)
    ray_gpu_ids: tuple[str, ...]  # Ray's ids of them (CUDA_VISIBLE_DEVICES is set from these)
    driver: str | None  # the NVIDIA driver version (nvidia-smi, else /proc), None: no driver
    torch: str  # torch.__version__
    cuda_build: str | None  # torch.version.cuda: the CUDA torch was built for, None for CPU-only
    device: str | None  # torch's name of the first visible GPU, None when CUDA cannot use one
    reason: str = ""  # why not, in torch's words

    @property
    def usable(self) -> bool:
        return self.device is not None

    def describe(self) -> str:
        """One line: where, the driver, the CUDA build, and what went wrong."""
        driver = f"NVIDIA driver {self.driver}" if self.driver else "no NVIDIA driver found"
        build = (f"torch {self.torch} built for CUDA {self.cuda_build}" if self.cuda_build
                 else f"torch {self.torch} built without CUDA")
        need = MIN_DRIVER.get((self.cuda_build or "").split(".")[0])
        if need and self.cuda_build:
            build += f" (needs driver >= {need})"
        head = (f"node {self.node} was granted {self.granted:g} GPU (Ray GPU ids "
                f"{list(self.ray_gpu_ids)})")
        if self.usable:
            return f"{head}: {self.device}, {driver}, {build}"
        return f"{head} that CUDA cannot use: {driver}, {build}: {self.reason or 'no CUDA device'}"


def gpu_status() -> GpuStatus:
    """In a Ray task or trial: the GPUs Ray granted it, as CUDA sees them (docs/CLUSTER.md runs
    it as a GPU task to check a node)."""
    import ray
    import torch

    device, reason = None, ""
    try:
        torch.cuda.init()
        if torch.cuda.device_count() > 0:
            device = torch.cuda.get_device_name(0)
        else:
            reason = f"no CUDA device is visible (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})"
    except Exception as e:  # noqa: BLE001 - torch's own words for why: driver missing, too old...
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0]
    return GpuStatus(node=_node_address(), granted=_granted_gpus(),
                     ray_gpu_ids=tuple(str(i) for i in ray.get_gpu_ids()), driver=_nvidia_driver(),
                     torch=torch.__version__, cuda_build=torch.version.cuda, device=device,
                     reason=reason)


def _node_address() -> str:
    """The address this process's Ray node registered with (``ray start --node-ip-address``),
    which `ray status` shows; the route-based guess where that is not known."""
    import ray

    try:
        return internals.node_ip_address()
    except Exception:  # noqa: BLE001 - private API: the public guess
        return ray.util.get_node_ip_address()


def _nvidia_driver() -> str | None:
    """The NVIDIA driver version of this node, from nvidia-smi or the kernel module."""
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    try:  # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  ..."
        words = Path("/proc/driver/nvidia/version").read_text().split()
        return next(w for w in words if w[:1].isdigit() and "." in w)
    except (OSError, StopIteration):
        return None


@dataclass(frozen=True)
class TrialDevice:
    device: str  # what to train on: "cuda" or "cpu"
    name: str  # what to record: torch's device name ("NVIDIA H100 80GB HBM3") or "cpu"
    gpus: float  # GPUs Ray granted this trial (fractions included): GPU-hours = gpus x hours
    note: str = ""  # why a granted GPU went unused (only with fake GPUs allowed)


def trial_device(*, fake_gpus: bool = False) -> TrialDevice:
    """Inside a trial: a granted GPU, which CUDA must be able to use. A GPU CUDA cannot use is
    GpuUnusableError (the sweep stops: trained on the CPU, a GPU trial would take days and
    still count its GPU-hours), unless ``fake_gpus`` allows it (Ray's fake GPUs in tests):
    then the CPU, with a note. A GPU that was not granted is never used (another trial may
    own it)."""
    granted = _granted_gpus()
    if granted <= 0:
        return TrialDevice("cpu", "cpu", 0.0)
    status = gpu_status()
    if status.usable:
        return TrialDevice("cuda", status.device, granted)
    if not fake_gpus:
        raise GpuUnusableError(f"{status.describe()}; fix the node's driver (docs/CLUSTER.md: "
                               "the AMI, the NVIDIA driver and CUDA), or for Ray's fake GPUs "
                               "add --fake-gpus")
    return TrialDevice("cpu", "cpu", granted, f"{status.describe()}; trained on the CPU (--fake-gpus)")


def _granted_gpus() -> float:
    import ray

    try:
        import warnings

        from ray import tune

        with warnings.catch_warnings():  # outside a trial Tune warns, then returns None
            warnings.simplefilter("ignore")
            resources = tune.get_context().get_trial_resources().required_resources
        return float(resources.get("GPU", 0.0))
    except Exception:  # noqa: BLE001 - not in a Tune trial: a plain Ray task or actor
        return float(len(ray.get_gpu_ids())) if ray.is_initialized() else 0.0
