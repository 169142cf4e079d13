"""Run a sweep: Tune + Optuna over the budget space, resumable and extendable.

A sweep directory holds the saved SweepSpec (``sweep.json``), the Optuna study
(``optuna.journal``, opens in optuna-dashboard), one Tune experiment per segment (``tune-1``,
``tune-2``, ... : a rerun with more ``--trials`` adds a segment whose sampler sees every earlier
trial) and the trial database (``db/``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickletools
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .spec import SweepSpec

SPEC_FILE = "sweep.json"
SEGMENTS_FILE = "segments.json"
JOURNAL_FILE = "optuna.journal"


@dataclass(frozen=True)
class DefineByRun:
    """The searcher's space: Optuna suggests through ``trial``; the solved architecture comes
    back as constants, so each Tune config holds the exact network to train."""

    spec_json: str

    def __call__(self, trial) -> dict[str, Any]:
        from space_defs import suggest_config

        spec = SweepSpec.from_json(self.spec_json)
        cfg = suggest_config(trial, spec.budget, space=spec.search_space(),
                             max_macs=spec.max_macs, tolerance=spec.tolerance)
        return cfg.to_dict()


@dataclass(frozen=True)
class Segment:
    name: str  # Tune experiment directory within the sweep
    trials: int  # how many trials it runs
    done: bool = False


class SweepDir:
    """The files of one sweep on local storage or a pyarrow filesystem (s3://...)."""

    def __init__(self, storage: str, name: str):
        import pyarrow.fs as pafs

        self.storage = storage if "://" in storage else os.path.abspath(storage)
        self.uri = f"{self.storage.rstrip('/')}/{name}"
        if "://" in self.uri:
            self.fs, self.path = pafs.FileSystem.from_uri(self.uri)
        else:
            self.fs, self.path = pafs.LocalFileSystem(), self.uri
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def read(self, name: str) -> str | None:
        import pyarrow.fs as pafs

        path = f"{self.path}/{name}"
        if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        with self.fs.open_input_stream(path) as f:
            return f.read().decode()

    def write(self, name: str, text: str) -> None:
        """Atomically: a temp file renamed over the old one (one PUT on object stores)."""
        self.fs.create_dir(self.path, recursive=True)
        path = f"{self.path}/{name}"
        if not self.local:
            with self.fs.open_output_stream(path) as f:
                f.write(text.encode())
            return
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def check_writable(self) -> None:
        """StoreError, before anything runs, if the sweep directory cannot be written."""
        from .errors import StoreError

        probe = f"{self.path}/.writable-{os.getpid()}"
        try:
            self.fs.create_dir(self.path, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"ok")
            self.fs.delete_file(probe)
        except OSError as e:
            raise StoreError(f"cannot write to the sweep directory {self.uri} ({e}); choose a "
                             "writable --storage or free space on it") from None

    def segments(self) -> list[Segment]:
        text = self.read(SEGMENTS_FILE)
        return [Segment(**s) for s in json.loads(text)] if text else []

    def save_segments(self, segments: list[Segment]) -> None:
        self.write(SEGMENTS_FILE, json.dumps([dataclasses.asdict(s) for s in segments], indent=2))


def prepare(spec: SweepSpec, sweep: SweepDir) -> SweepSpec:
    """The spec to run: a new sweep is checked and saved; an existing one must not have
    changed what its results mean (only --trials may grow, and how it runs may change)."""
    saved_text = sweep.read(SPEC_FILE)
    if saved_text is None:
        spec.check()
        sweep.write(SPEC_FILE, spec.to_json())
        return spec
    saved = SweepSpec.from_json(saved_text)
    changes = spec.changes_from(saved)
    if changes:
        raise UsageError(f"sweep {spec.name!r} already exists with other settings ({'; '.join(changes)}); "
                         f"rerun it with its original arguments (only --trials may grow) or pick a new --name")
    if spec != saved:
        sweep.write(SPEC_FILE, spec.to_json())
    return spec


def open_study(spec: SweepSpec, sweep: SweepDir, *, enqueue_baselines: bool):
    """The sweep's Optuna study, with the baselines queued first (once, however often the
    segment is restarted). It lives in a journal file in the sweep directory (it opens in
    optuna-dashboard); on object storage, where a journal cannot be appended to, in memory."""
    import optuna
    from optuna.storages import InMemoryStorage, JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if sweep.local:
        Path(sweep.path).mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(os.path.join(sweep.path, JOURNAL_FILE)))
    else:
        storage = InMemoryStorage()
    directions = ["maximize" if m == "max" else "minimize" for m in spec.modes]
    study = optuna.create_study(storage=storage, study_name=spec.name, directions=directions,
                                load_if_exists=True)
    if enqueue_baselines and spec.space != "grid":
        for point in spec.search_space().baseline_params():
            study.enqueue_trial(point, skip_if_exists=True)
    return storage


