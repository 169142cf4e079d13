"""Where a sweep runs, and how its trials use the cluster they run on.

The driver asks, in this order (ray is imported by ``connect``, not before):

    target = find_target(args.address)    # no ray import: the cluster to attach to, or None
    if target.embedded:                   # Ray's local-only mode, read when ray is imported
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    place = connect(target, runtime_env=...)   # ray.init; Place: nodes, GPUs now and to come
    check_storage(args.storage, place, shared=args.shared_storage)   # before anything is written
    gpus = gpus_per_trial(place, args.gpus_per_trial)
    check_trial_fits(place, cpus=spec.cpus_per_trial, gpus=gpus)
    say(place.describe())
    tune.RunConfig(failure_config=failure_config(), ...)

and each trial (in the trainable):

    device = trial_device(fake_gpus=...)  # a granted GPU CUDA can use, else GpuUnusableError
    own = OwnErrors.of_this_trial()       # its own errors, counted across retries
    try:
        fit(..., device=device.device)
    except Exception as e:
        if own.record(e):                 # retry from the last checkpoint, or end as failed
            raise
        tune.report(failure_result(e, ...))

Which cluster (ATTACH_RULE, for --help and README): --address, else RAY_ADDRESS, else the cluster
whose head node is this machine, else an embedded local Ray. "The cluster whose head node is this
machine" is the one `ray start --head` (which `ray up` runs on the head) recorded in Ray's
current-cluster file, ``$RAY_TMPDIR/ray/ray_current_cluster`` (``/tmp/ray/...`` by default: the
file `ray status` and ``ray.init()`` read), and only if its GCS server is running here, under
this user, in that temp dir, and was started by ``ray start``. Ray's own ``ray.init()`` attaches
to whatever that file names (``address="auto"``: to any Ray in the process table); this rule is
narrower, so that a sweep never lands on a stranger's Ray by accident:

- a stale file (the cluster is gone), or one naming another machine (this is a worker node of a
  cluster whose head is elsewhere): not attached;
- another user's cluster, or a cluster in another temp dir (tests, other sessions: Ray instances
  started with ``--temp-dir`` or ``RAY_TMPDIR`` elsewhere): not attached;
- a Ray that a Python program owns (``ray.init()``'s embedded instance, ``ray.cluster_utils``
  test clusters, which also write the default file): its GCS's parent is that program, alive;
  `ray start` leaves its GCS to init (or to `ray start --block`). Not attached.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from space_defs.cli import UsageError
from trainer.status import EnvironmentProblem

ATTACH_RULE = (
    "Runs on the Ray cluster at --address, else RAY_ADDRESS, else on the cluster whose head node "
    "is this machine (started here by `ray start --head` or `ray up`, as the current user), else "
    "on an embedded local Ray that only this command uses; --address local forces the embedded "
    "one.")
SHARED_STORAGE_HELP = (
    "the local --storage path is a mount every node of the cluster sees at the same path (NFS, "
    "EFS, Lustre); without it a local path is refused on a cluster of several machines")
# Retries: a trial that loses its node (preempted spot instance, dead worker) resumes from its
# last checkpoint up to NODE_LOSS_RETRIES times; its own errors (an exception in training) are
# retried OWN_ERROR_RETRIES times, counted by the trial itself (OwnErrors), then it ends failed.
NODE_LOSS_RETRIES = 20
OWN_ERROR_RETRIES = 2
_PROVIDERS_ON_THIS_MACHINE = {"fake_multinode"}  # autoscaler "instances" that are local processes


# -- which cluster: decided before ray is imported --------------------------------------------
@dataclass(frozen=True)
class Target:
    """The Ray to use: ``address`` None means an embedded local Ray."""

    address: str | None
    source: str  # "--address", "RAY_ADDRESS", "head" (this machine's cluster, or 'auto'), "embedded"
    head: LocalHead | None = None  # when this machine is the cluster's head

    @property
    def embedded(self) -> bool:
        return self.address is None


@dataclass(frozen=True)
class LocalHead:
    """A Ray cluster whose head node is this machine, as `ray start --head` left it."""

    address: str  # the GCS address ray_current_cluster names
    gcs_pid: int
    session_dir: str
    autoscaling_config: str | None  # the autoscaler's config file (`ray up`: ~/ray_bootstrap_config.yaml)


def find_target(address: str | None = None, environ: dict[str, str] | None = None) -> Target:
    """The cluster a sweep runs on, by ATTACH_RULE. Imports no ray."""
    environ = os.environ if environ is None else environ
    for given, source in ((address, "--address"), (environ.get("RAY_ADDRESS"), "RAY_ADDRESS")):
        if not given:
            continue
        if given == "local":
            return Target(None, "embedded")
        if given == "auto":
            head = local_head(environ)
            if head is None:
                raise UsageError(f"{source} is 'auto', but no Ray cluster was started on this "
                                 "machine (`ray start --head`); give the head's address, e.g. "
                                 "10.0.0.5:6379, or 'local' for an embedded Ray")
            return Target(head.address, "head", head)
        return Target(given, source, _head_at(given))
    head = local_head(environ)
    if head is not None:
        return Target(head.address, "head", head)
    return Target(None, "embedded")


def ray_temp_dir(environ: dict[str, str] | None = None) -> Path:
    """Ray's default temp dir, as `ray start` and ``ray.init()`` compute it."""
    environ = os.environ if environ is None else environ
    if "RAY_TMPDIR" in environ:
        base = environ["RAY_TMPDIR"]
    elif sys.platform.startswith("linux") and "TMPDIR" in environ:
        base = environ["TMPDIR"]
    else:
        base = "/tmp"
    return Path(base) / "ray"


