"""Scheduling overhead of our stack vs a bare Tune loop: python -m benchmarks.bench [-n 24]

First, the time to the first trial (G3): ``python -m search.run --demo`` on a fresh sweep and
the embedded Ray, from the command to its first trial's "started" line (imports, the spec's
checks, Ray's start, Tune), three times, each stopped there with Ctrl-C. Then both stacks run N no-op trials (3 instant epochs each, 2 at a time) on one local Ray: ours through
search.tune.tuner's Tuner (Optuna define-by-run budget space, ASHA, the trial-database callback,
epoch checkpoints); the bare one as Tune's docs write it (OptunaSearch + ASHA over a uniform).

python -m benchmarks.bench --recorder [-n 8] [--storage s3://...]: the time Tune's thread spends in
the trial-database recorder per event (median and p95), with the sweep on object storage: a
store --storage names (see LOCAL_S3 for a local one); once with every write made in Tune's
thread (as the recorder did before its writer thread) and once as it runs now.

python -m benchmarks.bench --study [-n 5000] [--storage s3://...]: the sweep's study on object
storage (its commit log): per trial (the searcher's ask, as StudySearch.suggest writes it, then
its tell: seconds, writes, bytes), then what a driver start costs on a study of N trials (taking
the sweep over and opening the study: seconds, objects read and written, bytes written).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

EPOCHS = 3


def noop_ours(config, *, spec, data_dir: str, fence=None) -> None:
    """What our trainable reports, without training: epoch results with a checkpoint."""
    from ray import tune

    from trainer.report import METRICS
    from trainer.status import Status

    from search.trial.trainable import TRIAL_STATUS

    with tempfile.TemporaryDirectory() as tmp:
        for epoch in range(1, EPOCHS + 1):
            with open(os.path.join(tmp, "checkpoint.pt"), "wb") as f:
                f.write(b"\0" * 1024)
            metrics = dict.fromkeys(METRICS, 0.5)
            metrics.update({"epoch": epoch, "val_robust_acc": config["channel3"] / 1000,
                            TRIAL_STATUS: Status.RUNNING})
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def noop_bare(config) -> None:
    from ray import tune

    for epoch in range(1, EPOCHS + 1):
        tune.report({"epoch": epoch, "score": config["x"]})


def time_to_first_trial(runs: int = 3) -> list[float]:
    """Seconds from ``python -m search.run --demo`` to its first trial's start (G3), per run."""
    seconds = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as root:
            start = time.perf_counter()
            demo = subprocess.Popen(
                [sys.executable, "-m", "search.run", "--demo", "--storage", root, "--address", "local"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
            for line in demo.stdout:
                if re.match(r"\[\w+\] started ", line):
                    seconds.append(time.perf_counter() - start)
                    break
            os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C: the demo stops, its Ray with it
            demo.wait()
    return seconds


def run_ours(n: int, root: str) -> float:
    """As search.run does it (the spec checked and saved, the Tuner built): seconds in all."""
    from trainer.recipe import Recipe

    from search.spec import SweepSpec
    from search.sweep.files import Segment, SweepDir, prepare
    from search.tune.tuner import build_tuner

    spec = SweepSpec(name="bench", budget=30_000, dataset="digits", min_blocks=1, max_blocks=2,
                     channel_multiple=4, recipe=Recipe(method="pgd_at", epochs=EPOCHS), trials=n,
                     max_concurrent=2, grace_period=1, gpus_per_trial=0.0)
    sweep = SweepDir(root, spec.name)
    prepare(spec, sweep)
    start = time.perf_counter()
    build_tuner(spec, sweep, Segment("tune-1", n), first=True, data_dir=root,
                restore=False, trainable=noop_ours).fit()
    return time.perf_counter() - start


def run_bare(n: int, root: str) -> float:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)  # Tune as its docs run it
    start = time.perf_counter()
    tune.Tuner(
        tune.with_resources(noop_bare, {"cpu": 1}), param_space={"x": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(OptunaSearch(metric="score", mode="max"), max_concurrent=2),
            scheduler=ASHAScheduler(time_attr="epoch", metric="score", mode="max", max_t=EPOCHS,
                                    grace_period=1),
            num_samples=n),
        run_config=tune.RunConfig(storage_path=root, name="bare", verbose=0)).fit()
    return time.perf_counter() - start


class _InTunesThread:
    """The recorder's writes as they were before its writer thread: each event's rows written
    and flushed inside the Tune hook (the ``_Writer`` interface, synchronously)."""

    def __init__(self, open_store):
        self._open_store = open_store

    def put(self, *, trials=(), epochs=()) -> None:
        store = self._open_store()
        store.write(trials=trials, epochs=epochs)
        store.flush()

    def drain(self) -> None:
        pass

    raise_error = close = drain


def _timed_recorder():
    """SweepRecorder timing its hooks (they run in Tune's thread) into ``TIMES``."""
    from search.tune.recorder import SweepRecorder

    class Timed(SweepRecorder):
        in_tunes_thread = False

        @property
        def writer(self):
            if self.in_tunes_thread and self._writer is None:
                self._writer = _InTunesThread(lambda: self.store)
            return super().writer

        def _timed(self, hook: str, *args, **kwargs):
            start = time.perf_counter()
            try:
                return getattr(super(), hook)(*args, **kwargs)
            finally:
                TIMES.setdefault(hook, []).append(time.perf_counter() - start)

        def on_trial_start(self, *args, **kwargs):
            return self._timed("on_trial_start", *args, **kwargs)

        def on_trial_result(self, *args, **kwargs):
            return self._timed("on_trial_result", *args, **kwargs)

        def on_trial_complete(self, *args, **kwargs):
            return self._timed("on_trial_complete", *args, **kwargs)

        def get_state(self):
            return self._timed("get_state")

        def _say(self, trial, message: str) -> None:
            pass  # the numbers, not the progress lines

    return Timed


TIMES: dict[str, list[float]] = {}
HOOKS = ("on_trial_start", "on_trial_result", "on_trial_complete", "get_state")


def run_recorder(n: int, storage: str, *, in_tunes_thread: bool) -> dict[str, list[float]]:
    """N no-op trials (3 epochs, 2 at a time) of one sweep on ``storage``, as search.run runs
    them (the sweep's lease held, its study and database on that storage); seconds per hook."""
    import secrets

    from trainer.recipe import Recipe

    from search.tune import tuner
    from search.storage.lease import sweep_lock
    from search.spec import SweepSpec
    from search.sweep.files import Segment, SweepDir, prepare

    spec = SweepSpec(name=f"bench-recorder-{secrets.token_hex(3)}", budget=30_000, dataset="digits",
                     min_blocks=1, max_blocks=2, channel_multiple=4, trials=n, max_concurrent=2,
                     recipe=Recipe(method="pgd_at", epochs=EPOCHS), scheduler="none", gpus_per_trial=0.0)
    sweep = SweepDir(storage, spec.name)
    timed, real = _timed_recorder(), tuner.SweepRecorder
    timed.in_tunes_thread = in_tunes_thread
    TIMES.clear()
    tuner.SweepRecorder = timed
    try:
        with sweep_lock(sweep.uri, spec.name):
            prepare(spec, sweep)
            tuner.build_tuner(spec, sweep, Segment("tune-1", n), first=True, data_dir=".",
                              restore=False, trainable=noop_ours).fit()
    finally:
        tuner.SweepRecorder = real
    return {hook: list(TIMES.get(hook, [])) for hook in HOOKS}


LOCAL_S3 = ("start one to measure here: moto_server -p 5001 &, then AWS_ENDPOINT_URL_S3="
            "http://127.0.0.1:5001 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x AWS_REGION=us-east-1, "
            "and make the bucket: python -c \"import boto3; boto3.client('s3').create_bucket(Bucket='bench')\"")


def _quantiles(seconds: list[float]) -> str:
    if not seconds:
        return "no events"
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"median {statistics.median(ordered) * 1e3:7.1f} ms, p95 {p95 * 1e3:7.1f} ms ({len(ordered)})"


def main_recorder(n: int, storage: str) -> None:
    from search.cluster.target import find_target
    from search.cluster.connect import ray_session

    with ray_session(find_target("local")):
        before = run_recorder(n, storage, in_tunes_thread=True)
        now = run_recorder(n, storage, in_tunes_thread=False)
    where = storage
    print(f"trial-database recorder, seconds in Tune's thread per event: {n} no-op trials x "
          f"{EPOCHS} epochs, 2 at a time, sweep on {where}")
    for hook in HOOKS:
        print(f"  {hook:18} writes in Tune's thread (before): {_quantiles(before[hook])}")
        print(f"  {'':18} writer thread (now):              {_quantiles(now[hook])}")
    print("  (get_state: Tune's snapshot waiting for the rows queued before it; every few seconds)")


def _log_objects(fs, directory: str) -> dict[str, int]:
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(directory, recursive=True, allow_not_found=True))
    return {i.path: i.size for i in infos if i.type == pafs.FileType.File}


