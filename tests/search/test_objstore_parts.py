"""The sweep's study (search.study) and driver lock (search.lease) on a real S3 API server
(moto_server on 127.0.0.1), each driver a process of its own, killed and paused for real; every
test once with the endpoint from AWS_ENDPOINT_URL_S3 and once from the URI's own options."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import optuna
import pyarrow.fs as pafs
import pytest

from search import study as study_module
from search.lease import LEASE_FILE, SweepBusy, s3_client, sweep_lock
from search.study import JOURNAL_DIR, JOURNAL_FILE, open_study_storage, read_journal
from space_defs.cli import UsageError
from tests.harness.s3 import free_port, s3_bucket, s3_env, s3_server  # noqa: F401 (fixtures)

DRIVER = Path(__file__).with_name("objstore_driver.py")
TTL = 3.0  # seconds; a lease lapses TTL + 1 s (the store's clock counts whole seconds) after its last renewal

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Driver:
    """objstore_driver.py in a process of its own, its output lines collected as they come."""

    def __init__(self, uri: str, trials: int, *args: str):
        self.proc = subprocess.Popen([sys.executable, str(DRIVER), uri, str(trials), "--ttl", str(TTL),
                                      *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, predicate, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while not predicate(self.lines):
            assert self.proc.poll() is None or predicate(self.lines), \
                f"driver exited {self.proc.returncode}:\n" + "\n".join(self.lines)
            assert time.time() < deadline, "timed out; driver said:\n" + "\n".join(self.lines)
            time.sleep(0.05)

    def told(self) -> dict[int, float]:
        """Trial number -> x, for every trial it told."""
        return {int(n): float(x) for _, n, x in (line.split() for line in self.lines
                                                  if line.startswith("told "))}

    def finish(self, timeout: float = 60) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def kill(self, sig=signal.SIGKILL) -> None:
        os.kill(self.proc.pid, sig)


@pytest.fixture(params=["endpoint-from-env", "endpoint-in-uri"])
def sweep_uri(request, s3_server, s3_bucket, monkeypatch) -> str:
    """The sweep directory s3://BUCKET/runs/demo; in the second run with the endpoint only as
    URI options (no AWS_ENDPOINT_URL_S3 anywhere: without them nothing would be reached)."""
    if request.param == "endpoint-from-env":
        return f"{s3_bucket}/demo"
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    return f"{s3_bucket}/demo?{s3_server.query}"


def objects(s3_server, sweep_uri: str, sub: str) -> list[str]:
    path = sweep_uri.partition("?")[0][len("s3://"):] + "/" + sub
    infos = s3_server.filesystem().get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(i.base_name for i in infos)


def read_elsewhere(uri: str) -> list[dict]:
    """The study's journal as a process without the lease reads it."""
    done = subprocess.run([sys.executable, "-c", "import json, sys; from search.study import "
                           "read_journal; print(json.dumps(read_journal(sys.argv[1])))", uri],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def take_over(uri: str, timeout: float):
    """Try for the lock until it is ours: (the lock's context manager entered, its lease, the
    refusals seen before, seconds it took)."""
    refusals, start = [], time.time()
    while True:
        lock = sweep_lock(uri, "demo", ttl=TTL)
        try:
            lease = lock.__enter__()
            return lock, lease, refusals, time.time() - start
        except SweepBusy as e:
            refusals.append(str(e))
            assert time.time() - start < timeout, refusals[-1]
            time.sleep(0.5)


@pytest.mark.system
def test_study_survives_restart_and_kill(sweep_uri, s3_server, monkeypatch):
    first = Driver(sweep_uri, 3)
    assert first.finish() == 0, first.lines
    assert "seen 0" in first.lines and len(first.told()) == 3

    second = Driver(sweep_uri, 0, "--pause", "0.05")  # trials until killed
    second.wait_for(lambda lines: sum(line.startswith("told ") for line in lines) >= 4)
    second.kill()
    second.finish()
    assert "seen 3" in second.lines  # a restarted driver sees every earlier trial

    # The killed driver ran on this machine: its lease is taken over at once; this driver
    # merges the chain and sees every trial.
    monkeypatch.setattr(study_module, "MERGE_AT", 4)
    lock, lease, refusals, waited = take_over(sweep_uri, timeout=TTL + 10)
    try:
        assert not refusals and waited < TTL, refusals
        study = optuna.load_study(study_name="demo", storage=open_study_storage(sweep_uri))
        told = {**first.told(), **second.told()}
        complete = {t.number: t.params["x"] for t in study.trials
                    if t.state == optuna.trial.TrialState.COMPLETE}
        assert told.items() <= complete.items()  # every told trial, with its parameters
        assert all(t.value == pytest.approx(t.params["x"] ** 2) for t in study.trials
                   if t.state == optuna.trial.TrialState.COMPLETE)
        assert len(study.trials) <= len(told) + 1  # and the one in hand when it was killed
        assert len(objects(s3_server, sweep_uri, JOURNAL_DIR)) == 1  # merged into one object
        # Tune pickles the searcher with its storage: the copy is the URI alone, and works
        pickled = pickle.dumps(open_study_storage(sweep_uri))
        assert b"testing" not in pickled  # no credentials in Tune's snapshot
        assert len(pickle.loads(pickled).get_all_trials(0)) == len(study.trials)

        study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=2)
        # another process reads the same journal (listing it) as the holder has in memory
        assert read_elsewhere(sweep_uri) == list(open_study_storage(sweep_uri)._backend.read_logs(0))
        assert len(objects(s3_server, sweep_uri, JOURNAL_DIR)) > 1  # one object per append again
        trials = len(study.trials)
    finally:
        lock.__exit__(None, None, None)

    third = Driver(sweep_uri, 1)
    assert third.finish() == 0, third.lines
    assert f"seen {trials}" in third.lines


