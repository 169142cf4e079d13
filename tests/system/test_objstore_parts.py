"""The sweep's study (search.sweep.study), trial database (search.db.store) and driver lock
(search.storage.lease) on real S3 API servers on 127.0.0.1, each suite once on moto's server and once
on SeaweedFS (tests/harness/s3.py: ``any_s3``), each driver a process of its own, killed,
paused and starved for real; replies lost, held back and answered 409 by the relay in front of
the server (tests/harness/relay.py)."""

from __future__ import annotations

import json
import os
import pickle
import re
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

from search.db import load_trials
from search.storage import commits
from search.storage.commits import STUDY_LOG, SWEEP_LOG, open_log
from search.db.errors import StoreError
from search.storage.uri import join
from search.storage.lease import LEASE_FILE, SweepBusy, sweep_lock
from search.storage.s3_client import s3_client
from search.sweep.study import JOURNAL_FILE, open_study_storage, read_journal
from search.storage.s3 import Fence
from space_defs.cli import UsageError
from tests.harness.relay import Relay, Rule
from tests.harness.s3 import any_bucket, any_s3, free_port, s3_bucket, s3_env, s3_server  # noqa: F401

DRIVER = Path(__file__).parents[1] / "harness" / "objstore_driver.py"
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

    def wait_for(self, predicate, timeout: float = 90) -> None:
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

    def stored(self) -> set[str]:
        """The trial rows it wrote to the database."""
        return {f"t{line.split()[1]}" for line in self.lines if line.startswith("stored ")}

    def finish(self, timeout: float = 90) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def kill(self, sig=signal.SIGKILL) -> None:
        os.kill(self.proc.pid, sig)


def told_lines(lines) -> int:
    return sum(line.startswith("told ") for line in lines)


@pytest.fixture
def sweep_uri(any_bucket) -> str:
    """The sweep directory s3://BUCKET/runs/demo?endpoint_override=... on each server."""
    return join(any_bucket, "demo")


@pytest.fixture
def relay(any_s3):
    """A relay in front of the server (the faults it injects: tests/harness/relay.py)."""
    relay = Relay(any_s3.host, any_s3.port).start()
    try:
        yield relay
    finally:
        relay.stop()


def via(relay: Relay, uri: str) -> str:
    """The same sweep, reached through the relay."""
    return f"{uri.partition('?')[0]}?{relay.query}"


def listing(server, sweep_uri: str) -> dict[str, tuple[int, object]]:
    """Every object of the sweep but the lease: name -> (size, modification time)."""
    base = sweep_uri.partition("?")[0][len("s3://"):]
    infos = server.filesystem().get_file_info(pafs.FileSelector(base, recursive=True,
                                                                allow_not_found=True))
    return {i.path[len(base) + 1:]: (i.size, i.mtime) for i in infos
            if i.type == pafs.FileType.File and not i.path.endswith(LEASE_FILE)}


def entries(uri: str, name: str) -> list[dict]:
    """The log's entries as a fresh reader in this process sees them."""
    log = open_log(uri, name, shared=False)
    log.sync()
    return log.entries


