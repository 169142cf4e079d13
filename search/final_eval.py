"""After a sweep: the top-K configs, evaluated on the test split under strong attacks as Ray tasks.

Resumable: an (trial, attack) pair already in the evals table is not evaluated again.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time

from .db import storage
from .db.schema import EvalRow
from .spec import SweepSpec


def best_model_path(sweep, trial_id: str) -> str | None:
    """The newest ``best.pt`` Tune persisted for the trial, in any segment of the sweep (a
    path in the sweep's filesystem)."""
    import pyarrow.fs as pafs

    found = []
    for segment in sweep.segments():
        root = f"{sweep.path}/{segment.name}"
        entries = sweep.fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        for trial_dir in (e for e in entries if e.type == pafs.FileType.Directory and trial_id in e.base_name):
            checkpoints = sweep.fs.get_file_info(pafs.FileSelector(trial_dir.path))
            found += [f"{c.path}/best.pt" for c in checkpoints
                      if c.base_name.startswith("checkpoint_") and c.type == pafs.FileType.Directory]
    found = [p for p, info in zip(found, sweep.fs.get_file_info(found)) if info.type == pafs.FileType.File]
    return max(found) if found else None


def evaluate_remote(sweep_uri: str, path: str, attacks: tuple[str, ...], data_dir: str) -> dict:
    """(Runs as a Ray task.) Accuracy and seconds per attack of the model saved at ``path`` in
    the filesystem of ``sweep_uri``."""
    import pyarrow.fs as pafs

    from trainer import evaluate
    from trainer.checkpoint import load_model
    from trainer.data import load_splits

    fs, _ = storage.resolve(sweep_uri)
    with tempfile.TemporaryDirectory() as tmp:
        if not storage.is_local(sweep_uri):
            pafs.copy_files(path, os.path.join(tmp, "best.pt"), source_filesystem=fs)
            path = os.path.join(tmp, "best.pt")
        start = time.perf_counter()
        accuracies = evaluate(path, attacks=attacks, split="test", data_dir=data_dir)
        seconds = time.perf_counter() - start
        n_test = len(load_splits(load_model(path)[1].name, data_dir=data_dir, device="cpu").test)
    return {"accuracies": accuracies, "seconds": seconds, "n_examples": n_test}


def run_final_eval(spec: SweepSpec, sweep, *, data_dir: str, say=print) -> None:
    import ray

    from trainer.attack_names import parse_attack
    from trainer.status import Status

    from .db import TrialStore, load_evals, load_trials, most_robust

    names = [parse_attack(a).name for a in spec.final_attacks]
    trials = load_trials(sweep.storage, spec.name)
    top = most_robust(trials[trials["status"] == Status.FINISHED]).head(spec.final_eval)
    done = load_evals(sweep.storage, spec.name)
    done_keys = set(zip(done["trial_id"], done["attack"])) if len(done) else set()
    todo = [t for t in top["trial_id"] if not all((t, a) in done_keys for a in names)]
    if not todo:
        say(f"final evaluation: top {len(top)} configs already evaluated")
        return
    task = ray.remote(num_cpus=spec.cpus_per_trial, num_gpus=spec.gpus_per_trial)(evaluate_remote)
    pending = {}
    for trial_id in todo:
        path = best_model_path(sweep, trial_id)
        if path is None:
            say(f"[{trial_id}] final evaluation skipped: no saved model found")
            continue
        pending[task.remote(sweep.uri, path, spec.final_attacks, data_dir)] = trial_id
    say(f"final evaluation of {len(pending)} configs on the test split: {', '.join(names)}")
    store = TrialStore(sweep.storage, spec.name)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        trial_id = pending.pop(ready[0])
        out = ray.get(ready[0])
        now = dt.datetime.now(dt.timezone.utc)
        store.write(evals=[EvalRow(sweep=spec.name, trial_id=trial_id, attack=attack, split="test",
                                   accuracy=acc, n_examples=out["n_examples"], seconds=out["seconds"],
                                   recorded_at=now)
                           for attack, acc in out["accuracies"].items()])
        store.flush()
        say(f"[{trial_id}] test: " + ", ".join(f"{a} {v:.1%}" for a, v in out["accuracies"].items()))
    store.close()

