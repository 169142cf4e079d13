"""Optuna's own storage contract, run against the sweep's study storage (search.sweep.study:
``open_study_storage``): ``optuna.testing.pytest_storages.StorageTestCase``, the suite optuna
ships for every storage (its tests/storages_tests/test_storages.py subclasses it with a
``storage`` fixture per backend, as this file does), on

* object storage: ``JournalStorage(ObjectJournalBackend(sweep_uri))`` on moto's server and on
  SeaweedFS (tests/harness/s3.py: ``any_s3``, one server of each for the whole session), each
  test in a sweep directory of its own, written under the sweep's lease (``sweep_lock`` held
  around the test, as the driver holds it around the sweep);
* local disk: Optuna's JournalFileBackend in the sweep directory (LocalJournalBackend), under
  the FileLock.

Optuna's journal-backend tests are not shipped in the package (tests/storages_tests/
journal_tests/test_journal.py lives in its repository only): the ones that apply are ported here
(appends from many threads; its multi-process one becomes the fork rule below); the snapshot
ones are skipped with the reason.

Then the fork rule (search.storage.base: ``Lease.check_process``): a process forked from the
lease holder (os.fork, multiprocessing's 'fork') inherits its lease objects, their token and the
commit logs' writer, but not the lease: whatever it writes to the sweep is refused (LeaseLost),
on object storage down to the commit logs' put-if-absent, and the store holds only the holder's
logs; on local disk the journal file refuses it too, and the child leaves the holder's FileLock
alone.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import multiprocessing
import os
import traceback
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

pytest.register_assert_rewrite("optuna.testing.pytest_storages")  # optuna's conftest does the same

import optuna  # noqa: E402
from optuna.testing.pytest_storages import StorageTestCase  # noqa: E402

from search.storage.commits import STUDY_LOG, SWEEP_LOG, open_log  # noqa: E402
from search.storage.lease import LOCK_FILE, check_writer, sweep_lock  # noqa: E402
from search.storage.uri import join  # noqa: E402
from search.sweep.study import flush, open_study_storage, read_journal  # noqa: E402
from tests.harness import s3 as s3_harness  # noqa: E402

pytestmark = pytest.mark.system

optuna.logging.set_verbosity(optuna.logging.WARNING)

any_s3 = s3_harness.any_s3  # the session's moto and SeaweedFS servers (a fixture)

_sweeps = itertools.count(1)


@pytest.fixture(scope="module")
def s3_root(any_s3):
    """One bucket per server for this module: ``s3://BUCKET/runs?endpoint_override=...``; the
    test keys in os.environ while the module runs (the endpoint in the URI alone)."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in s3_harness.ENV.items():
            mp.setenv(name, value)
        for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
            mp.delenv(name, raising=False)
        bucket = any_s3.make_bucket(f"optuna-contract-{os.getpid()}")
        yield f"s3://{bucket}/runs?{any_s3.query}"


@pytest.fixture
def s3_sweep(s3_root) -> str:
    """A sweep directory of this test's own on the server."""
    return join(s3_root, f"s{next(_sweeps):04d}")


@pytest.fixture
def local_sweep(tmp_path) -> str:
    return str(tmp_path / "sweep")


def _held(sweep_uri: str):
    with sweep_lock(sweep_uri, "contract"):
        yield open_study_storage(sweep_uri)


class JournalBackendCases:
    """Optuna's journal-backend tests that apply (tests/storages_tests/journal_tests/
    test_journal.py in its repository; not shipped in the package), on ``storage``'s backend."""

    def test_concurrent_append_logs_for_multi_threads(self, storage):
        """Optuna's test with its 10 threads, and 100 records rather than 200 (on object storage
        each is a PUT: none of these logs is held back)."""
        backend = storage._backend
        record = {"key": "value"}
        with ThreadPoolExecutor(10) as pool:
            list(pool.map(backend.append_logs, [[record] for _ in range(100)], timeout=60))
        flush(storage)
        assert list(backend.read_logs(0)) == [record] * 100

    @pytest.mark.parametrize("test", ["test_save_snapshot_per_each_trial",
                                      "test_save_snapshot_per_each_study",
                                      "test_check_replay_result_restored_from_snapshot",
                                      "test_snapshot_given"])
    def test_snapshot(self, test):
        pytest.skip(f"optuna's {test}: snapshots are an optional interface of a journal backend "
                    "(optuna.storages.journal.BaseJournalSnapshot, which only JournalRedisBackend "
                    "has); neither ObjectJournalBackend nor JournalFileBackend implements it (on object "
                    "storage a new lease holder reads the study log's segments and entries instead)")


class TestObjectStorage(StorageTestCase, JournalBackendCases):
    """The study on object storage, written by the lease holder (moto, SeaweedFS)."""

    @pytest.fixture
    def storage(self, s3_sweep):
        yield from _held(s3_sweep)


class TestLocalDisk(StorageTestCase, JournalBackendCases):
    """The study on local disk: Optuna's JournalFileBackend, under the sweep's FileLock."""

    @pytest.fixture
    def storage(self, local_sweep):
        yield from _held(local_sweep)