def local_head(environ: dict[str, str] | None = None) -> LocalHead | None:
    """The cluster whose head node is this machine (see the module's rule), or None."""
    temp = ray_temp_dir(environ)
    try:
        recorded = (temp / "ray_current_cluster").read_text().strip()
    except OSError:
        return None
    host, _, port = recorded.rpartition(":")
    if not host or not port.isdigit() or not is_this_machine(host):
        return None
    for pid, argv in _processes():
        if not argv or not argv[0].endswith("gcs_server") or f"--gcs_server_port={port}" not in argv:
            continue
        session = _flag(argv, "--session-dir")
        if (session is None or _owner(pid) != os.getuid()
                or Path(session).resolve().parent != temp.resolve()
                or not _started_by_ray_start(pid)):
            continue
        return LocalHead(recorded, pid, session, _monitor(int(port))[1])
    return None


def _head_at(address: str) -> LocalHead | None:
    """The local head serving ``address``, when the address (e.g. RAY_ADDRESS from `ray job
    submit`) names a cluster whose head is this machine, so its autoscaler config is readable."""
    host, _, port = address.split("://")[-1].rpartition(":")
    if "://" in address or not port.isdigit() or not is_this_machine(host):
        return None
    found, config = _monitor(int(port))
    return LocalHead(address, 0, "", config) if found else None