def build_tuner(spec: SweepSpec, sweep: SweepDir, segment: Segment, *, first: bool,
                data_dir: str, device_name: str, restore: bool, train=None, callbacks=()):
    """The segment's Tuner; ``train`` replaces the trainer (benchmarks), ``callbacks`` are added."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.search.optuna import OptunaSearch

    from .recorder import SweepRecorder
    from .trainable import train_trial

    # Tune's result.json stays (the recorder backfills from it); its CSV and TensorBoard logs
    # duplicate the trial database, and tensorboardX would import torch into the driver (3 s).
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    trainable = tune.with_resources(
        tune.with_parameters(train or train_trial, spec_json=spec.to_json(), data_dir=data_dir),
        {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial})
    if restore:
        return tune.Tuner.restore(f"{sweep.uri}/{segment.name}", trainable,
                                  resume_unfinished=True, resume_errored=True)
    single = len(spec.objectives) == 1
    metric = spec.objectives[0] if single else list(spec.objectives)
    mode = spec.modes[0] if single else list(spec.modes)
    space = spec.search_space()
    if spec.space == "grid":
        sampler = optuna.samplers.GridSampler(space.grid_search_space(), seed=spec.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=spec.seed + len(sweep.segments()),
                                             n_startup_trials=min(10, max(2, spec.trials // 3)))
    searcher = OptunaSearch(
        space=DefineByRun(spec.to_json()), metric=metric, mode=mode, sampler=sampler,
        study_name=spec.name, storage=open_study(spec, sweep, enqueue_baselines=first))
    if spec.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", metric=metric, mode=mode,
                                  max_t=spec.recipe.epochs, grace_period=spec.grace_epochs)
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=spec.max_concurrent),
            scheduler=scheduler, num_samples=segment.trials, reuse_actors=True),
        run_config=tune.RunConfig(
            name=segment.name, storage_path=sweep.uri, verbose=0,
            callbacks=[JsonLoggerCallback(), SweepRecorder(spec, sweep.storage, device_name=device_name),
                       *callbacks],
            failure_config=tune.FailureConfig(max_failures=2),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))


# Tune's driver state, saved per run as files stamped with the run's start time
TUNE_STATE = re.compile(r"(experiment_state|search_gen_state|searcher-state|callback-states)-(.+)\.(json|pkl)")


def set_aside_unreadable_state(sweep: SweepDir, segment: Segment, say=print) -> None:
    """Tune rewrites its driver state (experiment, search generator, searcher, callbacks) in
    place and copies it to storage without a rename, so a full disk or a kill mid-write leaves
    a snapshot torn, and Tune then fails or silently starts over. Newest first, move a
    snapshot with any torn file aside, whole, so the restore uses the newest intact one."""
    import pyarrow.fs as pafs

    entries = sweep.fs.get_file_info(pafs.FileSelector(f"{sweep.path}/{segment.name}",
                                                       allow_not_found=True))
    snapshots: dict[str, list[str]] = {}
    for e in entries:
        if m := TUNE_STATE.fullmatch(e.base_name):
            snapshots.setdefault(m[2], []).append(e.path)
    for stamp in sorted(snapshots, reverse=True):
        torn = [p.rsplit("/", 1)[-1] for p in snapshots[stamp] if not _intact(sweep.fs, p)]
        if not torn:
            return
        for path in snapshots[stamp]:
            sweep.fs.move(path, path + ".unreadable")
        say(f"{segment.name}: Tune's snapshot {stamp} is torn ({', '.join(sorted(torn))}; kept as "
            ".unreadable); resuming from the one before it")


def _intact(fs, path: str) -> bool:
    """Whether a state file parses to its end: the experiment state is JSON, the others are
    pickles (search_gen_state's ".json" too), walked with pickletools, never loaded."""
    with fs.open_input_stream(path) as f:
        data = f.read()
    try:
        if path.rsplit("/", 1)[-1].startswith("experiment_state-"):
            json.loads(data)
        else:
            for _ in pickletools.genops(data):
                pass
        return True
    except ValueError:
        return False


def run_segments(spec: SweepSpec, sweep: SweepDir, *, data_dir: str, device_name: str,
                 say=print) -> None:
    """Finish the last unfinished segment, then add one for the trials still missing. What
    counts is the database: every trial it holds, whatever its status, is one of ``--trials``,
    except those lost with a torn Tune snapshot, which new trials replace."""
    from ray import tune

    from .recorder import mark_lost
    from .store import list_sweeps, load_trials

    segments = sweep.segments()
    while True:
        segment = segments[-1] if segments and not segments[-1].done else None
        if segment is not None:
            set_aside_unreadable_state(sweep, segment, say)
            restore = tune.Tuner.can_restore(f"{sweep.uri}/{segment.name}")
        if segment is None or not restore:
            mark_lost(spec.name, sweep.storage, live=set())  # no Tune state will resume them
            recorded = (load_trials(sweep.storage, spec.name) if spec.name in list_sweeps(sweep.storage)
                        else None)
            missing = spec.trials - (0 if recorded is None else int((recorded["status"] != "lost").sum()))
            if missing <= 0:
                if segment is not None:
                    sweep.save_segments([*segments[:-1], dataclasses.replace(segment, done=True)])
                return
            done = [dataclasses.replace(s, done=True) for s in segments]
            segment = Segment(name=f"tune-{len(segments) + 1}", trials=missing)
            segments = [*done, segment]
            sweep.save_segments(segments)
            restore = False
            say(f"starting {segment.name}: {segment.trials} new trials")
        else:
            say(f"resuming {segment.name}: {segment.trials} trials")
        tuner = build_tuner(spec, sweep, segment, first=segment.name == "tune-1",
                            data_dir=data_dir, device_name=device_name, restore=restore)
        tuner.fit()
        segments = [*segments[:-1], dataclasses.replace(segment, done=True)]
        sweep.save_segments(segments)


class SweepBusy(UsageError):
    """Another driver holds the sweep's lock."""


@contextmanager
def lock(sweep: SweepDir):
    """One driver per sweep: a lock file in the sweep directory, held while it runs. (Object
    storage has no locks: there, one driver per sweep is the user's responsibility.)"""
    from filelock import FileLock, Timeout

    if not sweep.local:
        yield
        return
    Path(sweep.path).mkdir(parents=True, exist_ok=True)
    held = FileLock(os.path.join(sweep.path, "driver.lock"))
    try:
        held.acquire(timeout=0)
    except Timeout:
        raise SweepBusy(f"sweep {Path(sweep.path).name!r} is being run by another driver right now; "
                        "wait for it to finish, or choose another --name") from None
    try:
        yield
    finally:
        held.release()


def check_reachable(address: str | None) -> None:
    """Fail in seconds, not after Ray's minutes of retries, when nothing listens there."""
    import socket

    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise UsageError(f"cannot reach the Ray cluster at {address!r} ({e.strerror or e}); check the "
                         "address (`ray status` on the head node), or omit --address and unset "
                         "RAY_ADDRESS for a local run") from None


def quiet_libraries() -> None:
    """Our recorder prints one line per trial event; Tune's and Optuna's own chatter goes."""
    import optuna

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the old engine honours verbose=0
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def init_ray(address: str | None) -> str:
    """Connect to the cluster at ``address`` (or RAY_ADDRESS); else start an embedded local Ray
    (on localhost only when run_sweep set Ray's local-only mode before importing it). Returns
    where it runs, in words."""
    import ray

    from . import faults

    # injected faults (reliability tests only) must reach the trial processes too
    env = {faults.ENV: os.environ[faults.ENV]} if faults.ENV in os.environ else {}
    runtime_env = {"env_vars": env} if env else None
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level="warning",
                     runtime_env=runtime_env)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UsageError(f"cannot reach the Ray cluster at {address!r} ({str(e).splitlines()[0]}); "
                             "check the address (ray status on the head node), or omit --address "
                             "and unset RAY_ADDRESS for a local run") from None
        return f"Ray cluster at {address}"
    ray.init(address="local",  # a new instance: never attach to another local cluster
             include_dashboard=False, log_to_driver=False,
             configure_logging=True, logging_level="warning", runtime_env=runtime_env)
    return "embedded local Ray"


