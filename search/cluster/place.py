"""What the connected cluster has and may add (Place), and the driver's decisions by it: GPUs
per trial, trials at once, whether a trial fits, whether a local storage path will do."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from space_defs.cli import UsageError

from .. import internals
from .target import Target


SHARED_STORAGE_HELP = (
    "the local --storage path is a mount every node of the cluster sees at the same path (NFS, "
    "EFS, Lustre); without it a local path is refused on a cluster of several machines")


_PROVIDERS_ON_THIS_MACHINE = {"fake_multinode"}  # autoscaler "instances" that are local processes


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
    return internals.HEAD_NODE_RESOURCE in node.get("Resources", {})


def _gcs_max_gpus(gpus_now: float) -> float | None:
    """GPUs the autoscaler may add, from the cluster config an autoscaler published to the GCS
    (KubeRay, autoscaler v2); None when none was published."""
    try:
        limits = internals.cluster_config_max_resources()
    except Exception:  # noqa: BLE001 - private API: unknown
        return None
    if limits is None:
        return None
    return max(0.0, float(limits.get("GPU", 0)) - gpus_now)


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
    from ..storage import open_storage

    if open_storage(storage).reaches_every_node or shared or not place.multi_host:
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