def is_this_machine(host: str) -> bool:
    """Whether ``host`` is an address of this machine (loopback included)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    for family, _, _, _, sockaddr in infos:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.bind((sockaddr[0], 0))  # only an address of one of our interfaces binds
            return True
        except OSError:
            continue
    return False


def _monitor(port: int) -> tuple[bool, str | None]:
    """Whether the autoscaler (Ray's monitor) of the GCS on ``port`` runs on this machine, and
    its --autoscaling-config if it has one this user can read (none: a `ray start --head`
    cluster without autoscaling)."""
    for _pid, argv in _processes():
        if not any(a.endswith(("autoscaler/_private/monitor.py", "autoscaler/v2/monitor.py"))
                   for a in argv[:3]):
            continue
        gcs = _flag(argv, "--gcs-address") or ""
        if gcs.rpartition(":")[2] != str(port):
            continue
        config = _flag(argv, "--autoscaling-config")
        if config and os.access(os.path.expanduser(config), os.R_OK):
            return True, os.path.expanduser(config)
        return True, None
    return False, None


def _processes():
    """(pid, argv) of every process this user can see (Linux /proc; elsewhere none)."""
    try:
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        yield pid, [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _flag(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _owner(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _ppid(pid: int) -> int | None:
    return (_stat(pid) or (None, None))[0]


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks since boot) of a live process, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return int(fields[1]), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def descendants() -> dict[int, int]:
    """Every process this one started, and theirs (pid -> start time; Linux /proc)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for pid, _ in _processes():
        if (stat := _stat(pid)) is not None:
            children.setdefault(stat[0], []).append((pid, stat[1]))
    found, todo = {}, [os.getpid()]
    while todo:
        for pid, start in children.get(todo.pop(), ()):
            if pid not in found:
                found[pid] = start
                todo.append(pid)
    return found


def stop_processes(pids: dict[int, int], grace: float = 3.0) -> None:
    """SIGTERM the processes (pid -> start time) still alive, SIGKILL those left after
    ``grace`` seconds: each the same pid with the same start time, never a pid reused since."""
    def alive() -> list[int]:
        return [pid for pid, start in pids.items() if (_stat(pid) or (0, None))[1] == start]

    deadline = time.monotonic() + grace
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)


