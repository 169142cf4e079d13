"""Ray's fake autoscaling cluster on this machine, started the way `ray up` starts a head node.

``ray up cluster.yaml`` runs ``ray start --head --autoscaling-config=~/ray_bootstrap_config.yaml``
on the head; the autoscaler (Ray's monitor process) then launches worker nodes of the config's
node types as work queues up and terminates them when idle. Here the same ``ray start --head``
runs with ``RAY_FAKE_CLUSTER=1`` and a ``provider: type: fake_multinode`` config whose node types
are cluster.yaml's (a head with 0 CPUs, GPU worker types from 0): the autoscaler's "instances"
are raylet processes on this machine with the resources the config declares (``GPU: 1`` without
a CUDA device).

Every cluster lives in its own temp root (``/tmp/rfc-XXXX``): Ray's temp dir is ``ROOT/ray``, so
``ray start`` records the cluster in ``ROOT/ray/ray_current_cluster`` exactly where it records
it on a real head (``/tmp/ray/ray_current_cluster``); a process run with :attr:`FakeCluster.env`
(``RAY_TMPDIR=ROOT``) sees it as "the cluster on this machine". Token authentication is on.
Shutdown kills only this cluster's processes, found by their temp root (command line, open
files, a marker in the environment) and their descendants, by pid: never ``ray stop``, never
by name, since other Ray instances share this machine.

    with FakeCluster() as cluster:          # head up: ~6 s on 2 cores
        run([...], env=cluster.env)         # a driver attaching with no --address
        cluster.wait_for(lambda: cluster.gpu_nodes())   # the autoscaler launched a worker
        cluster.kill_node(node_id)          # lose a worker node (SIGKILL its raylet)
        cluster.add_node("127.0.0.2")       # a node Ray sees on another machine

tests/system/test_cluster_system.py is the proof (launch from zero, removal when idle, a
127.0.0.2 worker joining, sweeps on it).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
FAKE_HEAD_TYPE = "ray.head.default"  # the node type the fake provider gives its head
MARKER = "ROBUST_ARCH_SEARCH_FAKE_CLUSTER"  # environment marker of every process we start
MB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_config(cluster_yaml: str | Path = ROOT / "cluster.yaml", *, gcs_address: str,
                worker_cpus: float = 1, max_workers: int = 2,
                idle_timeout_minutes: float = 0.1) -> dict[str, Any]:
    """The autoscaling config of a fake cluster with cluster.yaml's node types: its head type
    (0 CPUs: the driver only) and each worker type that has GPUs, from 0 to ``max_workers``
    nodes, each with ``worker_cpus`` CPUs (this machine has few) and the type's GPUs."""
    real = yaml.safe_load(Path(cluster_yaml).read_text())
    types = real["available_node_types"]
    head = types[real["head_node_type"]]
    small_store = {"object_store_memory": 100 * MB}
    node_types: dict[str, Any] = {
        FAKE_HEAD_TYPE: {"resources": {**head.get("resources", {}), **small_store},
                         "node_config": {}, "min_workers": 0, "max_workers": 0}}
    for name, node in types.items():
        gpus = node.get("resources", {}).get("GPU", 0)
        if name == real["head_node_type"] or not gpus:
            continue
        node_types[name] = {
            "resources": {"CPU": worker_cpus, "GPU": gpus, **small_store},
            "node_config": {}, "min_workers": 0,
            "max_workers": min(max_workers, node.get("max_workers", max_workers))}
    assert len(node_types) > 1, f"{cluster_yaml} has no worker type with GPUs"
    return {
        "cluster_name": "fake-" + real["cluster_name"],
        "max_workers": max_workers,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address,
                     "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        "auth": {"ssh_user": "ray"},
        "available_node_types": node_types,
        "head_node_type": FAKE_HEAD_TYPE,
        "docker": {},
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


_TOKEN: Path | None = None


def auth_token_path() -> Path:
    """One token for every cluster this process starts (Ray's C++ client caches the token it
    loaded first, so one process can talk to several clusters only if they share it); taken
    from RAY_AUTH_TOKEN_PATH when the caller already set one up."""
    global _TOKEN
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return Path(os.environ["RAY_AUTH_TOKEN_PATH"])
    if _TOKEN is None:
        _TOKEN = Path(tempfile.mkdtemp(prefix="rfc-token-")) / "auth_token"
        atexit.register(shutil.rmtree, _TOKEN.parent, True)
        _TOKEN.write_text(secrets.token_hex(32))
        _TOKEN.chmod(0o600)
    return _TOKEN


class FakeCluster:
    """A fake autoscaling Ray cluster: head on 127.0.0.1 (Ray's local-only mode, every server
    on loopback), GPU workers launched by the autoscaler from zero and removed when idle."""

    def __init__(self, cluster_yaml: str | Path = ROOT / "cluster.yaml", *, worker_cpus: float = 1,
                 max_workers: int = 2, idle_timeout_minutes: float = 0.1,
                 dashboard: bool = False, loopback: bool = True) -> None:
        self.loopback = loopback
        self.id = uuid.uuid4().hex[:12]
        self.port = free_port()
        # loopback: Ray's local-only mode, every server of the head binds 127.0.0.1; else the
        # head takes this machine's address and binds all interfaces, as a real head does
        self.address = f"{'127.0.0.1' if loopback else _machine_ip()}:{self.port}"
        self.dashboard_port = free_port() if dashboard else None
        self.config = fake_config(cluster_yaml, gcs_address=self.address, worker_cpus=worker_cpus,
                                  max_workers=max_workers, idle_timeout_minutes=idle_timeout_minutes)
        self.root = Path(tempfile.mkdtemp(prefix="rfc-", dir="/tmp"))  # short: socket paths
        self.config_path = self.root / "ray_bootstrap_config.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.token = auth_token_path()
        self.timings: dict[str, float] = {}
        self._gcs = None

    # -- environment --------------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """The environment of a process that should see this cluster as the one running on
        this machine (a driver run with no --address): Ray's temp dir and the token."""
        env = {**os.environ, "RAY_TMPDIR": str(self.root), "RAY_AUTH_MODE": "token",
               "RAY_AUTH_TOKEN_PATH": str(self.token), MARKER: self.id}
        if self.loopback:  # else Ray rewrites 127.0.0.1 to this machine's address, not served
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        else:
            env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        return env

    @property
    def temp_dir(self) -> Path:
        """Ray's temp dir of this cluster: sessions, logs, and ray_current_cluster."""
        return self.root / "ray"

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, timeout: float = 120) -> FakeCluster:
        # In local-only mode the fake workers, started by the autoscaler in its own process,
        # take 127.0.0.1 as their address too; else this machine's address, like the head's.
        env = {**self.env,
               "RAY_FAKE_CLUSTER": "1",  # the fake provider refuses to run without it
               "AUTOSCALER_UPDATE_INTERVAL_S": "1",  # the autoscaler's loop (5 s by default)
               "RAY_USAGE_STATS_ENABLED": "0"}
        ip = self.address.rpartition(":")[0]
        cmd = [RAY, "start", "--head", f"--port={self.port}", f"--node-ip-address={ip}",
               f"--autoscaling-config={self.config_path}", "--num-cpus=0", "--num-gpus=0",
               f"--object-store-memory={100 * MB}", "--disable-usage-stats"]
        if self.dashboard_port:
            cmd += ["--include-dashboard=true", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={self.dashboard_port}"]
        else:
            cmd += ["--include-dashboard=false"]
        t0 = time.monotonic()
        try:
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.shutdown()
            raise
        if out.returncode != 0:
            self.shutdown()
            raise RuntimeError(f"ray start --head failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        self.timings["head_start_s"] = time.monotonic() - t0
        return self

    def __enter__(self) -> FakeCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def add_node(self, ip: str = "127.0.0.2", *, cpus: float = 1, gpus: float = 0,
                 timeout: float = 120) -> str:
        """Join a node with the head's token, as a second machine would; returns its node id.
        A node on 127.0.0.2 is, to Ray, on another machine (the whole 127/8 is loopback here).

        Without ``loopback`` this is ``ray start --address=HEAD --node-ip-address=IP``. With it,
        the same ``ray._private.node.Node`` that `ray start` (and the fake autoscaler) creates,
        started from Python in local-only mode: `ray start --address` refuses local-only mode
        and, outside it, rewrites a 127.0.0.1 head address to this machine's address, where a
        loopback-only head does not listen."""
        before = {n["node_id"] for n in self.nodes()}
        t0 = time.monotonic()
        if self.loopback:
            cmd = [sys.executable, "-c", _JOIN, ip, self.address, str(cpus), str(gpus)]
        else:
            cmd = [RAY, "start", f"--address={self.address}", f"--node-ip-address={ip}",
                   f"--num-cpus={cpus}", f"--num-gpus={gpus}", f"--object-store-memory={100 * MB}",
                   "--disable-usage-stats"]
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"joining a node on {ip} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        new = self.wait_for(lambda: [n for n in self.nodes() if n["node_id"] not in before
                                     and n["ip"] == ip], timeout=timeout)
        if not new:
            raise RuntimeError(f"the node on {ip} never registered with the head")
        self.timings[f"join_{ip}_s"] = time.monotonic() - t0
        return new[0]["node_id"]

    def kill_node(self, node_id: str) -> list[int]:
        """Lose a node the way a preempted instance is lost: SIGKILL its raylet and everything
        under it (its workers: the trials running there). Returns the pids killed."""
        pids = [p for p, cmd in _cmdlines(self._pids()).items()
                if "raylet/raylet" in cmd and f"--node_id={node_id}" in cmd]
        if not pids:
            raise LookupError(f"no raylet of node {node_id} in this cluster")
        victims = _with_descendants(pids)
        _signal(victims, signal.SIGKILL)
        return sorted(victims)

    def shutdown(self, keep_logs: bool = False) -> None:
        """Stop every process of this cluster (TERM, then KILL after 5 s) and remove its temp
        root. Only processes tied to this cluster's temp root are touched."""
        self._gcs = None
        stop_processes(lambda: processes_of(self.root, f"{MARKER}={self.id}"))
        if not keep_logs:
            shutil.rmtree(self.root, ignore_errors=True)

    def _pids(self) -> set[int]:
        return processes_of(self.root, f"{MARKER}={self.id}")

    # -- what the cluster looks like ----------------------------------------------------------
    def gcs(self):
        if self._gcs is None:
            if os.environ.get("RAY_AUTH_MODE") != "token" or not os.environ.get("RAY_AUTH_TOKEN_PATH"):
                os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token))
                from ray._raylet import AuthenticationTokenLoader, Config

                Config.initialize("")  # Ray read RAY_AUTH_MODE when it was imported
                AuthenticationTokenLoader.instance().reset_cache()
            from ray._raylet import GcsClient

            self._gcs = GcsClient(address=self.address)
        return self._gcs

    def nodes(self, alive_only: bool = True) -> list[dict[str, Any]]:
        """The cluster's nodes from its GCS: node_id, ip, alive, resources."""
        from ray.core.generated.gcs_pb2 import GcsNodeInfo

        infos = self.gcs().get_all_node_info(timeout=10)
        rows = []
        for node_id, info in infos.items():
            alive = info.state == GcsNodeInfo.GcsNodeState.ALIVE
            if alive or not alive_only:
                rows.append({"node_id": node_id.hex(), "ip": info.node_manager_address,
                             "alive": alive, "resources": dict(info.resources_total),
                             "head": info.is_head_node})
        return rows

    def gpu_nodes(self) -> list[dict[str, Any]]:
        return [n for n in self.nodes() if n["resources"].get("GPU", 0) > 0]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 120, every: float = 0.5):
        """Poll until ``predicate()`` is truthy; that value, or None after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                value = predicate()
                if value:
                    return value
            time.sleep(every)
        return None

    def logs(self, name: str = "monitor.log", tail: int = 4000) -> str:
        """The tail of a log of the head's session (the autoscaler's is monitor.log)."""
        path = self.temp_dir / "session_latest" / "logs" / name
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""


_JOIN = """
import sys
from ray._private.node import Node
from ray._private.parameter import RayParams
ip, gcs, cpus, gpus = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
Node(RayParams(node_ip_address=ip, gcs_address=gcs, redis_address=gcs, num_cpus=cpus,
               num_gpus=gpus, object_store_memory=%d, min_worker_port=0, max_worker_port=0,
               dashboard_agent_listen_port=0),
     head=False, shutdown_at_exit=False, spawn_reaper=False)
