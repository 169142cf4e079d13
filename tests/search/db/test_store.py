from contextlib import nullcontext
import datetime as dt
import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from search.db.errors import StoreError, UsageError
from search.db.schema import EPOCHS, METADATA_KEY, SCHEMA_VERSION, TRIALS, EpochRow, EvalRow, TrialRow
from search.db.store import TrialStore, list_sweeps, load_epochs, load_evals, load_trials

T0 = dt.datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone.utc)


def trial(sweep="s", trial_id="t1", **kw) -> TrialRow:
    fields = dict(
        sweep=sweep, trial_id=trial_id, status="running", space="wrn3", depth1=5, depth2=5, depth3=5,
        channel1=320, channel2=640, channel3=512, stem_channels=16, in_channels=3, num_classes=10,
        input_size=32, params=36_000_000, macs=5_000_000_000, budget=36_500_000, dataset="cifar10",
        method="pgd_at", epochs_planned=10, eps=8 / 255, seed=0, recipe_json='{"lr": 0.1}',
        started_at=T0, updated_at=T0,
    )
    return TrialRow(**{**fields, **kw})


def epoch(trial_id="t1", n=1, acc=0.1, sweep="s") -> EpochRow:
    return EpochRow(sweep=sweep, trial_id=trial_id, epoch=n, val_robust_acc=acc, recorded_at=T0)


def parts(root, sweep="s", table="trials") -> list[Path]:
    return sorted(p for p in (Path(root) / sweep / "db" / table).iterdir() if not p.name.startswith("."))


def test_schema_round_trip(tmp_path):
    full = trial(status="finished", val_size=1000, epochs_done=10, best_val_robust_acc=0.5,
                 best_val_robust_epoch=9, best_val_clean_acc=0.8, last_val_robust_acc=0.49,
                 last_val_clean_acc=0.81, last_epoch=10, train_seconds=1.5, eval_seconds=0.5,
                 gpu_hours=0.01, device_name="H100", code_version="v1-3-gabc",
                 library_versions=json.dumps({"torch": "2.5"}), error=None)
    sparse = trial(trial_id="t2")
    ev = EvalRow(sweep="s", trial_id="t1", attack="autoattack", split="test", accuracy=0.48,
                 n_examples=10_000, seconds=12.0, recorded_at=T0)
    with TrialStore(tmp_path, "s") as store:
        store.write(trials=[full, sparse], epochs=[epoch()], evals=[ev])

    [path] = parts(tmp_path)
    assert [TrialRow(**row) for row in pq.read_table(path).to_pylist()] == [full, sparse]
    df = load_trials(tmp_path)
    assert df["best_val_robust_acc"].tolist()[0] == 0.5 and df["started_at"].iloc[0] == T0
    assert str(df["started_at"].dtype) == "datetime64[us, UTC]"
    assert EvalRow(**load_evals(tmp_path).iloc[0].to_dict()) == ev
    assert load_epochs(tmp_path)["val_robust_acc"].tolist() == [0.1]

    file = pq.ParquetFile(path)
    assert json.loads(file.schema_arrow.metadata[METADATA_KEY]) == {"schema_version": SCHEMA_VERSION,
                                                                    "table": "trials"}
    assert file.schema_arrow.remove_metadata().equals(TRIALS.schema.remove_metadata(), check_metadata=True)
    assert file.schema_arrow.field("gpu_hours").metadata[b"unit"] == b"GPU-hours"


def test_rows_read_back_through_pandas_rebuild_exactly(tmp_path):
    # one trial with a best epoch, one without: pandas widens the int column to float and
    # turns the nulls into NaN; from_record must give back the rows as written
    rows = [trial(trial_id="t1", best_val_robust_epoch=2, best_val_robust_acc=0.4),
            trial(trial_id="t2", status="failed", error="boom")]
    store = TrialStore(tmp_path, "s")
    store.write(trials=rows)
    store.close()
    loaded = load_trials(tmp_path, "s").sort_values("trial_id").to_dict("records")
    assert isinstance(loaded[0]["best_val_robust_epoch"], float)  # what pandas does
    assert [TrialRow.from_record(r) for r in loaded] == rows


def test_rows_are_checked_when_built():
    with pytest.raises(ValueError, match="status"):
        trial(status="done")
    with pytest.raises(ValueError, match="fraction"):
        trial(best_val_robust_acc=52.3)
    with pytest.raises(ValueError, match="timezone"):
        trial(started_at=dt.datetime(2025, 1, 1))
    with pytest.raises(TypeError, match="depth1"):
        trial(depth1="5")
    with pytest.raises(ValueError, match="required"):
        trial(dataset=None)


