"""The recorder's database writes off Tune's thread (search.tune.recorder.Writer), the lease guard on
every write, and Tune's snapshot remembering checkpoints deleted after it: in process, no Ray
cluster, no server."""

from __future__ import annotations

import threading
import time

import pytest

from search.db.store import TrialStore, load_epochs, load_trials
from search.storage.lease import LeaseLost, sweep_lock
from search.tune.recorder import SweepRecorder
from search.tune.writer import Writer, open_store
from search.spec import demo

from .db.test_store import epoch, parts, trial


class SlowStore:
    """A TrialStore whose flushes wait for ``gate`` (a write on the wire to a slow store)."""

    def __init__(self, root):
        self.store = TrialStore(root, "s", flush_interval_s=3600)  # writes only when flushed
        self.gate = threading.Event()
        self.flushes = 0

    def write(self, **rows):
        self.store.write(**rows)

    def flush(self):
        assert self.gate.wait(30)
        self.store.flush()
        self.flushes += 1


def test_puts_return_at_once_and_queue_up_into_one_write(tmp_path):
    slow = SlowStore(tmp_path)
    writer = Writer(lambda: slow, "s")
    writer.put(trials=[trial(trial_id="t0")])  # taken by the writer, held at the gate
    time.sleep(0.2)
    start = time.perf_counter()
    for n in range(1, 21):
        writer.put(epochs=[epoch("t0", n)], trials=[trial(trial_id="t0", epochs_done=n)])
    assert time.perf_counter() - start < 0.5  # nothing waited for the store
    assert load_epochs(tmp_path, "s").empty
    slow.gate.set()
    writer.drain()
    assert slow.flushes == 2  # the first put, then the twenty that queued up meanwhile
    assert load_epochs(tmp_path, "s")["epoch"].tolist() == list(range(1, 21))
    assert load_trials(tmp_path, "s")["epochs_done"].tolist() == [20]  # the newest row per key
    writer.close()


def test_a_failed_write_is_raised_at_the_next_call_and_stops_the_writer(tmp_path):
    calls = []

    def broken():
        calls.append(1)
        raise OSError("disk full")

    writer = Writer(broken, "s")
    writer.put(epochs=[epoch()])
    with pytest.raises(OSError, match="disk full"):
        writer.drain()
    with pytest.raises(OSError, match="disk full"):  # every later call, in the caller's thread
        writer.put(epochs=[epoch("t2")])
    assert len(calls) == 1


def test_tunes_snapshot_waits_for_the_rows_queued_before_it(tmp_path):
    recorder = SweepRecorder(demo(name="s", gpus_per_trial=0.0), str(tmp_path))
    slow = SlowStore(tmp_path)
    recorder._writer = Writer(lambda: slow, "s")
    recorder._writer.put(epochs=[epoch()])
    threading.Timer(0.3, slow.gate.set).start()
    start = time.perf_counter()
    assert recorder.get_state() is None  # no state of its own: Tune writes no file for it
    assert time.perf_counter() - start >= 0.25
    assert len(load_epochs(tmp_path, "s")) == 1  # written before Tune's snapshot goes out


def test_a_driver_that_lost_its_lease_writes_nothing_more(tmp_path, monkeypatch):
    with sweep_lock(str(tmp_path / "s"), "s") as lease:
        store = open_store(str(tmp_path), "s")
        store.write(trials=[trial()])
        assert len(parts(tmp_path)) == 1
        lease._lose("taken over by another driver")
        writer = Writer(lambda: store, "s")
        writer.put(trials=[trial(status="finished")], epochs=[epoch()])
        with pytest.raises(LeaseLost, match="lost the lease on sweep 's'"):
            writer.drain()
        with pytest.raises(LeaseLost):
            store.compact()
    assert len(parts(tmp_path)) == 1 and parts(tmp_path, table="epochs") == []
    assert load_trials(tmp_path, "s")["status"].tolist() == ["running"]