""" % (100 * MB)


def _machine_ip() -> str:
    """This machine's address as Ray picks it (the source address towards the outside)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("8.8.8.8", 80))  # UDP: nothing is sent
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


# -- processes, by pid ----------------------------------------------------------------------
def processes_of(root: str | Path, marker: str | None = None) -> set[int]:
    """Processes tied to the directory ``root``: in their command line, their open files, or
    (``marker``, "NAME=VALUE") their environment. Never this process or its ancestors. (Ray's
    workers rename themselves, ``ray::IDLE``, which rewrites their command line and environment;
    their open log files still name the session directory.)"""
    root = str(root)
    mine = _ancestors(os.getpid())
    found = set()
    for pid in _all_pids():
        if pid in mine:
            continue
        try:
            if root in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                found.add(pid)
                continue
            if marker and marker.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.add(pid)
                continue
            if any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(root)
                   for fd in os.listdir(f"/proc/{pid}/fd")):
                found.add(pid)
        except OSError:
            continue
    return found


def stop_processes(find: Callable[[], set[int]]) -> None:
    """SIGTERM what ``find()`` returns and everything under it, then SIGKILL what is left."""
    for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        victims = _with_descendants(find())
        if not victims:
            return
        _signal(victims, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in victims):
            time.sleep(0.2)


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def _ancestors(pid: int) -> set[int]:
    seen = {pid}
    while (pid := _ppid(pid)) and pid not in seen:
        seen.add(pid)
    return seen


def _with_descendants(pids: set[int] | list[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        parent = _ppid(pid)
        if parent is not None:
            children.setdefault(parent, []).append(pid)
    result, stack = set(), list(pids)
    while stack:
        pid = stack.pop()
        if pid not in result:
            result.add(pid)
            stack.extend(children.get(pid, []))
    return result - _ancestors(os.getpid())


def _cmdlines(pids) -> dict[int, str]:
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _signal(pids, sig) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# -- the proof --------------------------------------------------------------------------------
GPU_TASK = """
import ray
ray.init(log_to_driver=False)
@ray.remote(num_gpus=1, num_cpus=1)
def where():
    import os
    return ray.get_runtime_context().get_node_id()[:8], ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")
print("ran on node %s with GPU ids %s, CUDA_VISIBLE_DEVICES=%s" % ray.get(where.remote()))
"""