def main_study(n: int, storage: str) -> None:
    """See the module's docstring: a study of ``n`` trials of the sweep's own define-by-run
    space (random sampler: the storage's cost, not TPE's), built, then opened by a new driver."""
    import secrets

    import optuna

    from search.storage import commits
    from search.storage import uri as db_storage
    from search.storage.commits import STUDY_LOG
    from search.storage.lease import sweep_lock
    from search.spec import SweepSpec
    from search.sweep.study import _JOURNALS, flush, open_study_storage
    from search.tune.searchers import DefineByRun

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = SweepSpec(name=f"bench-study-{secrets.token_hex(3)}", budget=30_000, dataset="digits",
                     min_blocks=1, max_blocks=2, channel_multiple=4, trials=n,
                     gpus_per_trial=0.0)
    uri = db_storage.join(storage, spec.name)
    fs, path = db_storage.resolve(uri)
    space = DefineByRun(spec)
    with sweep_lock(uri, spec.name):
        study_storage = open_study_storage(uri)
        study = optuna.create_study(study_name=spec.name, storage=study_storage,
                                    sampler=optuna.samplers.RandomSampler(seed=0))
        before = commits.open_log(uri, STUDY_LOG).end
        start = time.perf_counter()
        for _ in range(n):
            trial = study.ask()
            space(trial)
            flush(study_storage)  # where StudySearch.suggest ends
            study.tell(trial, 0.5)
        per_trial = (time.perf_counter() - start) / n
        writes = (commits.open_log(uri, STUDY_LOG).end - before) / n
    built = _log_objects(fs, f"{path}/{STUDY_LOG}")

    commits._SHARED.clear()  # a new driver process: nothing cached
    _JOURNALS.clear()
    start = time.perf_counter()
    with sweep_lock(uri, spec.name):
        taken = time.perf_counter() - start
        loaded = optuna.load_study(study_name=spec.name, storage=open_study_storage(uri))
        trials = len(loaded.trials)
        opened = time.perf_counter() - start
    after = _log_objects(fs, f"{path}/{STUDY_LOG}")
    segments = [p for p in built if "/seg-" in p.rsplit("/", 1)[-1] or p.rsplit("/", 1)[-1].startswith("seg-")]
    entries = len(built) - len(segments)
    journal = sum(size for p, size in built.items() if p not in segments)
    changed = [p for p in after if built.get(p) != after[p]]
    print(f"the sweep's study on {storage}, {n} trials (the sweep's define-by-run space, random sampler)")
    print(f"  per trial: {per_trial * 1e3:.1f} ms (ask + tell), {writes:.2f} conditional PUTs, "
          f"{journal / n / 1024:.1f} KiB of journal")
    print(f"  the log: {entries} entries ({journal / 2**20:.1f} MiB), {len(segments)} segments "
          f"({sum(built[p] for p in segments) / 2**20:.1f} MiB, every {commits.SEGMENT} entries)")
    print(f"  a driver start on it: {taken:.2f} s to take the sweep over (reading the whole log), "
          f"{opened:.2f} s until the study of {trials} trials is open")
    print(f"  objects that start wrote: {len(changed)} ({sum(after[p] for p in changed) / 1024:.1f} KiB); "
          f"none rewritten: {all(p not in built for p in changed)}")
    print(f"  (the chain merged at each start, before: {journal / 2**20:.1f} MiB rewritten per start)")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, help="trials per stack (24; 8 with --recorder; 5000 with --study)")
    p.add_argument("--recorder", action="store_true",
                   help="time the trial-database recorder in Tune's thread, on object storage")
    p.add_argument("--study", action="store_true",
                   help="the study on object storage: cost per trial and per driver start")
    p.add_argument("--storage", help="with --recorder or --study: the object store to measure, "
                                     "s3://BUCKET/PREFIX")
    args = p.parse_args()
    if (args.recorder or args.study) and not (args.storage or "").startswith("s3://"):
        p.error(f"--recorder and --study measure object storage: give --storage s3://BUCKET/PREFIX; {LOCAL_S3}")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # localhost only, as search.run
    if args.study:
        main_study(args.n or 5000, args.storage)
        return
    if args.recorder:
        main_recorder(args.n or 8, args.storage)
        return
    from search.cluster.target import find_target
    from search.cluster.connect import ray_session

    first = time_to_first_trial()
    print(f"G3, time to the first trial: python -m search.run --demo started its first trial "
          f"{statistics.median(first):.1f} s after the command (median of "
          f"{', '.join(f'{s:.1f}' for s in first)} s; target <= 8 s: "
          f"{'met' if statistics.median(first) <= 8 else 'NOT met'})", flush=True)
    n = args.n or 24
    with ray_session(find_target("local")), tempfile.TemporaryDirectory() as root:
        ours_total = run_ours(n, root)
        bare_total = run_bare(n, root)
    print(f"{n} no-op trials x {EPOCHS} epochs, 2 concurrent, on the embedded local Ray:")
    print(f"  ours: {ours_total / n:.2f} s per trial ({ours_total:.1f} s in all)")
    print(f"  bare: {bare_total / n:.2f} s per trial ({bare_total:.1f} s in all)")
    print(f"  per-trial overhead ratio ours/bare: {ours_total / bare_total:.2f}")


if __name__ == "__main__":
    main()
