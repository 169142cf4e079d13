"""The database is read with pandas and pyarrow alone: no ray, optuna or torch (checked in a
fresh interpreter, where nothing else has imported them)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[3]


def imported_after(code: str) -> list[str]:
    code += ("\nimport json, sys\nprint(json.dumps(sorted(m for m in ('ray', 'optuna', 'torch', "
             "'matplotlib', 'plotly') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_module_of_search_db_and_reading_a_store_import_no_ray_optuna_or_torch():
    code = """
import datetime as dt, importlib, pkgutil, tempfile
import search.db
for m in pkgutil.iter_modules(search.db.__path__):
    importlib.import_module(f"search.db.{m.name}")
from search.db import TrialRow, TrialStore, load_trials, pareto_front
now = dt.datetime.now(dt.timezone.utc)
with tempfile.TemporaryDirectory() as root:
    with TrialStore(root, "s") as store:
        store.write(trials=[TrialRow(
            sweep="s", trial_id=f"t{i}", status="finished", space="per_stage", depth1=1, depth2=1,
            depth3=1, channel1=16, channel2=32, channel3=64, stem_channels=16, in_channels=3,
            num_classes=10, input_size=32, params=1000 - i, macs=10**6, budget=1000,
            dataset="digits", method="pgd_at", epochs_planned=1, eps=0.1, seed=i, recipe_json="{}",
            best_val_robust_acc=0.1 * i, started_at=now, updated_at=now) for i in range(3)])
    assert len(pareto_front(load_trials(root), ["val_robust_acc", "-params"])) == 1
"""
    assert set(imported_after(code)) <= {"matplotlib", "plotly"}  # plots.py needs these


def test_reading_the_database_imports_no_ray_optuna_torch_or_plotting():
    assert imported_after("import search.db.store, search.db.cli, search.query") == []
