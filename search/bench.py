"""Scheduling overhead of our stack vs a bare Tune loop: python -m search.bench [-n 24]

Both run N no-op trials (3 instant epochs each, 2 at a time) on one local Ray: ours through
search.tuner's Tuner (Optuna define-by-run budget space, ASHA, the trial-database callback,
epoch checkpoints); the bare one as Tune's docs write it (OptunaSearch + ASHA over a uniform).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

EPOCHS = 3


class FirstStart:
    """A Tune callback noting when the first trial started."""

    def __new__(cls):
        from ray import tune

        class _First(tune.Callback):
            at = None

            def on_trial_start(self, iteration, trials, trial, **info):
                if self.at is None:
                    self.at = time.perf_counter()

        return _First()


def noop_ours(config, *, spec_json: str, data_dir: str) -> None:
    """What our trainable reports, without training: epoch results with a checkpoint."""
    from ray import tune

    from trainer.report import METRICS
    from trainer.status import Status

    from .trainable import TRIAL_STATUS

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


def run_ours(n: int, root: str, command_start: float) -> tuple[float, float]:
    """As search.run does it: check and save the spec, start the embedded Ray, build the Tuner."""
    from trainer.recipe import Recipe

    from .driver import init_ray, quiet_libraries
    from .spec import SweepSpec
    from .sweepdir import Segment, SweepDir, prepare
    from .tuner import build_tuner

    quiet_libraries()
    spec = SweepSpec(name="bench", budget=30_000, dataset="digits", min_blocks=1, max_blocks=2,
                     channel_multiple=4, recipe=Recipe(method="pgd_at", epochs=EPOCHS), trials=n,
                     max_concurrent=2, grace_period=1)
    sweep = SweepDir(root, spec.name)
    prepare(spec, sweep)
    init_ray(None)
    first = FirstStart()
    start = time.perf_counter()
    build_tuner(spec, sweep, Segment("tune-1", n), first=True, data_dir=root, device_name="cpu",
                restore=False, trainable=noop_ours, callbacks=[first]).fit()
    return first.at - command_start, time.perf_counter() - start


def run_bare(n: int, root: str) -> tuple[float, float]:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)  # Tune as its docs run it
    first = FirstStart()
    start = time.perf_counter()
    tune.Tuner(
        tune.with_resources(noop_bare, {"cpu": 1}), param_space={"x": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(OptunaSearch(metric="score", mode="max"), max_concurrent=2),
            scheduler=ASHAScheduler(time_attr="epoch", metric="score", mode="max", max_t=EPOCHS,
                                    grace_period=1),
            num_samples=n),
        run_config=tune.RunConfig(storage_path=root, name="bare", verbose=0, callbacks=[first])).fit()
    return first.at - start, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m search.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=24, help="trials per stack (24)")
    n = p.parse_args().n
    command_start = time.perf_counter()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # localhost only, as search.run
    with tempfile.TemporaryDirectory() as root:
        ours_first, ours_total = run_ours(n, root, command_start)
        bare_first, bare_total = run_bare(n, root)
    print(f"{n} no-op trials x {EPOCHS} epochs, 2 concurrent, on the embedded local Ray:")
    print(f"  ours: first trial running {ours_first:.1f} s after the command (imports, spec check, "
          f"Ray start, Tuner), {ours_total / n:.2f} s per trial ({ours_total:.1f} s in all)")
    print(f"  bare: first trial running {bare_first:.1f} s after Tuner.fit (Ray already up), "
          f"{bare_total / n:.2f} s per trial ({bare_total:.1f} s in all)")
    print(f"  per-trial overhead ratio ours/bare: {ours_total / bare_total:.2f}")


if __name__ == "__main__":
    main()
