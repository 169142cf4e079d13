"""search.run end to end with the sweep on object storage: real S3 API servers on 127.0.0.1
(moto_server, and SeaweedFS where a test runs on ``any_s3``; tests/harness/s3.py) reached by
pyarrow, boto3 and Ray Tune over HTTP, exactly as they reach AWS; a Ray head of this module's
own whose workers reach the servers.

Tiny sweeps (digits, 30K budget, 2-3 trials, 2-3 epochs): what README's "What survives what"
promises, on s3:// instead of a local disk."""

from __future__ import annotations

import email.utils
import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pyarrow.fs as pafs
import pytest

from search.db import load_epochs, load_evals, load_trials
from search.db.errors import UsageError
from search.storage.commits import STUDY_LOG, SWEEP_LOG, open_log
from search.storage.uri import join
from search.storage.lease import LEASE_FILE
from search.storage.s3_client import s3_client
from search.sweep.study import open_study_storage
from search.sweep.files import SweepDir
from tests.harness import faults, ray_nodes
from tests.harness.s3 import any_bucket, any_s3, s3_bucket, s3_env, s3_server  # noqa: F401 (fixtures)

from tests.harness.sweeps import (check_confirmed, check_database, interrupted_trials, run,
                                  sweep_command, sweep_env, wait_for)


@pytest.fixture(scope="module")
def s3_ray(s3_server, tmp_path_factory):
    """A Ray head whose workers (trials, final evaluations) reach the S3 server; token auth as
    the other sweep tests' head (the session's token: tests/conftest.py)."""
    temp = tmp_path_factory.mktemp("ray-s3")
    try:
        yield ray_nodes.start_head(temp, env={**os.environ, **s3_server.env})
    finally:
        ray_nodes.stop(temp)


def study_trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_study_storage(join(storage, name))).trials


def query(storage: str, *args: str):
    return run([sys.executable, "-m", "search.query", *args, "--storage", storage], timeout=180)


def clean(out) -> None:
    """No traceback and no ERROR line from Tune or Ray: a normal run (resume included) says what
    it does in plain lines."""
    quiet(out.stdout + out.stderr)


# Ray Tune's own race, seen once in CI (2026-11-28): its background upload of the driver's
# artifacts listed the searcher's temporary state file, which Tune then renamed; Tune logs the
# failed upload and syncs again. Left to fix (ours to work around or Ray's): the note of that stop.
TUNE_TMP_STATE_RACE = re.compile(
    r"[^\n]*ERROR experiment_state\.py:\d+ -- Saving experiment state to storage at [^\n]*\n"
    r"Traceback.*?\nFileNotFoundError: [^\n]*-tmp-searcher-state-[^\n]*\n", re.S)


def quiet(text: str) -> None:
    text = TUNE_TMP_STATE_RACE.sub("", text)
    assert "Traceback" not in text and not re.search(r"\sERROR\s", text), text[-3000:]


def test_sweep_extend_final_eval_and_query(s3_bucket, s3_ray, tmp_path):
    storage = s3_bucket  # the endpoint from AWS_ENDPOINT_URL_S3, as on a cluster with a custom S3
    first = run(sweep_command(storage, "s", "--trials", "3", "--epochs", "2", "--address", s3_ray,
                              "--final-eval", "1", "--final-attacks", "clean,pgd20"))
    assert first.returncode == 0, first.stderr[-3000:]
    clean(first)
    trials, _ = check_database(storage, "s", 3, 2)
    evals = load_evals(storage, "s")
    assert evals["trial_id"].nunique() == 1 and set(evals["attack"]) == {"clean", "pgd20"}
    complete = [t for t in study_trials(storage, "s") if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3  # the study lives on the store, not in the driver's memory

    extended = run(sweep_command(storage, "s", "--trials", "4", "--epochs", "2", "--address", s3_ray,
                                 "--final-eval", "1", "--final-attacks", "clean,pgd20"))
    assert extended.returncode == 0, extended.stderr[-3000:]
    clean(extended)
    assert "starting tune-2: 1 new trials" in extended.stdout
    check_database(storage, "s", 4, 2)
    study = study_trials(storage, "s")
    # the new segment's sampler asked in the same study, after the first three were told
    assert [t.number for t in study] == [0, 1, 2, 3]
    assert [t.params for t in study[:3]] == [t.params for t in complete]
    assert study[3].datetime_start > max(t.datetime_complete for t in complete)
    assert study[3].state.is_finished()
    again = load_evals(storage, "s")
    kept = again.merge(evals, on=["trial_id", "attack"])
    assert len(kept) == 2 and (kept["recorded_at_x"] == kept["recorded_at_y"]).all()  # not redone

    best = query(storage, "best", "--sweep", "s")
    assert best.returncode == 0 and "most robust" in best.stdout, best.stderr
    pareto = query(storage, "pareto", "--sweep", "s", "--objectives", "val_robust_acc,-params")
    assert pareto.returncode == 0 and pareto.stdout.strip(), pareto.stderr
    plots = query(storage, "plot", "--sweep", "s", "--out", str(tmp_path / "plots"))
    assert plots.returncode == 0, plots.stderr
    written = {p.suffix for p in (tmp_path / "plots").iterdir()}
    assert {".png", ".html"} <= written


def popen(cmd) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=sweep_env())