def read_elsewhere(uri: str) -> list[dict]:
    """The study's journal as a process without the lease reads it."""
    done = subprocess.run([sys.executable, "-c", "import json, sys; from search.sweep.study import "
                           "read_journal; print(json.dumps(read_journal(sys.argv[1])))", uri],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def complete(uri: str) -> dict[int, float]:
    study = optuna.load_study(study_name="demo", storage=open_study_storage(uri))
    return {t.number: t.params["x"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}


def db_trials(uri: str) -> set[str]:
    root = uri.partition("?")[0].rpartition("/")[0] + "?" + uri.partition("?")[2]
    return set(load_trials(root, "demo")["trial_id"])


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


def test_study_survives_restart_and_kill_and_opening_it_rewrites_nothing(sweep_uri, any_s3,
                                                                         monkeypatch):
    first = Driver(sweep_uri, 3)
    assert first.finish() == 0, first.lines
    assert "seen 0" in first.lines and len(first.told()) == 3
    long_lived = open_study_storage(sweep_uri)  # a reader in this process, before the others ran
    assert len(long_lived.get_all_trials(0)) == 3

    second = Driver(sweep_uri, 0, "--pause", "0.05")  # trials until killed
    second.wait_for(lambda lines: told_lines(lines) >= 4)
    second.kill()
    second.finish()
    assert "seen 3" in second.lines  # a restarted driver sees every earlier trial

    # The killed driver ran on this machine: its lease is taken over at once. Taking the sweep
    # over and opening its study add a takeover entry per log and change no object.
    monkeypatch.setattr(commits, "SEGMENT", 4)
    before = listing(any_s3, sweep_uri)
    lock, lease, refusals, waited = take_over(sweep_uri, timeout=TTL + 10)
    try:
        assert not refusals and waited < TTL, refusals
        study = optuna.load_study(study_name="demo", storage=open_study_storage(sweep_uri))
        after = listing(any_s3, sweep_uri)
        assert {k: v for k, v in after.items() if k in before} == before  # nothing rewritten
        added = sorted(set(after) - set(before))
        assert [a for a in added if "/seg-" not in a] == [
            f"{log}/000000/{len(entries(sweep_uri, log)) - 1:012d}.json" for log in (SWEEP_LOG, STUDY_LOG)]
        told = {**first.told(), **second.told()}
        got = {t.number: t.params["x"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
        assert told.items() <= got.items()  # every told trial, with its parameters
        assert all(t.value == pytest.approx(t.params["x"] ** 2) for t in study.trials
                   if t.state == optuna.trial.TrialState.COMPLETE)
        assert len(study.trials) <= len(told) + 1  # and the one in hand when it was killed
        assert db_trials(sweep_uri) >= first.stored() | second.stored()
        # Tune pickles the searcher with its storage: the copy is the URI alone, and works
        pickled = pickle.dumps(open_study_storage(sweep_uri))
        assert b"testing" not in pickled  # no credentials in Tune's snapshot
        assert len(pickle.loads(pickled).get_all_trials(0)) == len(study.trials)

        study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=6)
        # another process reads the same journal (from segments, then entries) as the holder
        # has in memory; the reader made before three drivers came and went reads it too
        holder = list(open_study_storage(sweep_uri)._backend.read_logs(0))
        assert read_elsewhere(sweep_uri) == holder
        assert any("/seg-" in name for name in listing(any_s3, sweep_uri))
        trials = len(study.trials)
    finally:
        lock.__exit__(None, None, None)
    assert len(long_lived.get_all_trials(0)) == trials

    third = Driver(sweep_uri, 1)
    assert third.finish() == 0, third.lines
    assert f"seen {trials}" in third.lines


def test_second_driver_refused_writes_nothing(sweep_uri, any_s3):
    with sweep_lock(sweep_uri, "demo", ttl=TTL) as lease:
        time.sleep(2 * TTL + 1)  # past two renewals: still ours
        lease.check()
        before = listing(any_s3, sweep_uri)
        other = Driver(sweep_uri, 1)
        assert other.finish() == 2
        assert len(other.lines) == 1, other.lines
        assert other.lines[0].startswith(
            "error: sweep 'demo' is being run by another driver right now (lease held by ")
        assert f" pid {os.getpid()} until " in other.lines[0]
        assert listing(any_s3, sweep_uri) == before  # it wrote nothing
        with pytest.raises(SweepBusy):  # nor can this process take it twice
            with sweep_lock(sweep_uri, "demo", ttl=TTL):
                pass
        lease.check()
    client, bucket, key = s3_client(sweep_uri, LEASE_FILE)
    body = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert body["state"] == "released"  # so the next driver need not wait for it to lapse
    with sweep_lock(sweep_uri, "demo", ttl=TTL) as lease:
        assert lease.generation == body["gen"] + 1


@pytest.mark.parametrize("conflicts", [False, True], ids=["plain", "409s"])
def test_drivers_starting_in_the_same_second_one_wins(sweep_uri, relay, conflicts):
    """Three drivers at once; with 409 ConditionalRequestConflict (what AWS answers to
    concurrent conditional writes of one key) to their first conditional PUTs of the lease
    and of the commit logs: exactly one holds the sweep, the others are refused in one line."""
    if conflicts:
        lease_409 = relay.add(Rule("status", status=409, path=r"/driver\.lease", header="If-None-Match",
                                   times=3))
        commit_409 = relay.add(Rule("status", status=409, path=r"/(commits|optuna-log)/",
                                    header="If-None-Match", times=2))
    drivers = [Driver(via(relay, sweep_uri), 1, "--hold") for _ in range(3)]
    try:
        deadline = time.time() + 90
        while sum(d.proc.poll() == 2 for d in drivers) < 2:
            assert time.time() < deadline, [d.lines for d in drivers]
            assert all(d.proc.poll() in (None, 2) for d in drivers), [d.lines for d in drivers]
            time.sleep(0.1)
        winner, = [d for d in drivers if d.proc.poll() is None]
        winner.wait_for(lambda lines: told_lines(lines) >= 1)
        for d in drivers:
            if d is not winner:
                assert len(d.lines) == 1 and d.lines[0].startswith(
                    "error: sweep 'demo' is being run by another driver right now"), d.lines
        if conflicts:
            assert lease_409.fired.is_set() and commit_409.fired.is_set()
        assert len(complete(sweep_uri)) == 1
    finally:
        for d in drivers:
            if d.proc.poll() is None:
                d.kill()
                d.finish()


def test_lost_replies_at_acquire_at_takeover_and_at_a_commit(sweep_uri, relay):
    """The store took the write but its reply was lost, and botocore's retry was refused (the
    object now exists, or has another ETag): the driver recognises its own write (the lease
    names its token, a commit its id) and goes on, instead of refusing itself."""
    create = relay.add(Rule("drop_reply", path=r"/driver\.lease", header="If-None-Match"))
    commit = relay.add(Rule("drop_reply", path=r"/optuna-log/", header="If-None-Match"))
    first = Driver(via(relay, sweep_uri), 2)
    assert first.finish() == 0, first.lines
    assert create.fired.is_set() and commit.fired.is_set()
    assert len(first.told()) == 2

    takeover = relay.add(Rule("drop_reply", path=r"/driver\.lease", header="If-Match"))
    second = Driver(via(relay, sweep_uri), 1)  # takes the released lease over with If-Match
    assert second.finish() == 0, second.lines
    assert takeover.fired.is_set()
    assert "seen 2" in second.lines and second.lines[0] == "held 2"
    assert sorted(complete(sweep_uri)) == [0, 1, 2]
    assert len(read_journal(sweep_uri)) == len(read_elsewhere(sweep_uri))


def test_lost_reply_at_renewal_keeps_the_lease(sweep_uri, relay):
    holder = Driver(via(relay, sweep_uri), 0, "--hold")
    holder.wait_for(lambda lines: "held 1" in lines)
    lost = relay.add(Rule("drop_reply", path=r"/driver\.lease", header="If-Match"))
    later = relay.add(Rule("pass", path=r"/driver\.lease", header="If-Match", times=3))
    try:
        assert lost.fired.wait(60) and later.fired.wait(60)  # three renewals after the lost one
        assert holder.proc.poll() is None, holder.lines
        assert not any(line.startswith(("on_lost", "lost")) for line in holder.lines), holder.lines
        client, bucket, key = s3_client(sweep_uri, LEASE_FILE)
        body = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert body["pid"] == holder.proc.pid and body["state"] == "held"
    finally:
        holder.kill()
        holder.finish()


def test_deadline_passes_while_renewals_hang(sweep_uri, relay):
    """Every renewal's reply held back by the network: the lease's watchdog gives the lease up
    at its deadline, whatever the renewing thread is stuck in."""
    holder = Driver(via(relay, sweep_uri), 1, "--hold")
    holder.wait_for(lambda lines: told_lines(lines) == 1)
    hang = relay.add(Rule("hold_reply", path=r"/driver\.lease", header="If-Match", times=1000))
    try:
        assert hang.hit.wait(60)
        assert holder.finish() == 3, holder.lines
        assert not hang.release.is_set() and hang.hits >= 1  # the renewals were hanging all along
        lost = [line for line in holder.lines if line.startswith("on_lost: ")]
        assert len(lost) == 1 and re.match(r"on_lost: this driver lost the lease on sweep 'demo' \((the "
                                           r"store did not accept a renewal|not renewed) for 2 s\)", lost[0]), holder.lines
    finally:
        hang.release.set()
        if holder.proc.poll() is None:
            holder.kill()
            holder.finish()


@pytest.mark.parametrize("paused", [False, True], ids=["starved", "sigstop"])
def test_a_driver_that_cannot_tell_it_lost_the_sweep_is_fenced_by_the_store(sweep_uri, paused):
    """The writer's clock stands still and its renewals hang (a machine suspended on a clock
    that ignores the suspend): it never notices that its lease lapsed, and keeps writing trials
    to the study and the database (with sigstop: it is paused meanwhile, and resumed after the
    new holder took the sweep over). The store refuses its first write after the takeover;
    what the new holder and every reader see is the writer's trials up to then, and the new
    holder's, nothing else."""
    writer = Driver(sweep_uri, 0, "--pause", "0.3", "--clock-stops")
    writer.wait_for(lambda lines: told_lines(lines) >= 2)
    if paused:
        writer.kill(signal.SIGSTOP)
    try:
        lock, lease, refusals, _ = take_over(sweep_uri, timeout=TTL + 30)
    finally:
        if paused:
            writer.kill(signal.SIGCONT)
    try:
        assert refusals  # it was held, then it lapsed
        assert writer.finish() == 3, writer.lines
        assert writer.lines[-1].startswith("lost: the store refused this driver's commit to the "), writer.lines
        assert f"generation {lease.generation}) took the sweep over" in writer.lines[-1]
        told = writer.told()
        assert complete(sweep_uri) == told  # its trials up to the takeover, none after
        stored = writer.stored()
        # (a flush commits its rows, then merges parts: its merge may be what was refused)
        assert stored <= db_trials(sweep_uri) <= {f"t{n}" for n in told}
        study = optuna.load_study(study_name="demo", storage=open_study_storage(sweep_uri))
        study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=2)
        mine = {t.number: t.params["x"] for t in study.trials[-2:]}
        assert complete(sweep_uri) == {**told, **mine}
        assert read_elsewhere(sweep_uri) == list(open_study_storage(sweep_uri)._backend.read_logs(0))
        for log in (STUDY_LOG, SWEEP_LOG):
            tokens = [e["token"] for e in entries(sweep_uri, log)]
            taken = tokens.index(lease.token)
            assert set(tokens[taken:]) == {lease.token}  # after the takeover: the new holder alone
    finally:
        lock.__exit__(None, None, None)


def test_stale_lease_of_killed_driver_is_taken_over(sweep_uri):
    holder = Driver(sweep_uri, 0, "--hold")
    holder.wait_for(lambda lines: "held 1" in lines)
    holder.kill()
    holder.finish()
    # on the machine it ran on, a holder whose pid runs no more is dead for sure: no wait
    with sweep_lock(sweep_uri, "demo", ttl=TTL) as lease:
        lease.check()

    # elsewhere (another head node) nobody can tell dead from cut off: the lease is waited out
    holder = Driver(sweep_uri, 0, "--hold")
    holder.wait_for(lambda lines: "held 3" in lines)
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


def test_a_trials_fence_holds_only_while_its_driver_holds_the_sweep(sweep_uri):
    """What a trial checks before each checkpoint (search.storage.s3.Fence): its driver's
    generation still holds the lease. Not after a takeover nor after the driver let go; a store
    it cannot read says nothing, and the trial goes on (the driver's own fence still holds)."""
    holder = Driver(sweep_uri, 0, "--hold")
    holder.wait_for(lambda lines: any(line.startswith("held ") for line in lines))
    first = int(next(line for line in holder.lines if line.startswith("held ")).split()[1])
    assert Fence(sweep_uri, first).current()
    assert not Fence(sweep_uri, first + 1).current()
    holder.kill()
    holder.finish()
    with sweep_lock(sweep_uri, "demo", ttl=TTL) as lease:  # a dead pid here: taken over at once
        assert lease.generation == first + 1
        assert not Fence(sweep_uri, first).current()
        assert Fence(sweep_uri, lease.generation).current()
    assert not Fence(sweep_uri, first + 1).current()  # released
    unreachable = f"{sweep_uri.partition('?')[0]}?endpoint_override=127.0.0.1:{free_port()}&scheme=http"
    assert Fence(unreachable, first).current()


def test_a_long_lived_reader_reads_a_log_made_anew(sweep_uri, any_s3):
    """A reader (optuna-dashboard's process, a query) whose cached journal no longer matches
    the store (the sweep was removed and run anew under the same name) reads it again: Optuna's
    replay of the old study is told in one line to open it again, and the study opened again
    is the new one."""
    first = Driver(sweep_uri, 3)
    assert first.finish() == 0, first.lines
    reader = open_study_storage(sweep_uri)
    assert len(reader.get_all_trials(0)) == 3
    any_s3.filesystem().delete_dir(sweep_uri.partition("?")[0][len("s3://"):])
    again = Driver(sweep_uri, 1)
    assert again.finish() == 0, again.lines
    assert "seen 0" in again.lines
    with pytest.raises(StoreError, match="was removed and made anew since this process read it"):
        reader.get_all_trials(0)
    fresh = optuna.load_study(study_name="demo", storage=open_study_storage(sweep_uri))
    assert [t.params for t in fresh.trials] == [{"x": again.told()[0]}]


def test_export_opens_in_optuna_dashboard(any_bucket, tmp_path):
    storage = any_bucket
    uri = join(any_bucket, "demo")
    with sweep_lock(uri, "demo", ttl=TTL):
        study = optuna.create_study(study_name="demo", storage=open_study_storage(uri))
        study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=4)
    out = tmp_path / "demo.optuna.journal"
    done = subprocess.run([sys.executable, "-m", "search.sweep.study", "export", "demo", "--storage", storage,
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"optuna-dashboard {out}" in done.stdout
    copy = optuna.load_study(study_name="demo", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out))))
    assert [t.params for t in copy.trials] == [t.params for t in study.trials]

    missing = subprocess.run([sys.executable, "-m", "search.sweep.study", "export", "nope", "--storage",
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


def test_store_that_ignores_conditional_writes_is_refused(s3_bucket, monkeypatch):
    """A store that drops If-None-Match / If-Match (as older S3 clones do) keeps no one out: the
    lease is refused there rather than trusted. Here the headers are stripped on their way out."""
    from search.storage import s3_lease as lease_module

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


def test_a_trial_costs_one_write_of_the_study(sweep_uri):
    """The logs that fill in a trial being asked, and intermediate values (one per Tune result),
    are held back and written with the next other log, or when the driver releases the sweep."""
    from search.sweep.study import flush

    with sweep_lock(sweep_uri, "demo", ttl=TTL):
        storage = open_study_storage(sweep_uri)
        study = optuna.create_study(study_name="demo", storage=storage)
        stored = len(entries(sweep_uri, STUDY_LOG))
        trial = study.ask()
        trial.suggest_float("x", -1, 1)
        trial.suggest_int("n", 1, 4)
        flush(storage)  # the end of StudySearch.suggest
        assert len(entries(sweep_uri, STUDY_LOG)) == stored + 1  # asked: one entry
        for step in range(5):
            trial.report(step / 10, step)
        assert len(entries(sweep_uri, STUDY_LOG)) == stored + 1  # no PUT per result
        assert study.trials[0].intermediate_values == {s: s / 10 for s in range(5)}  # in memory
        study.tell(trial, 0.5)
        assert len(entries(sweep_uri, STUDY_LOG)) == stored + 2  # all in one entry
        last = study.ask()
        last.report(0.7, 1)  # the driver ends right after a result
    seen = optuna.load_study(study_name="demo", storage=open_study_storage(sweep_uri)).trials
    assert seen[0].intermediate_values == {s: s / 10 for s in range(5)} and seen[0].value == 0.5
    assert seen[1].intermediate_values == {1: 0.7}
    assert len(read_elsewhere(sweep_uri)) == len(read_journal(sweep_uri))


def _space(trial):
    return {"x": trial.suggest_float("x", 0, 1)}


def test_resumed_searcher_when_the_study_is_ahead_of_tunes_snapshot(tmp_path):
    """The study is written at once, Tune's snapshot of the searcher every few seconds: a driver
    killed in between leaves the study ahead. The resumed searcher neither crashes on a trial the
    study already finished (Optuna's UpdateFinishedTrialError, which plain OptunaSearch raises on
    every resume) nor leaves a trial asked just before the kill running for ever."""
    from ray.tune.search.optuna import OptunaSearch

    from search.tune.searchers import StudySearch

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