def _started_by_ray_start(gcs_pid: int) -> bool:
    """`ray start` exits and leaves its GCS to init (or a subreaper), or waits as its parent
    (``--block``); ``ray.init()`` and ``ray.cluster_utils`` keep it as their child, alive."""
    parent = _ppid(gcs_pid)
    if parent is None or parent <= 1:
        return True
    try:
        argv = [a.decode(errors="replace")
                for a in Path(f"/proc/{parent}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return True
    names = [os.path.basename(a) for a in argv]
    if "ray" in names and "start" in argv[names.index("ray") + 1:]:
        return True
    return not (names and names[0].startswith("python"))


# -- the cluster, once connected ----------------------------------------------------------------
@dataclass(frozen=True)
class NodeShape:
    """Resources of a node that is up, or of a node type the autoscaler may launch."""

    name: str  # node IP, or the node type's name
    cpus: float
    gpus: float
    up: bool  # a live node (else a type the autoscaler may launch, ``count`` of them)
    count: int = 1
    gpu_model: str | None = None  # Ray's accelerator type ("A10G"), or the instance type's GPU


# The GPU of AWS's GPU instance families (for what a node type the autoscaler may launch holds).
INSTANCE_GPUS = {"g4dn": "T4", "g5": "A10G", "g6": "L4", "g6e": "L40S", "p4d": "A100",
                 "p4de": "A100", "p5": "H100", "p5e": "H200", "p5en": "H200"}


@dataclass(frozen=True)
class Capacity:
    """What an autoscaler config (cluster.yaml's form) promises."""

    provider: str | None  # aws, fake_multinode, ...
    other_hosts: bool  # the nodes it launches are other machines
    types: tuple[NodeShape, ...]  # the worker types it may launch (count: the most of each)
    max_gpus: float | None  # the most GPUs its workers can have together; None: unknown
    max_cpus: float | None  # the same for CPUs


@dataclass(frozen=True)
class Place:
    """Where the sweep runs: what the driver prints first and decides GPUs and storage by."""

    address: str | None  # the GCS address; None for an embedded Ray
    source: str  # how it was chosen (Target.source)
    nodes: int  # alive nodes
    hosts: tuple[str, ...]  # their distinct IP addresses
    gpus: float  # GPUs on alive nodes now
    gpus_may_add: float | None  # more GPUs the autoscaler may launch; None: unknown
    provider: str | None = None  # the autoscaler's provider type (aws, fake_multinode, ...)
    may_add_hosts: bool = False  # the autoscaler launches nodes on other machines
    shapes: tuple[NodeShape, ...] = field(default_factory=tuple)
    cpus_may_add: float | None = 0.0  # more CPUs the autoscaler may launch; None: unknown

    @property
    def embedded(self) -> bool:
        return self.address is None

    @property
    def multi_host(self) -> bool:
        """The cluster's nodes are, or may come to be, on more than one machine."""
        return len(self.hosts) > 1 or self.may_add_hosts or (
            self.address is not None and self.address.startswith("ray://"))

    @property
    def has_gpus(self) -> bool:
        return self.gpus > 0 or (self.gpus_may_add or 0) > 0

    def describe(self) -> str:
        """One line: where, how many nodes, GPUs up now and to come."""
        if self.embedded:
            cpus = sum(s.cpus for s in self.shapes if s.up)
            return (f"running on an embedded local Ray (no Ray cluster was started on this machine): "
                    f"{cpus:g} CPUs, {self.gpus:g} GPUs")
        how = {"head": "this machine is its head node", "--address": "--address",
               "RAY_ADDRESS": "RAY_ADDRESS"}.get(self.source, self.source)
        machines = f"{len(self.hosts)} machine{'s' * (len(self.hosts) != 1)}"
        if self.gpus_may_add is None:
            more = "GPUs the autoscaler may add: unknown (declare GPU in its node types' resources)"
        elif self.gpus_may_add:
            types = ", ".join(f"{s.name} x{s.count}" for s in self.shapes if not s.up and s.gpus)
            more = f"up to {self.gpus_may_add:g} more from the autoscaler ({self.provider}: {types})"
        else:
            more = "the autoscaler adds none"
        return (f"running on the Ray cluster at {self.address} ({how}): {self.nodes} "
                f"node{'s' * (self.nodes != 1)} on {machines}, {self.gpus:g} GPUs up now, {more}")


@contextmanager
def ray_session(target: Target, **init_kwargs: Any) -> Iterator[Place]:
    """``connect(target)`` for the block, then ``ray.shutdown()``. An embedded Ray is this
    command's alone: when the block is left (normally, by an error, or by Ctrl-C) every process
    it started is gone (``ray.shutdown()`` stops its GCS and raylet, and leaves the raylet's
    agents and workers to notice on their own, seconds or minutes later). A cluster's processes
    are the cluster's: only this command's connection ends."""
    place = connect(target, **init_kwargs)
    try:
        yield place
    finally:
        import ray

        started = descendants() if target.embedded else {}
        ray.shutdown()
        stop_processes(started)


def connect(target: Target, **init_kwargs: Any) -> Place:
    """``ray.init`` for ``target`` (an embedded Ray binds 127.0.0.1 when the caller set Ray's
    local-only mode first), then where it landed. UsageError, in one line, when the cluster
    cannot be reached, refuses our token, or runs another Ray version."""
    import ray

    kwargs = {"log_to_driver": False, "logging_level": "warning", **init_kwargs}
    _token_auth_as_ray_init(target)
    if target.embedded:
        ray.init(address="local", include_dashboard=False, configure_logging=True, **kwargs)
        return place_of(target)
    _check_reachable(target.address)
    _check_token(target)
    try:
        ray.init(address=target.address, **kwargs)
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, its own
        raise _connect_error(target, e) from None
    return place_of(target)


def _token_auth_as_ray_init(target: Target) -> None:
    """Token authentication decided as ``ray.init()`` decides it (Ray 2.60's worker.py), then
    set explicitly in RAY_AUTH_MODE, which is also what keeps Ray's "Token authentication is
    enabled" warning off every run: an embedded Ray uses a token (Ray writes ~/.ray/auth_token
    if there is none); the cluster whose head is this machine, the one ``ray.init()`` finds by
    itself, is joined with a token whenever one is available (~/.ray/auth_token,
    RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH), as `ray start --head` enables token auth whenever
    one is. RAY_AUTH_MODE given, or an explicit address (which ``ray.init`` never
    auto-enables either): left as it is."""
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return
    from ray._raylet import AuthenticationTokenLoader, Config

    if target.embedded or (target.source == "head" and AuthenticationTokenLoader.instance()
                           .has_token(ignore_auth_mode=True)):
        os.environ["RAY_AUTH_MODE"] = "token"  # for this process and every one it starts
        Config.initialize("")  # Ray read the mode when it was imported


def place_of(target: Target) -> Place:
    """Where the connected Ray (``ray.init`` done) runs: its live nodes, and what its autoscaler
    may add (from its config file when this machine is the head, else from the GCS)."""
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    up = tuple(NodeShape(n["NodeManagerAddress"], n["Resources"].get("CPU", 0.0),
                         n["Resources"].get("GPU", 0.0), up=True,
                         gpu_model=next((k.split(":", 1)[1] for k in n["Resources"]
                                         if k.startswith("accelerator_type:")), None))
               for n in alive)
    hosts = tuple(sorted({n["NodeManagerAddress"] for n in alive}))
    gpus = sum(s.gpus for s in up)
    if target.embedded:
        return Place(None, target.source, len(alive), hosts, gpus, 0.0, shapes=up)
    config = _read_config(target.head.autoscaling_config) if target.head else None
    cpus_may_add: float | None = 0.0
    if config is not None:
        capacity = autoscaler_capacity(config)
        provider, may_add_hosts, types = capacity.provider, capacity.other_hosts, capacity.types
        workers = [s for s, n in zip(up, alive) if not _is_head(n)]
        may_add, cpus_may_add = (
            None if most is None else max(0.0, most - sum(getattr(s, what) for s in workers))
            for most, what in ((capacity.max_gpus, "gpus"), (capacity.max_cpus, "cpus")))
    elif target.head is not None:  # a head started without an autoscaler: nothing comes
        provider, may_add_hosts, types, may_add = None, False, (), 0.0
    else:
        provider, may_add_hosts, types, may_add = None, False, (), _gcs_max_gpus(gpus)
        cpus_may_add = None
    return Place(target.address, target.source, len(alive), hosts, gpus, may_add, provider,
                 may_add_hosts, up + types, cpus_may_add)


def autoscaler_capacity(config: dict[str, Any]) -> Capacity:
    """From an autoscaler config (cluster.yaml's form): provider type, whether launched nodes
    are other machines, the worker types it may launch, and the most GPUs and CPUs its workers
    can have together (node types' max_workers within the cluster's max_workers; None when a
    type that may launch declares no resources, e.g. AWS types left for the autoscaler to
    detect)."""
    provider = (config.get("provider") or {}).get("type")
    head_type = config.get("head_node_type")
    cap = config.get("max_workers")
    types, unknown = [], False
    for name, node in (config.get("available_node_types") or {}).items():
        if name == head_type:
            continue
        count = int(node.get("max_workers", cap if cap is not None else 0))
        if cap is not None:
            count = min(count, int(cap))
        if count <= 0:
            continue
        resources = node.get("resources") or {}
        unknown |= not resources
        instance = str((node.get("node_config") or {}).get("InstanceType", ""))
        types.append(NodeShape(name, float(resources.get("CPU", 0)), float(resources.get("GPU", 0)),
                               up=False, count=count,
                               gpu_model=INSTANCE_GPUS.get(instance.split(".")[0])))

    def most(what: str) -> float | None:
        remaining = int(cap) if cap is not None else sum(t.count for t in types)
        total = 0.0
        for t in sorted(types, key=lambda t: -getattr(t, what)):  # the most the cap allows
            n = min(t.count, remaining)
            total += n * getattr(t, what)
            remaining -= n
        return None if unknown and not total else total

    may_add_hosts = bool(types) and provider not in _PROVIDERS_ON_THIS_MACHINE
    return Capacity(provider, may_add_hosts, tuple(types), most("gpus"), most("cpus"))


def _read_config(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    try:
        import yaml

        data = yaml.safe_load(text)  # `ray up` writes JSON, which YAML reads too
    except Exception:  # noqa: BLE001 - unreadable: treat as no config
        try:
            data = json.loads(text)
        except ValueError:
            return None
    return data if isinstance(data, dict) else None


def _is_head(node: dict[str, Any]) -> bool:
    return "node:__internal_head__" in node.get("Resources", {})


def _gcs_max_gpus(gpus_now: float) -> float | None:
    """GPUs the autoscaler may add, from the cluster config an autoscaler published to the GCS
    (KubeRay, autoscaler v2); None when none was published."""
    try:
        import ray._private.state

        limits = ray._private.state.state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - private API: unknown
        return None
    if limits is None:
        return None
    return max(0.0, float(limits.get("GPU", 0)) - gpus_now)


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after Ray's minutes of retries, when nothing listens there."""
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise UsageError(f"cannot reach the Ray cluster at {address!r} ({e.strerror or e}); check "
                         "the address (`ray status` on the head node), or use --address local "
                         "for an embedded Ray") from None


def _check_token(target: Target) -> None:
    """A wrong or missing token fails in a second here, not after ray.init's 20 s of retries."""
    if "://" in target.address:
        return
    from ray._raylet import GcsClient

    saved = os.dup(2)  # Ray's C++ client logs each refusal to stderr: the user gets our line
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                GcsClient(address=target.address, cluster_id=None)
            finally:
                os.dup2(saved, 2)
    except Exception as e:  # noqa: BLE001 - only an authentication failure is ours to explain
        if "auth" in type(e).__name__.lower() or "InvalidAuthToken" in str(e):
            raise _connect_error(target, e) from None
    finally:
        os.close(saved)


def _connect_error(target: Target, error: Exception) -> UsageError:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    where = f"the Ray cluster at {target.address!r} ({target.source})"
    if "auth" in type(error).__name__.lower() or "InvalidAuthToken" in str(error):
        return UsageError(f"{where} refused this command's authentication token: set "
                          "RAY_AUTH_MODE=token and give the cluster's token in ~/.ray/auth_token "
                          "or RAY_AUTH_TOKEN_PATH (`ray get-auth-token` on the head prints it)")
    if "version mismatch" in str(error).lower():
        return UsageError(f"{where} runs another Ray or Python version than this command "
                          f"({first}); run the sweep on the head node, or install the same versions")
    return UsageError(f"cannot connect to {where}: {first}")


# -- decisions ----------------------------------------------------------------------------------
def gpus_per_trial(place: Place, requested: float | None) -> float:
    """GPUs each trial asks for: ``requested`` (the user's, fractions included) if given, else 1
    when the cluster has GPUs or its autoscaler may launch GPU nodes, else 0. A request the
    cluster can never meet is refused rather than left to wait forever."""
    if requested is None:
        return 1.0 if place.has_gpus else 0.0
    if requested > 0 and not place.has_gpus and place.gpus_may_add is not None:
        where = "this machine has" if place.embedded else "this Ray cluster has"
        raise UsageError(f"--gpus-per-trial {requested:g}: {where} no GPUs and none can be added; "
                         "use --gpus-per-trial 0, or a cluster with GPU workers")
    return float(requested)


def concurrent_trials(place: Place, *, cpus: float, gpus: float) -> int:
    """How many trials the cluster can run at once (``--max-concurrent``'s default): for GPU
    trials its GPUs, up now and those the autoscaler may add, over the GPUs per trial; for CPU
    trials its CPUs likewise; unknown additions count as none; at least 1."""
    if gpus > 0:
        have, per = place.gpus + (place.gpus_may_add or 0.0), gpus
    else:
        have, per = sum(s.cpus for s in place.shapes if s.up) + (place.cpus_may_add or 0.0), cpus
    return max(1, int(have / per + 1e-9))


def check_trial_fits(place: Place, *, cpus: float, gpus: float) -> None:
    """UsageError when no node, up or launchable, has ``cpus`` CPUs and ``gpus`` GPUs for one
    trial (its trials would wait forever). Unknown launchable types are given the benefit."""
    if place.gpus_may_add is None and not place.embedded:
        return
    if any(s.cpus >= cpus and s.gpus >= gpus for s in place.shapes):
        return
    largest = ", ".join(sorted({f"{s.cpus:g} CPUs/{s.gpus:g} GPUs" for s in place.shapes})) or "none"
    raise UsageError(f"a trial asks for {cpus:g} CPUs and {gpus:g} GPUs, but no node of "
                     f"{'this machine' if place.embedded else 'this cluster'} has that much "
                     f"(nodes: {largest}); lower --cpus-per-trial or --gpus-per-trial")


def check_storage(storage: str, place: Place, *, shared: bool = False) -> None:
    """Refuse, before anything is written, a local --storage path on a cluster whose nodes are
    (or, as the autoscaler adds them, will be) on more than one machine: trials on the other
    machines cannot write their checkpoints there. ``shared`` (--shared-storage) declares the
    path a mount that every node sees at the same place."""
    from .db.storage import is_local

    if not is_local(storage) or shared or not place.multi_host:
        return
    if len(place.hosts) > 1:
        why = f"this Ray cluster's nodes are on {len(place.hosts)} machines ({', '.join(place.hosts)})"
    elif place.may_add_hosts:
        why = f"this Ray cluster's autoscaler adds nodes on other machines ({place.provider})"
    else:
        why = "this command is not on a node of the Ray cluster"
    raise UsageError(f"--storage {storage} is a local path, but {why}: trials there cannot write "
                     "it. Use --storage s3://BUCKET/PREFIX (or another URI every node reaches), or "
                     "a shared mount every node sees at the same path and add --shared-storage")


# -- retries: losing a node is not the trial's fault --------------------------------------------
def failure_config():
    """Tune's retries for a trial: Tune counts every failure, node losses and the trial's own
    errors alike, so it may retry NODE_LOSS_RETRIES + OWN_ERROR_RETRIES times, and the trial
    itself (OwnErrors) ends as failed after OWN_ERROR_RETRIES retries of its own errors.
    (Tune 2.60 already leaves out failures Ray marks as preemption, ``RayActorError.preempted``,
    i.e. nodes drained for preemption.)"""
    from ray import tune

    return tune.FailureConfig(max_failures=NODE_LOSS_RETRIES + OWN_ERROR_RETRIES)


def is_node_loss(error: BaseException | str | None) -> bool:
    """Whether a trial's failure, as Tune recorded it (the exception, or its text from
    ``trial.get_error()``), is the loss of its process or node rather than its own error."""
    if error is None:
        return False
    if isinstance(error, str):
        text = error
    else:
        from ray import exceptions as rex

        lost = (rex.RayActorError, rex.NodeDiedError, rex.WorkerCrashedError,
                rex.LocalRayletDiedError, rex.ObjectLostError)
        if isinstance(error, lost):
            return True
        if isinstance(error, rex.RayTaskError):
            try:
                return isinstance(error.as_instanceof_cause(), lost)
            except Exception:  # noqa: BLE001 - an unpicklable cause: read its text
                pass
        text = f"{type(error).__name__}: {error}"
    first = next((line for line in text.splitlines() if line.strip()
                  and not line.startswith("Failure #")), "")
    names = ("ActorDiedError", "RayActorError", "ActorUnavailableError", "NodeDiedError",
             "WorkerCrashedError", "LocalRayletDiedError", "ObjectLostError")
    return any(name in first for name in names) or "The actor died" in text[:500]


def environment_problem(error: BaseException | str | None) -> str | None:
    """The message of a trial's failure (as trial_error gives it) when it is an
    EnvironmentProblem (a GPU CUDA cannot use, data neither on disk nor downloadable), in one
    line; None for any other failure."""
    if error is None:
        return None
    if isinstance(error, str):  # the traceback's text: the exception's line names its class
        names = "|".join(cls.__name__ for cls in _environment_problems())
        found = re.search(rf"^(?:[\w.]+\.)?(?:{names}): (.+)$", error, re.M)
        return found[1].strip() if found else None
    cause = getattr(error, "cause", None) or error  # RayTaskError keeps the trial's exception
    if isinstance(cause, EnvironmentProblem):
        return (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return None


def _environment_problems() -> list[type]:
    from trainer.datasets import DataUnavailableError

    return [GpuUnusableError, DataUnavailableError, EnvironmentProblem]


def trial_error(trial) -> BaseException | str | None:
    """The error a Tune trial failed with last, as Tune wrote it at once in the trial's local
    directory: ``error.txt`` gets a block for every failure, ``error.pkl`` the exception of
    Ray's errors only (so it can hold an older failure: then the text is the last one). Never
    the storage copies that ``trial.get_error()`` and ``get_pickled_error()`` read: those are
    uploaded with Tune's next snapshot, so in on_trial_recover and on_trial_error they hold the
    failure before the last one, or none."""
    text = _last_failure(getattr(trial, "error_file", None))
    path = getattr(trial, "pickled_error_file", None)
    if path and os.path.exists(path):
        try:
            import cloudpickle

            with open(path, "rb") as f:
                pickled = cloudpickle.load(f)
            if text is None or str(pickled).strip() == text:
                return pickled
        except Exception:  # noqa: BLE001 - unpicklable: the text says it
            pass
    return text


def _last_failure(path: str | None) -> str | None:
    """The newest "Failure # N (occurred at ...)" block of Tune's error.txt, without its header."""
    try:
        text = Path(path).read_text(errors="replace") if path else ""
    except OSError:
        return None
    blocks = text.split("Failure # ")
    return blocks[-1].partition("\n")[2].strip() if len(blocks) > 1 else None


def describe_error(error: BaseException | str | None) -> str:
    """One line for the console and the database: the exception's type and message (for an
    exception raised in a trial, the trial's own exception, not Ray's wrapper of it)."""
    if error is None:
        return "unknown error"
    if isinstance(error, BaseException):
        cause = getattr(error, "cause", None)
        error = cause if isinstance(cause, BaseException) else error
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
        return f"{type(error).__name__}: {first}"[:500]
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    return lines[-1][:500] if lines else "unknown error"


class OwnErrors:
    """A trial's own errors, counted in a file next to the trial on the sweep's storage
    (``own_errors.json`` in Tune's trial directory), so that the count survives retries on
    other nodes and a restarted driver."""

    NAME = "own_errors.json"

    def __init__(self, filesystem, directory: str, limit: int = OWN_ERROR_RETRIES) -> None:
        self.fs, self.path, self.limit = filesystem, f"{directory.rstrip('/')}/{self.NAME}", limit

    @classmethod
    def of_this_trial(cls, limit: int = OWN_ERROR_RETRIES) -> OwnErrors:
        """Inside a Tune trial: the counter of this trial (Tune's trial directory on storage)."""
        from ray import tune

        storage = tune.get_context().get_storage()
        return cls(storage.storage_filesystem, storage.trial_fs_path, limit)

    def errors(self) -> list[str]:
        try:
            with self.fs.open_input_stream(self.path) as f:
                return list(json.loads(f.readall().decode()))
        except (OSError, ValueError, TypeError):
            return []  # none yet (or unreadable: counting restarts rather than failing)

    def record(self, error: BaseException) -> bool:
        """Count ``error``; True when the trial may still be retried for it (raise it), False
        when it has used its retries (report it as failed and return)."""
        errors = [*self.errors(), f"{type(error).__name__}: {error}"[:300]]
        data = json.dumps(errors).encode()
        try:
            self.fs.create_dir(self.path.rpartition("/")[0], recursive=True)
            with self.fs.open_output_stream(self.path) as f:
                f.write(data)
        except OSError:
            pass  # uncounted: Tune's own limit still ends it
        return len(errors) <= self.limit


# -- the device a trial really runs on --------------------------------------------------------
FAKE_GPUS_HELP = (
    "allow GPUs that CUDA cannot use, such as Ray's fake ones (`ray start --num-gpus=N` or a "
    "fake_multinode cluster on a machine without a GPU; for tests): a trial granted one trains "
    "on the CPU and says so. Without it such a trial stops the sweep (exit 2)")
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
        return ray._private.worker.global_worker.node_ip_address
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
