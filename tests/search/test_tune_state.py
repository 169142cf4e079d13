"""Tune's torn snapshots are found and set aside whole before a restore."""

import pickle

from search.sweepdir import Segment, SweepDir
from search.tune_state import set_aside_unreadable_state


def test_a_torn_tune_snapshot_is_set_aside_whole(tmp_path):
    tune_dir = tmp_path / "s" / "tune-1"
    tune_dir.mkdir(parents=True)
    for stamp in ("2026-01-01_00-00-00", "2026-01-01_00-05-00"):
        (tune_dir / f"experiment_state-{stamp}.json").write_text('{"trials": []}')
        (tune_dir / f"search_gen_state-{stamp}.json").write_bytes(pickle.dumps({}))  # as Tune does
        (tune_dir / f"searcher-state-{stamp}.pkl").write_bytes(pickle.dumps({"trials": [1, 2]}))
    newest = tune_dir / "searcher-state-2026-01-01_00-05-00.pkl"
    newest.write_bytes(newest.read_bytes()[:-5])  # the disk filled while Tune copied it
    said = []
    set_aside_unreadable_state(SweepDir(str(tmp_path), "s"), Segment("tune-1", 2), say=said.append)
    names = sorted(p.name for p in tune_dir.iterdir())
    assert [n for n in names if "00-05-00" in n] == [
        "experiment_state-2026-01-01_00-05-00.json.unreadable",
        "search_gen_state-2026-01-01_00-05-00.json.unreadable",
        "searcher-state-2026-01-01_00-05-00.pkl.unreadable"]
    assert not any(n.endswith(".unreadable") for n in names if "00-00-00" in n)
    assert said == ["tune-1: Tune's snapshot 2026-01-01_00-05-00 is torn (searcher-state-2026-01-01_00-05-00.pkl; "
                    "kept as .unreadable); resuming from the one before it"]
    set_aside_unreadable_state(SweepDir(str(tmp_path), "s"), Segment("tune-1", 2), say=said.append)
    assert len(said) == 1  # the intact snapshot stays
