"""A real single-machine SLURM cluster for the tests: munged, slurmctld and two slurmd (vm on
127.0.0.1, vm2 on 127.0.0.2), each with 2 fake GPUs (GRES device files that are symlinks to
/dev/null), every file under one temp dir, own ports; stopped by the pids of that temp dir."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.harness import ray_nodes
from tests.harness.ray_nodes import pids_under
from tests.harness.fake_cluster import free_port


def ensure_installed() -> None:
    """slurm-wlm and munge, installed with apt-get when slurmctld is missing; skip otherwise."""
    if shutil.which("slurmctld") and shutil.which("munged"):
        return
    if not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    out = subprocess.run(["apt-get", "install", "-y", "slurm-wlm", "munge"], env=env,
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0 or not shutil.which("slurmctld"):
        pytest.skip(f"apt-get install slurm-wlm munge failed: {out.stderr.strip()[-300:]}")


def _environ_mentions(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def processes_of(root: Path) -> list[int]:
    """Processes whose command line or environment names ``root`` (SLURM_CONF points there)."""
    marker = str(root).encode()
    mine = set(pids_under(root))
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() \
                and _environ_mentions(int(entry.name), marker + b"/"):
            mine.add(int(entry.name))
    return sorted(mine)


def stop(root: Path) -> None:
    """Every process of the cluster under ``root`` (its Ray nodes too), by pid."""
    ray_nodes.stop(root, grace=3, pids=lambda: processes_of(root))


class Slurm:
    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _run(self, *cmd, timeout=60, check=True):
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=check)

    def start(self) -> None:
        r = self.root
        for d in ("munge", "state", "spool/vm", "spool/vm2", "log", "dev"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o755)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        sock = r / "munge" / "munge.sock"
        subprocess.run(["munged", "--force", f"--socket={sock}", f"--key-file={key}",
                        f"--pid-file={r / 'munge' / 'munged.pid'}",
                        f"--log-file={r / 'log' / 'munged.log'}",
                        f"--seed-file={r / 'munge' / 'munged.seed'}"], check=True, timeout=30,
                       capture_output=True)
        for node in ("vm", "vm2"):
            for i in range(2):
                (r / "dev" / f"{node}gpu{i}").symlink_to("/dev/null")
        mem = 2000
        host = socket.gethostname()
        ctld, d1, d2 = free_port(), free_port(), free_port()
        self.conf.write_text(f"""ClusterName=test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={sock}
SlurmctldPort={ctld}
SlurmdPort={d1}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd-%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
KillWait=30
MinJobAge=300
NodeName=vm NodeHostname={host} NodeAddr=127.0.0.1 Port={d1} CPUs=1 RealMemory={mem} Gres=gpu:2 State=UNKNOWN
NodeName=vm2 NodeHostname={host} NodeAddr=127.0.0.2 Port={d2} CPUs=1 RealMemory={mem} Gres=gpu:2 State=UNKNOWN
PartitionName=main Nodes=vm,vm2 Default=YES MaxTime=INFINITE State=UP
""")
        (r / "gres.conf").write_text(
            "AutoDetect=off\n"
            f"NodeName=vm Name=gpu File={r}/dev/vmgpu[0-1]\n"
            f"NodeName=vm2 Name=gpu File={r}/dev/vm2gpu[0-1]\n")
        self._run("slurmctld", "-f", str(self.conf))
        self._run("slurmd", "-f", str(self.conf), "-N", "vm")
        self._run("slurmd", "-f", str(self.conf), "-N", "vm2")
        deadline = time.time() + 60
        while time.time() < deadline:
            out = self._run("sinfo", "-h", "-N", "-o", "%N %t", check=False)
            states = dict(line.split() for line in out.stdout.splitlines() if line.strip())
            if states.get("vm") == "idle" and states.get("vm2") == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"SLURM nodes not idle: {out.stdout} {out.stderr}\n"
                           + (r / "log" / "slurmctld.log").read_text()[-3000:])

    def sbatch(self, *args, env=None) -> str:
        out = subprocess.run(["sbatch", "--parsable", *map(str, args)], capture_output=True,
                             text=True, timeout=60, env={**(env or self.env),
                                                         "SLURM_CONF": str(self.conf)})
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().split(";")[0]

    def job(self, job: str) -> dict[str, str]:
        out = self._run("scontrol", "show", "job", "-o", job, check=False)
        return dict(re.findall(r"(\w+)=(\S*)", out.stdout)) if out.returncode == 0 else {}

    def wait(self, job: str, timeout: float = 400) -> dict[str, str]:
        """The job's final JobState and ExitCode (as scontrol shows them, MinJobAge=300)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            info = self.job(job)
            if info.get("JobState") not in (None, "PENDING", "RUNNING", "CONFIGURING",
                                            "COMPLETING", "REQUEUED"):
                return info
            time.sleep(1)
        raise TimeoutError(f"job {job} still {self.job(job).get('JobState')}")

    def scancel(self, job: str, *args: str) -> None:
        self._run("scancel", *args, job)


@pytest.fixture(scope="module")
def slurm():
    t0 = time.time()
    ensure_installed()
    root = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
    cluster = Slurm(root)
    cluster.install_s = time.time() - t0
    try:
        cluster.start()
        yield cluster
    finally:
        stop(root)
        shutil.rmtree(root, ignore_errors=True)