def read_until(driver: subprocess.Popen, text: str) -> str:
    """The driver's stdout up to the first line holding ``text``."""
    seen = []
    while not seen or text not in seen[-1]:
        line = driver.stdout.readline()
        assert line, f"the driver ended before {text!r}:\n" + "".join(seen)
        seen.append(line)
    return "".join(seen)


def wait_until_lapsed(sweep_uri: str, ttl: float) -> None:
    """Until the sweep's lease, no longer renewed, has lapsed by the store's clock."""
    client, bucket, key = s3_client(sweep_uri, LEASE_FILE)
    head = client.head_object(Bucket=bucket, Key=key)
    now = email.utils.parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]["date"])
    age = (now - head["LastModified"]).total_seconds()
    time.sleep(max(0.0, ttl + 2 - age))


TTL = 10.0  # the drivers' lease ttl (seconds) in the fencing test: 30 s is waited out otherwise


def harness_command(storage: str, name: str, *args: str) -> list[str]:
    """search.run through the fault harness: a lease of TTL seconds, which SIGUSR2 stalls."""
    return faults.command(sweep_command(storage, name, *args),
                          [{"at": "lease", "action": "ttl", "seconds": TTL}, {"at": "lease", "action": "stall"}])


def segment_dir(storage: str, name: str) -> str:
    """The Tune experiment directory of the sweep's last segment, as a reader sees it."""
    return SweepDir(storage, name).segments()[-1].path