@pytest.mark.system
def test_second_driver_refused(sweep_uri, s3_server):
    with sweep_lock(sweep_uri, "demo", ttl=TTL) as lease:
        time.sleep(2 * TTL + 1)  # past two renewals: still ours
        lease.check()
        other = Driver(sweep_uri, 1)
        assert other.finish() == 2
        assert len(other.lines) == 1, other.lines
        assert other.lines[0].startswith(
            "error: sweep 'demo' is being run by another driver right now (lease held by ")
        assert f" pid {os.getpid()} until " in other.lines[0]
        assert objects(s3_server, sweep_uri, JOURNAL_DIR) == []  # it wrote nothing
        with pytest.raises(SweepBusy):  # nor can this process take it twice
            with sweep_lock(sweep_uri, "demo", ttl=TTL):
                pass
        lease.check()
    body = json.loads(s3_server.filesystem().open_input_stream(
        sweep_uri.partition("?")[0][len("s3://"):] + "/driver.lease").read())
    assert body["state"] == "released"  # so the next driver need not wait for it to lapse
    with sweep_lock(sweep_uri, "demo", ttl=TTL):
        pass


@pytest.mark.system
def test_two_drivers_starting_together_one_wins(sweep_uri):
    drivers = [Driver(sweep_uri, 1, "--hold") for _ in range(3)]
    try:
        deadline = time.time() + 60
        while sum(d.proc.poll() == 2 for d in drivers) < 2:
            assert time.time() < deadline, [d.lines for d in drivers]
            time.sleep(0.1)
        winner, = [d for d in drivers if d.proc.poll() is None]
        winner.wait_for(lambda lines: any(line.startswith("told ") for line in lines))
        for d in drivers:
            if d is not winner:
                assert len(d.lines) == 1 and d.lines[0].startswith(
                    "error: sweep 'demo' is being run by another driver right now"), d.lines
    finally:
        for d in drivers:
            if d.proc.poll() is None:
                d.kill()
                d.finish()


@pytest.mark.system
def test_stale_lease_of_killed_driver_is_taken_over(sweep_uri):
    holder = Driver(sweep_uri, 0, "--hold")
    holder.wait_for(lambda lines: "held" in lines)
    holder.kill()
    holder.finish()
    # on the machine it ran on, a holder whose pid runs no more is dead for sure: no wait
    with sweep_lock(sweep_uri, "demo", ttl=TTL) as lease:
        lease.check()

    # elsewhere (another head node) nobody can tell dead from cut off: the lease is waited out
    holder = Driver(sweep_uri, 0, "--hold")
    holder.wait_for(lambda lines: "held" in lines)
    holder.kill()
    holder.finish()
    client, bucket, key = s3_client(sweep_uri, LEASE_FILE)
    body = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps({**body, "machine": "elsewhere"}))
    killed = time.time()
    with pytest.raises(SweepBusy, match=f"lease held by .* pid {holder.proc.pid} until "):
        with sweep_lock(sweep_uri, "demo", ttl=TTL):
            pass
    with sweep_lock(sweep_uri, "demo", ttl=TTL, wait=TTL + 10) as lease:  # outwaits the lease
        assert time.time() - killed <= TTL + 1 + 3  # lapsed, not stuck forever
        lease.check()


