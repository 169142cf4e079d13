"""A tiny recorded grid (the replay's input), made by the tests, and the replay run on it."""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import sys

from search.db.schema import EpochRow, EvalRow, TrialRow
from search.db.store import TrialStore
from search.grid.table import Table
from search.spec import demo
from space_defs import macs, param_count, suggest_config
from space_defs.trials import FixedParams

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


EPOCHS = 8


def grid_spec(seed: int):
    return demo(name=f"tiny-grid-s{seed}", seed=seed, space="grid", grid_depths=(1, 2),
                grid_ratios=(-1.0, 0.0), trials=32, recipe=dict(epochs=EPOCHS))


def record_grid(storage, seeds=(0, 1)) -> dict:
    """A recorded grid as search.run writes it (sweep.json and the trial database), with curves
    whose plateau depends on the config and whose epochs each cost a config-specific time."""
    points = {}
    for seed in seeds:
        spec = grid_spec(seed)
        (storage / spec.name).mkdir(parents=True)
        (storage / spec.name / "sweep.json").write_text(spec.to_json())
        space = spec.search_space()
        trials, epochs, evals = [], [], []
        for i, point in enumerate(_grid_points(space)):
            cfg = suggest_config(FixedParams(point), spec.budget, space=space, tolerance=spec.tolerance)
            plateau = 0.3 + 0.05 * (cfg.depths[0] + 2 * cfg.depths[1]) + 0.01 * ((i * 7 + seed) % 3)
            seconds = 1.0 + i / 10 + seed / 10  # the same config: slower under seed 0's load
            tid = f"t{i:02d}"
            points[cfg] = plateau
            trials.append(TrialRow(
                sweep=spec.name, trial_id=tid, status="finished", space=spec.space, **cfg.to_dict(),
                params=param_count(cfg), macs=macs(cfg), budget=spec.budget, dataset=spec.dataset,
                method=spec.recipe.method, epochs_planned=EPOCHS, eps=spec.recipe.eps, seed=seed,
                recipe_json="{}", epochs_done=EPOCHS, started_at=T0, updated_at=T0))
            for attack, acc in (("clean", plateau + 0.3), ("pgd20", plateau - 0.05)):
                evals.append(EvalRow(sweep=spec.name, trial_id=tid, attack=attack, split="test",
                                     accuracy=acc, n_examples=397, recorded_at=T0))
            for e in range(1, EPOCHS + 1):
                robust = plateau * (1 - math.exp(-e / 3))
                epochs.append(EpochRow(sweep=spec.name, trial_id=tid, epoch=e, val_robust_acc=robust,
                                       val_clean_acc=min(1.0, robust + 0.3), epoch_seconds=seconds,
                                       recorded_at=T0))
        with TrialStore(str(storage), spec.name) as store:
            store.write(trials=trials, epochs=epochs, evals=evals)
    return points


def _grid_points(space):
    import itertools

    grid = space.grid_search_space()
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def run_replay(storage, *args, out, address="local"):
    return subprocess.run([sys.executable, "-m", "search.replay", "--storage", str(storage),
                           "--out", str(out), "--address", address, *args],
                          capture_output=True, text=True, timeout=600)


def config_of(table: Table, arch: str):
    return next(c for c in table.curves if c.label == arch)