def test_resumed_sweep_neither_loses_nor_duplicates_rows(tmp_path):
    first = TrialStore(tmp_path, "s")
    first.write(trials=[trial(epochs_done=5)], epochs=[epoch(n=e, acc=e / 100) for e in range(1, 6)])
    first.write(trials=[trial("s", "t2")])
    # the driver dies here: no close(), and a write it had in flight left a temp file behind
    (tmp_path / "s" / "db" / "epochs" / ".00000000000000000001-x.parquet.tmp").write_bytes(b"PAR1 half")
    del first

    resumed = TrialStore(tmp_path, "s")  # Tune restores from the epoch-3 checkpoint and replays
    resumed.write(trials=[trial(epochs_done=8)], epochs=[epoch(n=e, acc=e / 10) for e in range(4, 9)])
    trials, epochs = load_trials(tmp_path), load_epochs(tmp_path)
    assert not trials.duplicated(list(TRIALS.key)).any() and not epochs.duplicated(list(EPOCHS.key)).any()
    assert trials.set_index("trial_id")["epochs_done"].to_dict() == {"t1": 8, "t2": 0}
    assert epochs.sort_values("epoch")["val_robust_acc"].tolist() == [0.01, 0.02, 0.03, 0.4, 0.5, 0.6, 0.7, 0.8]

    resumed.close()  # compaction: one part per table, itself free of duplicates
    for table, key in (("trials", TRIALS.key), ("epochs", EPOCHS.key)):
        [only] = parts(tmp_path, table=table)
        assert not pq.read_table(only).to_pandas().duplicated(list(key)).any()
    assert load_epochs(tmp_path).sort_values("epoch")["val_robust_acc"].tolist()[3:] == [0.4, 0.5, 0.6, 0.7, 0.8]


def test_compaction_that_died_before_deleting_its_inputs(tmp_path):
    store = TrialStore(tmp_path, "s", fanout=1000)
    for i in range(5):
        store.write(trials=[trial(epochs_done=i)], epochs=[epoch(n=i + 1)])
    inputs = tmp_path / "inputs"
    shutil.copytree(tmp_path / "s" / "db" / "trials", inputs)
    store.compact()
    for p in inputs.iterdir():  # the merged part and all its inputs, as a reader may see them
        shutil.copy(p, tmp_path / "s" / "db" / "trials")
    assert len(parts(tmp_path)) == 6
    assert load_trials(tmp_path)["epochs_done"].tolist() == [4]
    store.write(trials=[trial(epochs_done=9)])
    assert load_trials(tmp_path)["epochs_done"].tolist() == [9]
    assert len(parts(tmp_path)) == 2  # the stale inputs were removed by the next write


def test_parts_are_merged_fanout_at_a_time(tmp_path):
    store = TrialStore(tmp_path, "s", fanout=4)
    for i in range(40):
        store.write(trials=[trial(trial_id=f"t{i % 7}", epochs_done=i)])
    assert len(parts(tmp_path)) < 12
    got = load_trials(tmp_path).set_index("trial_id")["epochs_done"].to_dict()
    assert got == {f"t{k}": max(i for i in range(40) if i % 7 == k) for k in range(7)}


def test_buffered_writes_reach_disk_on_flush(tmp_path):
    store = TrialStore(tmp_path, "s", flush_interval_s=3600)
    store.write(trials=[trial()], epochs=[epoch(n=1), epoch(n=1, acc=0.2)])
    assert load_trials(tmp_path).empty
    store.flush()
    assert load_epochs(tmp_path)["val_robust_acc"].tolist() == [0.2]


@pytest.mark.parametrize("covers_good_part", [False, True])
@pytest.mark.parametrize("damage", ["truncated", "foreign_parquet", "foreign_name", "newer_version"])
def test_bad_file_is_reported_by_name_never_read_nor_overwritten(tmp_path, damage, covers_good_part):
    store = TrialStore(tmp_path, "s")
    store.write(trials=[trial()])
    [good] = parts(tmp_path)
    hi = int(good.name[:20])
    lo = hi - 1 if covers_good_part else hi + 1  # a merged part holding the good one's rows, or a newer one
    bad = good.with_name(f"{hi + 1:020d}-{lo:020d}-L{int(covers_good_part)}-0123456789ab.parquet")
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif damage == "foreign_parquet":
        pq.write_table(pa.table({"x": [1]}), bad)
    elif damage == "foreign_name":
        bad = good.with_name("notes.parquet")
        bad.write_bytes(good.read_bytes())
    else:
        meta = {METADATA_KEY: json.dumps({"schema_version": SCHEMA_VERSION + 1, "table": "trials"}).encode()}
        pq.write_table(pq.read_table(good).replace_schema_metadata(meta), bad)
    before = bad.read_bytes()

    with pytest.raises(StoreError, match=str(bad)):
        load_trials(tmp_path)
    # the writer leaves names it did not write alone; anything that looks like its own part is checked
    with pytest.raises(StoreError, match=str(bad)) if damage != "foreign_name" else nullcontext():
        store = TrialStore(tmp_path, "s")
        store.write(trials=[trial(trial_id="t2")])
        store.compact()
    assert bad.read_bytes() == before
    assert good.exists() or damage == "foreign_name"  # compacted away only when everything was readable