def test_drivers_killed_refused_and_fenced(any_s3, any_bucket, s3_ray):
    """One sweep on each server, the endpoint only as URI options (how MinIO or any non-AWS S3
    is named): a second driver is refused; the first is killed and rerun; the rerun's lease is
    stalled (it can no longer tell that its lease lapses) and the rerun SIGSTOPped past its
    lease; a third driver takes the sweep over, and then the rerun is SIGCONTed: the store
    refuses its first commit, it stops, and the study, the database and the Tune experiment the
    third driver sees are its own; the sweep ends exact."""
    storage = any_bucket
    cmd = harness_command(storage, "k", "--trials", "3", "--epochs", "3", "--scheduler", "none",
                          "--address", s3_ray, "--final-eval", "1", "--final-attacks", "clean")
    first = popen(cmd)
    try:
        read_until(first, "] epoch 1/3")
        second = run(cmd, timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        refusals = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert refusals == [second.stderr.strip().splitlines()[-1]] and refusals[0].startswith(
            "error: sweep 'k' is being run by another driver right now (lease held by "), second.stderr
        assert "Traceback" not in second.stderr

        def mid_trial():
            """Trials running with two epochs done: their epoch-1 checkpoint is an epoch (and
            several of Tune's snapshots, one a second here) old."""
            try:
                done = load_epochs(storage, "k").groupby("trial_id")["epoch"].max()
                status = load_trials(storage, "k").set_index("trial_id")["status"]
            except UsageError:  # no database yet
                return None
            return [t for t, n in done.items() if n == 2 and status.get(t) == "running"]

        assert wait_for(mid_trial, every=0.2), "the sweep made no progress to interrupt"
    finally:
        first.kill()
        first.communicate(timeout=60)
    before, interrupted = interrupted_trials(storage, "k")
    assert interrupted

    rerun = popen(cmd)  # at once: the killed driver's lease is taken over, not waited out
    try:
        read_until(rerun, "resuming tune-1")
        read_until(rerun, "] epoch ")
        stale = segment_dir(storage, "k")
        rerun.send_signal(signal.SIGUSR2)
        read_until(rerun, "[harness] lease stalled")
        rerun.send_signal(signal.SIGSTOP)  # cut off from the store
        wait_until_lapsed(join(storage, "k"), TTL)
        third = popen(cmd)
        read_until(third, "resuming tune-1")
        taken = segment_dir(storage, "k")
    finally:
        rerun.send_signal(signal.SIGCONT)
    rerun_out, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 2, rerun_out + err
    assert err.strip().splitlines()[-1].startswith(
        "error: this driver lost the lease on sweep 'k' (the store refused this driver's commit "
        "to the "), err  # its clock could not tell it: the store did
    assert "Traceback" not in err

    out, err = third.communicate(timeout=400)
    assert third.returncode == 0, err[-3000:]
    said = f"rerun:\n{rerun_out}\nthird:\n{out}"
    quiet(out + err)
    trials, after = check_database(storage, "k", 3, 3)  # none lost, none duplicated
    assert set(trials["status"]) <= {"finished", "catastrophic_overfit"}
    old = before.set_index(["trial_id", "epoch"])["recorded_at"]
    new = after.set_index(["trial_id", "epoch"])["recorded_at"]
    for trial_id in interrupted:  # continued from a checkpoint, not from scratch
        assert new[(trial_id, 1)] == old[(trial_id, 1)], f"{trial_id}\n{before}\n{after}\n{said}"
    study = study_trials(storage, "k")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study) == 3
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
               for t in study)  # FAIL: asked by a driver that died before Tune knew the trial
    # the third driver's Tune experiment is a directory of its own, and after its takeover
    # entry each log holds its commits alone
    assert taken != stale and taken.split("/")[0] == stale.split("/")[0] == "tune-1"
    assert segment_dir(storage, "k") == taken
    # the segment done, the directories of the drivers before it (the first's, the rerun's) are gone
    assert "tune-1: removed the Tune directories of 2 earlier drivers" in out, said
    sweep = SweepDir(storage, "k")
    left = sweep.fs.get_file_info(pafs.FileSelector(f"{sweep.path}/tune-1", recursive=True))
    files = [e.path for e in left if e.type == pafs.FileType.File]  # SeaweedFS lists empty dirs
    assert files and all(f.startswith(f"{sweep.path}/{taken}/") for f in files), files
    for log in (SWEEP_LOG, STUDY_LOG):
        entries = open_log(join(storage, "k"), log, shared=False)
        entries.sync()
        last = max(i for i, e in enumerate(entries.entries) if "takeover" in e)
        assert {e["token"] for e in entries.entries[last:]} == {entries.entries[last]["token"]}
    evals = load_evals(storage, "k")  # the final evaluation read its checkpoint through the URI
    assert evals["trial_id"].nunique() == 1 and list(evals["attack"]) == ["clean"], said

    best = query(storage, "best", "--sweep", "k")
    assert best.returncode == 0 and "most robust" in best.stdout, best.stderr


def test_killed_during_confirmation_resumes_exactly_on_object_storage(s3_bucket, s3_ray):
    """--confirm on s3://: the driver killed with confirmation runs under way; the rerun takes
    the lease over, resumes the confirmation segment and trains every (config, seed) once."""
    storage = s3_bucket
    cmd = sweep_command(storage, "cf", "--trials", "3", "--epochs", "3", "--address", s3_ray,
                        "--scheduler", "none", "--confirm", "2", "--confirm-seeds", "3")
    first = popen(cmd)
    try:
        said = read_until(first, "starting confirm-2: ")
        read_until(first, "] finished after 3 epochs")
        sweep = SweepDir(storage, "cf")

        def snapshot() -> bool:  # Tune's snapshot of the segment, in this driver's directory
            entries = sweep.fs.get_file_info(pafs.FileSelector(
                f"{sweep.path}/{segment_dir(storage, 'cf')}", allow_not_found=True))
            return any(e.base_name.startswith("experiment_state-") for e in entries)

        assert wait_for(snapshot, every=0.2)
    finally:
        first.kill()
        first.communicate(timeout=60)
    planned = int(said.split("starting confirm-2: ")[1].split(" confirmation runs")[0])
    assert (load_trials(storage, "cf")["role"] == "confirm").any()

    out = run(cmd)
    assert out.returncode == 0, out.stderr[-3000:]
    quiet(out.stdout + out.stderr)
    assert "resuming confirm-2" in out.stdout and "starting confirm" not in out.stdout
    confirm = check_confirmed(storage, "cf", {0, 1, 2})
    assert len(confirm) == planned
    check_database(storage, "cf", 3 + planned, 3)
    best = query(storage, "best", "--sweep", "cf")
    assert best.returncode == 0 and "answer: " in best.stdout, best.stderr