@pytest.mark.system
def test_driver_that_lost_its_lease_stops_writing(sweep_uri, s3_server):
    writer = Driver(sweep_uri, 0, "--pause", "1")
    writer.wait_for(lambda lines: sum(line.startswith("told ") for line in lines) >= 2)
    # A driver cut off (paused, partitioned) past its lease: stopped in its pause between two
    # trials (a write already on the wire when a driver stops is beyond any lease's reach).
    writer.kill(signal.SIGSTOP)
    try:
        lock, lease, refusals, _ = take_over(sweep_uri, timeout=TTL + 10)
    finally:
        stored = objects(s3_server, sweep_uri, JOURNAL_DIR)
        writer.kill(signal.SIGCONT)
    try:
        assert refusals
        assert writer.finish() == 3, writer.lines
        assert writer.lines[-1].startswith("lost: this driver lost the lease on sweep 'demo' (")
        assert any(line.startswith("on_lost: ") for line in writer.lines)
        assert objects(s3_server, sweep_uri, JOURNAL_DIR) == stored  # not one write after
        lease.check()  # and the lease stays with the new driver
        study = optuna.load_study(study_name="demo", storage=open_study_storage(sweep_uri))
        done = {t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
        assert set(writer.told()) <= done
    finally:
        lock.__exit__(None, None, None)


@pytest.mark.system
def test_export_opens_in_optuna_dashboard(s3_server, s3_bucket, tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    storage = f"{s3_bucket}?{s3_server.query}"
    uri = f"{s3_bucket}/demo?{s3_server.query}"
    with sweep_lock(uri, "demo", ttl=TTL):
        study = optuna.create_study(study_name="demo", storage=open_study_storage(uri))
        study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=4)
    out = tmp_path / "demo.optuna.journal"
    done = subprocess.run([sys.executable, "-m", "search.study", "export", "demo", "--storage", storage,
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"optuna-dashboard {out}" in done.stdout
    copy = optuna.load_study(study_name="demo", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out))))
    assert [t.params for t in copy.trials] == [t.params for t in study.trials]

    missing = subprocess.run([sys.executable, "-m", "search.study", "export", "nope", "--storage",
                              storage, "--out", str(tmp_path / "x")], capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and missing.stderr.startswith("error: there is no study in ")
    assert len(missing.stderr.splitlines()) == 1

    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    if not dashboard.exists():
        pytest.skip("optuna-dashboard is not installed")
    port = free_port()
    server = subprocess.Popen([str(dashboard), str(out), "--host", "127.0.0.1", "--port", str(port),
                               "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    studies = json.load(r)["study_summaries"]
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None
                time.sleep(0.3)
        assert [s["study_name"] for s in studies] == ["demo"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}",
                                    timeout=10) as r:
            assert len(json.load(r)["trials"]) == 4
    finally:
        server.kill()
        server.wait(10)


def test_local_disk_keeps_the_file_lock_and_journal_file(tmp_path):
    uri = str(tmp_path / "runs" / "demo")
    with sweep_lock(uri, "demo") as lease:
        other = Driver(uri, 1)
        assert other.finish() == 2
        assert other.lines[0].startswith("error: sweep 'demo' is being run by another driver right "
                                         f"now (locked by ") and f"pid {os.getpid()} since" in other.lines[0]
        lease.check()
        study = optuna.create_study(study_name="demo", storage=open_study_storage(uri))
        study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=2)
    assert (tmp_path / "runs" / "demo" / JOURNAL_FILE).is_file()  # what optuna-dashboard opens
    again = Driver(uri, 1)
    assert again.finish() == 0 and "seen 2" in again.lines
    assert len(read_journal(uri)) > 0


@pytest.mark.system
def test_store_that_ignores_conditional_writes_is_refused(s3_bucket, monkeypatch):
    """A store that drops If-None-Match / If-Match (as older S3 clones do) keeps no one out: the
    lease is refused there rather than trusted. Here the headers are stripped on their way out."""
    from search import lease as lease_module

    real = lease_module.s3_client

    def stripping(*args, **kw):
        client, bucket, key = real(*args, **kw)

        def strip(request, **_):
            for header in ("If-None-Match", "If-Match"):
                if header in request.headers:
                    del request.headers[header]

        client.meta.events.register("before-sign.s3.PutObject", strip)
        return client, bucket, key

    monkeypatch.setattr(lease_module, "s3_client", stripping)
    with pytest.raises(lease_module.UsageError, match="ignores conditional writes"):
        with sweep_lock(f"{s3_bucket}/demo", "demo", ttl=TTL):
            pass


@pytest.mark.system
def test_intermediate_values_cost_no_write_of_their_own(s3_server, s3_bucket):
    """One per Tune result (OptunaSearch reports it): held back and written with the next log,
    or when the driver releases the sweep."""
    uri = f"{s3_bucket}/demo"
    with sweep_lock(uri, "demo", ttl=TTL):
        study = optuna.create_study(study_name="demo", storage=open_study_storage(uri))
        trial = study.ask()
        trial.suggest_float("x", -1, 1)
        stored = objects(s3_server, uri, JOURNAL_DIR)
        for step in range(5):
            trial.report(step / 10, step)
        assert objects(s3_server, uri, JOURNAL_DIR) == stored  # no PUT per result
        assert study.trials[0].intermediate_values == {s: s / 10 for s in range(5)}  # in memory
        study.tell(trial, 0.5)
        assert len(objects(s3_server, uri, JOURNAL_DIR)) == len(stored) + 1  # all in one object
        last = study.ask()
        last.report(0.7, 1)  # the driver ends right after a result
    seen = optuna.load_study(study_name="demo", storage=open_study_storage(uri)).trials
    assert seen[0].intermediate_values == {s: s / 10 for s in range(5)} and seen[0].value == 0.5
    assert seen[1].intermediate_values == {1: 0.7}
    assert len(read_elsewhere(uri)) == len(read_journal(uri))


def _space(trial):
    return {"x": trial.suggest_float("x", 0, 1)}


def test_resumed_searcher_when_the_study_is_ahead_of_tunes_snapshot(tmp_path):
    """The study is written at once, Tune's snapshot of the searcher every few seconds: a driver
    killed in between leaves the study ahead. The resumed searcher neither crashes on a trial the
    study already finished (Optuna's UpdateFinishedTrialError, which plain OptunaSearch raises on
    every resume) nor leaves a trial asked just before the kill running for ever."""
    from ray.tune.search.optuna import OptunaSearch

    from search.tuner import StudySearch

    uri = str(tmp_path / "demo")

    def searcher(cls=StudySearch):
        return cls(space=_space, metric="score", mode="max", study_name="demo",
                   storage=open_study_storage(uri))

    snapshot = str(tmp_path / "searcher-state.pkl")
    result = {"score": 0.1, "training_iteration": 1}
    with sweep_lock(uri, "demo"):
        first = searcher()
        first.suggest("a")
        first.on_trial_result("a", result)
        first.save(snapshot)  # Tune's snapshot ...
        first.on_trial_complete("a", {"score": 0.3})  # ... then the study moves on
        first._ot_study.enqueue_trial({"x": 0.25})  # a queued baseline, asked, then the kill
        first.suggest("b")

        again = {"score": 0.2, "training_iteration": 2}  # "a" again from its last checkpoint
        plain = searcher(OptunaSearch)
        plain.restore(snapshot)
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            plain.on_trial_result("a", again)

        resumed = searcher()
        resumed.restore(snapshot)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nor a warning about a step reported twice
            resumed.on_trial_result("a", result)
            resumed.on_trial_result("a", again)
        resumed.on_trial_complete("a", {"score": 0.9})
        study = resumed._ot_study
        a, b, *queued = study.trials
        assert a.state == optuna.trial.TrialState.COMPLETE and a.value == 0.3  # as first told
        assert b.state == optuna.trial.TrialState.FAIL  # no Tune trial will run it
        assert [(t.state, t.system_attrs["fixed_params"]) for t in queued] == [
            (optuna.trial.TrialState.WAITING, {"x": 0.25})]  # asked again by the next trial
        resumed.suggest("c")
        assert study.trials[2].params == {"x": 0.25}


def test_a_store_without_conditional_writes_for_the_lease_is_refused():
    with pytest.raises(UsageError, match=r"cannot lock a sweep at 'gs://bucket/runs/demo': a "
                                         r"driver lease needs a local path or s3://"):
        with sweep_lock("gs://bucket/runs/demo", "demo"):
            pass
