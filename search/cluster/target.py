"""Which Ray cluster a sweep runs on, decided before ray is imported.

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

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from space_defs.cli import UsageError

from .. import internals
from .processes import flag, owner, parent_of, processes


ATTACH_RULE = (
    "Runs on the Ray cluster at --address, else RAY_ADDRESS, else on the cluster whose head node "
    "is this machine (started here by `ray start --head` or `ray up`, as the current user), else "
    "on an embedded local Ray that only this command uses; --address local forces the embedded "
    "one.")


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
    for pid, argv in processes():
        if not argv or not argv[0].endswith("gcs_server") or f"--gcs_server_port={port}" not in argv:
            continue
        session = flag(argv, "--session-dir")
        if (session is None or owner(pid) != os.getuid()
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
    for _pid, argv in processes():
        if not any(a.endswith(internals.AUTOSCALER_MONITORS) for a in argv[:3]):
            continue
        gcs = flag(argv, "--gcs-address") or ""
        if gcs.rpartition(":")[2] != str(port):
            continue
        config = flag(argv, "--autoscaling-config")
        if config and os.access(os.path.expanduser(config), os.R_OK):
            return True, os.path.expanduser(config)
        return True, None
    return False, None


def _started_by_ray_start(gcs_pid: int) -> bool:
    """`ray start` exits and leaves its GCS to init (or a subreaper), or waits as its parent
    (``--block``); ``ray.init()`` and ``ray.cluster_utils`` keep it as their child, alive."""
    parent = parent_of(gcs_pid)
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
