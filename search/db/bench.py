"""python -m search.query bench: Pareto front of 1M synthetic trials, loading a 10,000-trial database."""

from __future__ import annotations

import datetime as dt
import tempfile
import time

import numpy as np
import pandas as pd

from .pareto import pareto_front
from .schema import TrialRow
from .store import TrialStore, load_trials

OBJECTIVES = ["val_robust_acc", "val_clean_acc", "-params"]


def best_of(repeats: int, fn):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def synthetic_trials(n: int, rng: np.random.Generator, *, trade_off: bool = False) -> pd.DataFrame:
    """Independent uniform objectives; with ``trade_off``, robust accuracy falls as clean
    accuracy rises and both grow with params (a much larger front: the hard case)."""
    params = rng.integers(1_000_000, 60_000_000, n)
    clean = 0.7 + 0.2 * rng.random(n)
    robust = rng.random(n) * 0.6
    if trade_off:
        robust = 0.9 - clean + 0.1 * np.log(params / 1e6) / np.log(60) + 0.1 * rng.random(n)
    return pd.DataFrame({"val_robust_acc": robust, "val_clean_acc": clean, "params": params})


def run(n_rows: int = 1_000_000, n_trials: int = 10_000, flushes: int = 100,
        trade_off_rows: int = 1_000_000) -> None:
    rng = np.random.default_rng(0)
    df = synthetic_trials(n_rows, rng)
    seconds, front = best_of(3, lambda: pareto_front(df, OBJECTIVES))
    print(f"pareto front, {n_rows:,} rows x 3 objectives: {seconds:.3f} s best of 3 "
          f"({len(front)} on the front)")
    df = synthetic_trials(trade_off_rows, rng, trade_off=True)
    seconds, front = best_of(1, lambda: pareto_front(df, OBJECTIVES))
    print(f"pareto front, {trade_off_rows:,} rows with a robust/clean trade-off: {seconds:.3f} s "
          f"({len(front)} on the front)")
    now = dt.datetime.now(dt.timezone.utc)
    rows = [TrialRow(sweep="bench", trial_id=f"t{i:05d}", status="finished", space="per_stage",
                     depth1=4, depth2=4, depth3=4, channel1=160, channel2=320, channel3=640,
                     stem_channels=16, in_channels=3, num_classes=10, input_size=32,
                     params=int(p), macs=5_000_000_000, budget=36_000_000, dataset="cifar10",
                     method="trades", epochs_planned=100, eps=8 / 255, seed=0, recipe_json="{}",
                     epochs_done=100, best_val_robust_acc=float(r), best_val_clean_acc=float(c),
                     started_at=now, updated_at=now)
            for i, (r, c, p) in enumerate(synthetic_trials(n_trials, rng).itertuples(index=False))]
    with tempfile.TemporaryDirectory() as root:
        store = TrialStore(root, "bench")
        for chunk in np.array_split(np.arange(n_trials), flushes):
            store.write(trials=[rows[i] for i in chunk])
        seconds, loaded = best_of(3, lambda: load_trials(root, "bench"))
        assert len(loaded) == n_trials
        print(f"load {n_trials:,} trials as written ({flushes} flushes, fanout-16 merging): "
              f"{seconds:.3f} s")
        store.close()
        seconds, _ = best_of(3, lambda: load_trials(root, "bench"))
        print(f"load {n_trials:,} trials after compaction (one part): {seconds:.3f} s")