# -- the fork rule --------------------------------------------------------------------------
def _in_child(attempts) -> dict[str, str]:
    """Fork; the child runs each attempt and reports how it ended (the exception's class and
    message, or 'ok'), then leaves with os._exit (no pytest, no atexit in it)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        outcome = {}
        try:
            for name, attempt in attempts.items():
                try:
                    attempt()
                    outcome[name] = "ok"
                except BaseException as e:  # noqa: BLE001  (reported to the parent)
                    outcome[name] = f"{type(e).__name__}: {e}"
        except BaseException:
            outcome["child"] = traceback.format_exc()
        finally:
            with os.fdopen(w, "w") as out:
                out.write(json.dumps(outcome))
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as got:
        text = got.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(text)


def _refused(outcome: str) -> bool:
    return outcome.startswith("LeaseLost: ") and "forked" in outcome


def _stored_logs(uri: str) -> tuple[list[dict], set[str]]:
    """The study's logs as a fresh reader finds them on the store, and the tokens that wrote."""
    log = open_log(uri, STUDY_LOG, shared=False)
    log.sync()
    return ([rec for e in log.entries for rec in e.get("logs", ())],
            {e["token"] for e in log.entries})


def test_a_process_forked_from_the_holder_cannot_write_under_its_lease_on_object_storage(s3_sweep):
    """Each way the child could write: the study, the guard, the logs the parent held back, a
    commit to either log; and its leaving the with block leaves the parent's lease as it was."""
    uri = s3_sweep
    with sweep_lock(uri, "fork") as lease:
        storage = open_study_storage(uri)
        study = optuna.create_study(study_name="demo", storage=storage)
        study.set_user_attr("parent", 1)
        trial = study.ask()  # held back: the parent writes it with its next log
        outcome = _in_child({
            "study": lambda: study.set_user_attr("child", 1),
            "check_writer": lambda: check_writer(uri),
            "flush": lambda: flush(storage),  # the parent's held-back logs: the parent writes them
            "study log": lambda: open_log(uri, STUDY_LOG).commit({"logs": [{"child": 1}]}),
            "sweep log": lambda: open_log(uri, SWEEP_LOG).commit({"files": {"child": "1"}}),
            "held": lambda: None if not lease.held else 1 / 0,
            "release": lease.release,  # leaving the with block: the parent's lease stays its own
        })
        assert {name for name, got in outcome.items() if got != "ok"} == \
            {"study", "check_writer", "flush", "study log", "sweep log"}, outcome
        assert all(_refused(outcome[name]) for name in ("study", "check_writer", "flush",
                                                         "study log", "sweep log")), outcome
        assert lease.held
        study.tell(trial, 0.5)
        study.set_user_attr("after", 1)
        mine = storage._backend.read_logs(0)
        logs, tokens = _stored_logs(uri)
        assert logs == mine and tokens == {lease.token}
        assert open_log(uri, SWEEP_LOG, shared=False).sync()[-1].get("takeover")  # nothing after it
    seen = optuna.load_study(study_name="demo", storage=open_study_storage(uri))
    assert seen.user_attrs == {"parent": 1, "after": 1}
    assert [(t.number, t.value) for t in seen.trials] == [(0, 0.5)]


def _append(backend, logs) -> str:
    try:
        backend.append_logs(logs)
        return "ok"
    except BaseException as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"


def test_optunas_multi_process_journal_test_under_fork_writes_nothing(s3_sweep):
    """Optuna's test_concurrent_append_logs_for_multi_processes (a ProcessPoolExecutor: forked
    on Linux) on the holder's backend, 4 processes and 20 records: before the fork rule the store
    took all of them (201 logs against the holder's 1, at 200 records); now each is refused."""
    uri = s3_sweep
    with sweep_lock(uri, "fork") as lease:
        storage = open_study_storage(uri)
        backend = storage._backend
        backend.append_logs([{"parent": 1}])
        record = {"key": "value"}
        with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("fork")) as pool:
            got = list(pool.map(_append, [backend] * 20, [[record]] * 20, timeout=60))
        assert all(_refused(g) for g in got), got
        assert backend.read_logs(0) == [{"parent": 1}]
        assert _stored_logs(uri) == ([{"parent": 1}], {lease.token})


def test_a_process_forked_from_the_holder_on_local_disk_cannot_write_nor_unlock(local_sweep):
    """Local disk: the study's journal file refuses the child's appends (the holder would see
    them there, but they are not the holder's), and the FileLock is flock on a descriptor the
    child shares with its parent, so a child leaving the with block must not unlock it (another
    driver could then start)."""
    uri = local_sweep
    with sweep_lock(uri, "fork") as lease:
        storage = open_study_storage(uri)
        study = optuna.create_study(study_name="demo", storage=storage)
        study.set_user_attr("parent", 1)
        backend = storage._backend
        outcome = _in_child({"study": lambda: study.set_user_attr("child", 1),
                             "journal": lambda: backend.append_logs([{"child": 1}]),
                             "check_writer": lambda: check_writer(uri),
                             "held": lambda: None if not lease.held else 1 / 0,
                             "release": lease.release})
        assert all(_refused(outcome[name]) for name in ("study", "journal", "check_writer")), outcome
        assert outcome["held"] == outcome["release"] == "ok", outcome
        assert lease.held
        with open(os.path.join(uri, LOCK_FILE)) as f, pytest.raises(BlockingIOError):
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # still locked: by the parent
        check_writer(uri)
        with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("fork")) as pool:
            got = list(pool.map(_append, [backend] * 20, [[{"key": "value"}]] * 20, timeout=60))
        assert all(_refused(g) for g in got), got
        assert [log for log in read_journal(uri) if "child" in json.dumps(log) or "key" in log] == []
    assert optuna.load_study(study_name="demo", storage=open_study_storage(uri)).user_attrs == {"parent": 1}
