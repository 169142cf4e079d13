"""After a sweep: the top-K configs (with ``--confirm``, every seed of the confirmed ones too),
evaluated on the test split under strong attacks as Ray tasks.

Resumable: an (trial, attack) pair already in the evals table is not evaluated again.
"""

from __future__ import annotations

import datetime as dt
import tempfile

from .storage import open_storage
from .db.schema import EvalRow
from .spec import SweepSpec


def best_model_path(sweep, trial_id: str) -> str | None:
    """The newest ``best.pt`` Tune persisted for the trial, in any segment of the sweep (a
    path in the sweep's filesystem)."""
    import pyarrow.fs as pafs

    found = []
    for segment in sweep.segments():
        root = f"{sweep.path}/{segment.path}"
        entries = sweep.fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        for trial_dir in (e for e in entries if e.type == pafs.FileType.Directory and trial_id in e.base_name):
            checkpoints = sweep.fs.get_file_info(pafs.FileSelector(trial_dir.path))
            found += [f"{c.path}/best.pt" for c in checkpoints
                      if c.base_name.startswith("checkpoint_") and c.type == pafs.FileType.Directory]
    found = [p for p, info in zip(found, sweep.fs.get_file_info(found)) if info.type == pafs.FileType.File]
    return max(found) if found else None


def evaluate_remote(sweep_uri: str, path: str, attacks: tuple[str, ...], data_dir: str,
                    fake_gpus: bool = False, protocol: str = "default"):
    """(Runs as a streaming Ray task.) Evaluates the model saved at ``path`` in the filesystem
    of ``sweep_uri`` at the budget it was trained at, run as ``protocol`` says
    (trainer.protocols), yielding a dict per attack (and AutoAttack component) as it finishes:
    accuracy, its own seconds, the time left, n, eps, steps, step size. On
    a granted GPU CUDA must be able to use, as for trials (search.trial.device.trial_device)."""
    from trainer.evaluation import evaluation_steps

    from .trial.device import trial_device

    device = trial_device(fake_gpus=fake_gpus).device
    with tempfile.TemporaryDirectory() as tmp:
        path = open_storage(sweep_uri).local_file(path, tmp)
        for done in evaluation_steps(path, attacks=attacks, split="test", data_dir=data_dir,
                                     device=device, protocol=protocol):
            yield {"attack": done.attack, "accuracy": done.accuracy, "seconds": done.seconds,
                   "eta_seconds": done.eta_seconds, "final": done.final, "n_examples": done.n,
                   "eps": done.budget.eps, "steps": done.steps, "step_size": done.step_size}


def _progress(trial_id: str, event: dict, etas: dict[str, float | None]) -> str:
    """One line per finished attack or component: accuracy, its seconds, the time left."""
    etas[trial_id] = event["eta_seconds"]
    known = [e for e in etas.values() if e is not None]
    left = f"; about {_duration(max(known))} left" if known and len(known) == len(etas) else ""
    return (f"[{trial_id}] {event['attack']}: {event['accuracy']:.1%} in {event['seconds']:.1f} s "
            f"(eps {event['eps']:.4g}){left}")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def final_eval_trials(spec: SweepSpec, trials):
    """The trials to evaluate: the search's top ``final_eval`` by validation score, and with
    ``--confirm`` every seed's run of every confirmed config."""
    import pandas as pd

    from trainer.status import Status

    from .db import most_robust
    from .db.ranking import arch_label, roles
    from .db.schema import CONFIRM, SEARCH

    finished = trials[trials["status"] == Status.FINISHED]
    finished = finished.assign(arch=arch_label(finished))
    role = roles(finished)
    top = most_robust(finished[role == SEARCH]).head(spec.final_eval)
    if spec.final_eval and spec.confirm:
        confirmed = finished[finished["arch"].isin(set(finished.loc[role == CONFIRM, "arch"]))]
        top = pd.concat([top, most_robust(confirmed)]).drop_duplicates("trial_id")
    return top


def run_final_eval(spec: SweepSpec, sweep, *, data_dir: str, say=print) -> None:
    import ray

    from trainer.attack_names import parse_attack

    from space_defs.cli import UsageError

    from .tune.failures import environment_problem
    from .db import load_evals, load_trials
    from .tune.writer import open_store

    names = [parse_attack(a).name for a in spec.final_attacks]
    top = final_eval_trials(spec, load_trials(sweep.storage, spec.name))
    seeds = dict(zip(top["trial_id"], top["seed"].astype(int)))
    done = load_evals(sweep.storage, spec.name)
    if len(done):
        done = done[done["protocol"].fillna("default") == spec.final_protocol]
    done_keys = set(zip(done["trial_id"], done["attack"])) if len(done) else set()
    todo = [t for t in top["trial_id"] if not all((t, a) in done_keys for a in names)]
    if not todo:
        say(f"final evaluation: all {len(top)} models already evaluated")
        return
    task = ray.remote(num_cpus=spec.cpus_per_trial, num_gpus=spec.gpus_per_trial,
                      num_returns="streaming")(evaluate_remote)
    pending = {}
    for trial_id in todo:
        path = best_model_path(sweep, trial_id)
        if path is None:
            say(f"[{trial_id}] final evaluation skipped: no saved model found")
            continue
        pending[task.remote(sweep.uri, path, spec.final_attacks, data_dir, spec.fake_gpus,
                            spec.final_protocol)] = trial_id
    say(f"final evaluation of {len(pending)} trained models on the test split: {', '.join(names)} "
        f"({spec.final_protocol} protocol)")
    store = open_store(sweep.storage, spec.name)  # every write checks the driver's lease
    results: dict[str, list[dict]] = {trial_id: [] for trial_id in pending.values()}
    etas: dict[str, float | None] = {trial_id: None for trial_id in pending.values()}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        trial_id = pending[ready[0]]
        try:
            event = ray.get(next(ready[0]))
        except ray.exceptions.RayTaskError as e:
            if (problem := environment_problem(e)) is None:
                raise
            raise UsageError(f"[{trial_id}] final evaluation could not run: {problem}. Evaluations "
                             "done so far are kept: fix it and run the same command again") from None
        except StopIteration:  # this config's evaluation is complete
            del pending[ready[0]]
            etas.pop(trial_id)
            out = [e for e in results.pop(trial_id) if e["final"]]
            total, now = sum(e["seconds"] for e in out), dt.datetime.now(dt.timezone.utc)
            store.write(evals=[EvalRow(sweep=spec.name, trial_id=trial_id, seed=seeds[trial_id],
                                       attack=e["attack"],
                                       split="test", accuracy=e["accuracy"], n_examples=e["n_examples"],
                                       seconds=total, attack_seconds=e["seconds"], eps=e["eps"],
                                       steps=e["steps"], step_size=e["step_size"],
                                       protocol=spec.final_protocol, recorded_at=now)
                                for e in out])
            store.flush()
            say(f"[{trial_id}] test: " + ", ".join(f"{e['attack']} {e['accuracy']:.1%}" for e in out)
                + f" ({total:.0f} s)")
            continue
        results[trial_id].append(event)
        say(_progress(trial_id, event, etas))
    store.close()

