import numpy as np
import pandas as pd
import pytest

from search.db.errors import UsageError
from search.db.pareto import pareto_front, pareto_mask


def brute_force(values: np.ndarray) -> np.ndarray:
    """O(n^2) definition: a row is on the front unless another row is >= everywhere and > somewhere."""
    keep = np.ones(len(values), dtype=bool)
    for i, row in enumerate(values):
        if np.isnan(row).any():
            keep[i] = False
            continue
        others = values[~np.isnan(values).any(axis=1)]
        keep[i] = not ((others >= row).all(axis=1) & (others > row).any(axis=1)).any()
    return keep


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_front_equals_brute_force_with_ties_and_nans(k):
    rng = np.random.default_rng(k)
    for _ in range(150):
        n = int(rng.integers(0, 80))
        values = rng.integers(0, 5, (n, k)).astype(float)  # few levels: many exact ties
        values[rng.random((n, k)) < 0.05] = np.nan
        signs = rng.choice([1.0, -1.0], k)
        df = pd.DataFrame(values * signs, columns=[f"c{j}" for j in range(k)],
                          index=rng.permutation(n) + 100)
        objectives = [("" if s > 0 else "-") + f"c{j}" for j, s in enumerate(signs)]
        front = pareto_front(df, objectives)
        assert list(front.index) == list(df.index[brute_force(values)])


def test_continuous_random_data_and_exact_duplicates_are_all_kept():
    rng = np.random.default_rng(7)
    values = rng.random((1500, 3))
    values[1000:1010] = values[0]  # duplicates of one row
    assert (pareto_mask(values) == brute_force(values)).all()
    anti = np.c_[np.linspace(0, 1, 500), np.linspace(1, 0, 500)]  # every row on the front
    assert pareto_mask(anti).all()


def test_aliases_and_errors():
    df = pd.DataFrame({"best_val_robust_acc": [0.5, 0.4], "params": [10, 5], "dataset": ["a", "b"]})
    assert len(pareto_front(df, "val_robust_acc,-params")) == 2
    assert list(pareto_front(df, ["val_robust_acc"]).index) == [0]
    with pytest.raises(UsageError, match="unknown column 'nope'"):
        pareto_front(df, ["nope"])
    with pytest.raises(UsageError, match="not numeric"):
        pareto_front(df, ["dataset"])


def test_three_objectives_with_a_large_front_match_brute_force():
    rng = np.random.default_rng(3)
    plane = rng.random((2000, 2))
    on_plane = np.c_[plane, 2 - plane.sum(axis=1)]  # a + b + c = 2: every row on the front
    assert pareto_mask(on_plane).all()
    clean = rng.random(3000)
    trade_off = np.c_[1 - clean + 0.1 * rng.random(3000), clean, rng.integers(0, 20, 3000)]
    expected = brute_force(trade_off)
    assert 50 < expected.sum() < 3000
    assert (pareto_mask(trade_off) == expected).all()