def test_part_from_the_future_is_refused(tmp_path):
    TrialStore(tmp_path, "s").write(trials=[trial()])
    [good] = parts(tmp_path)
    bad = good.with_name(f"{10**20 - 1}-{10**20 - 1}-L0-0123456789ab.parquet")
    shutil.copy(good, bad)
    with pytest.raises(StoreError, match=str(bad)):
        TrialStore(tmp_path, "s")


def test_file_of_an_older_schema_reads_with_new_columns_null(tmp_path):
    TrialStore(tmp_path, "s").write(trials=[trial(error="boom")])
    [path] = parts(tmp_path)
    old = pq.read_table(path)
    pq.write_table(old.drop_columns(["error", "val_size"]).replace_schema_metadata(old.schema.metadata), path)
    row = load_trials(tmp_path).iloc[0]
    assert pd.isna(row["error"]) and pd.isna(row["val_size"])


def test_sweeps_share_a_root_and_other_files_are_ignored(tmp_path):
    for sweep in ("b", "a"):
        TrialStore(tmp_path, sweep).write(trials=[trial(sweep, "t1"), trial(sweep, "t2", budget=5)])
    (tmp_path / "a" / "tune_experiment").mkdir()  # what Ray Tune and Optuna keep beside db/
    (tmp_path / "a" / "optuna.journal").write_text("{}")
    (tmp_path / "not_a_sweep").mkdir()
    assert list_sweeps(tmp_path) == ["a", "b"]
    assert len(load_trials(tmp_path)) == 4
    assert load_trials(tmp_path, "b", budget=5)["trial_id"].tolist() == ["t2"]
    assert len(load_trials(tmp_path, ["a", "b"], trial_id=["t1", "t2"], dataset="cifar10")) == 4
    with pytest.raises(UsageError, match="unknown sweep 'c'"):
        load_trials(tmp_path, "c")
    with pytest.raises(UsageError, match="unknown column 'colour'"):
        load_trials(tmp_path, colour="red")
    for name in ("", "..", "a/b"):
        with pytest.raises(UsageError, match="sweep name"):
            TrialStore(tmp_path, name)
    with pytest.raises(ValueError, match="sweep 'b'"):
        TrialStore(tmp_path, "a").write(trials=[trial("b")])


def test_object_store_path(tmp_path):
    """A filesystem other than local disk takes the one-PUT path (as s3:// does)."""
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    with TrialStore("bucket/runs", "s", filesystem=fs, fanout=2) as store:
        for i in range(5):
            store.write(trials=[trial(epochs_done=i)])
    assert load_trials("bucket/runs", filesystem=fs)["epochs_done"].tolist() == [4]
    assert list_sweeps("bucket/runs", filesystem=fs) == ["s"]
    assert load_trials(f"file://{tmp_path}/bucket/runs")["epochs_done"].tolist() == [4]



def test_a_part_merged_away_while_a_reader_opens_it_is_listed_again(tmp_path):
    """On an object store opening a part and reading it are requests of their own: a compaction
    can delete the part between them, and the read fails like a bad file (moto: "not a readable
    Parquet file (RESOURCE_NOT_FOUND)"). A part that is gone was merged: the reader lists again."""
    from fsspec.implementations.local import LocalFileSystem

    store = TrialStore(tmp_path, "s", fanout=1000)
    for i in range(5):
        store.write(trials=[trial(epochs_done=i)])

    class MergedWhileRead(LocalFileSystem):
        armed = True

        def _open(self, path, mode="rb", **kwargs):
            if self.armed and "/db/trials/" in str(path) and "r" in mode:
                MergedWhileRead.armed = False
                store.compact()  # merges every part, deleting the one being opened
                raise OSError("When reading information: AWS Error RESOURCE_NOT_FOUND")
            return super()._open(path, mode, **kwargs)

    fs = pafs.PyFileSystem(pafs.FSSpecHandler(MergedWhileRead(skip_instance_cache=True)))
    assert load_trials(str(tmp_path), filesystem=fs)["epochs_done"].tolist() == [4]
    assert not MergedWhileRead.armed