def run_sweep(spec: SweepSpec, *, storage: str, address: str | None = None,
              data_dir: str | None = None, auto_gpus: bool = False, say=print) -> SweepSpec:
    """Run (or resume, or extend) the sweep ``spec`` describes; returns the spec it ran."""
    quiet_libraries()
    if not (address or os.environ.get("RAY_ADDRESS")):
        # Ray's local-only mode (its default on macOS and Windows): every server of the
        # embedded instance binds 127.0.0.1. Read when ray is first imported.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from trainer.datasets import DEFAULT_DATA_DIR

    sweep = SweepDir(storage, spec.name)
    sweep.check_writable()
    with lock(sweep):
        spec = prepare(spec, sweep)
        where = init_ray(address)
        try:
            if auto_gpus and ray.cluster_resources().get("GPU", 0) >= 1:
                spec = prepare(dataclasses.replace(spec, gpus_per_trial=1.0), sweep)
            say(f"{spec.describe()}\nrunning on {where}; sweep directory {sweep.uri}")
            device = "GPU" if spec.gpus_per_trial else "cpu"
            run_segments(spec, sweep, data_dir=str(data_dir or DEFAULT_DATA_DIR),
                         device_name=device, say=say)
            if spec.final_eval:
                from .final_eval import run_final_eval

                run_final_eval(spec, sweep, data_dir=str(data_dir or DEFAULT_DATA_DIR), say=say)
        finally:
            ray.shutdown()
    return spec
