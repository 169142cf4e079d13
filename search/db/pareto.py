"""Pareto fronts of trial tables: exact, vectorised, NaN- and tie-aware; O(n log n) for two
objectives, O(n log^2 n) for three, O(n x front size) for more."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .errors import UsageError
from .objectives import Objective, parse_objectives

# Names users type for the trials table's headline columns (the epochs table has the real ones).
ALIASES = {"val_robust_acc": "best_val_robust_acc", "val_clean_acc": "best_val_clean_acc"}


def numeric_column(df: pd.DataFrame, name: str) -> str:
    """The column ``name`` refers to (aliases resolved); a UsageError if it is absent or not numeric."""
    column = name if name in df.columns else ALIASES.get(name, name)
    if column not in df.columns:
        numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
        raise UsageError(f"unknown column {name!r}; numeric columns: {', '.join(numeric + list(ALIASES))}")
    if not pd.api.types.is_numeric_dtype(df[column]) or pd.api.types.is_bool_dtype(df[column]):
        raise UsageError(f"column {name!r} is not numeric ({df[column].dtype}); pick a numeric column")
    return column


def pareto_front(df: pd.DataFrame, objectives: str | Sequence[str | Objective]) -> pd.DataFrame:
    """Rows of ``df`` no other row dominates, each objective in its direction ('-col' minimises,
    '+col' maximises, a bare name as search.db.objectives.DIRECTIONS says). A row with NaN in
    an objective is never on the front; rows with identical objectives are all kept. Row order
    is kept."""
    objs = parse_objectives(objectives)
    cols = [df[numeric_column(df, o.name)].to_numpy(dtype=np.float64, na_value=np.nan) for o in objs]
    cols = [c if o.maximize else -c for c, o in zip(cols, objs)]
    valid = np.ones(len(df), dtype=bool)
    for c in cols:
        valid &= ~np.isnan(c)
    rows = np.flatnonzero(valid)
    mask = np.zeros(len(df), dtype=bool)
    mask[rows[_front([c[rows] for c in cols])]] = True
    return df[mask]


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of an (n, k) array, every column maximised, no NaN."""
    return _front([np.ascontiguousarray(values[:, j]) for j in range(values.shape[1])])


def _front(cols: list[np.ndarray]) -> np.ndarray:
    n = len(cols[0])
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    if len(cols) == 1:
        return cols[0] == cols[0].max()
    # The row with the largest normalised sum is on the front and, on real data, dominates most
    # rows: dropping those first leaves the exact algorithms a small remainder.
    score = _normalised_sum(cols)
    best = int(np.argmax(score))
    rest = np.flatnonzero(~_dominated_by(cols, [c[best] for c in cols]))
    sub = [c[rest] for c in cols]
    if len(cols) == 2:
        mask[rest[_front_2d(*sub)]] = True
    elif len(cols) == 3:
        mask[rest[_front_3d(*sub)]] = True
    else:
        mask[rest[_front_nd(sub, score[rest])]] = True
    return mask


def _normalised_sum(cols: list[np.ndarray]) -> np.ndarray:
    score = np.zeros(len(cols[0]))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for c in cols:
            lo, hi = c.min(), c.max()
            score += np.nan_to_num((c - lo) / (hi - lo), nan=0.0, posinf=1.0, neginf=0.0)
    return score


def _dominated_by(cols: list[np.ndarray], point: list[float]) -> np.ndarray:
    no_worse = cols[0] <= point[0]
    worse = cols[0] < point[0]
    for c, p in zip(cols[1:], point[1:]):
        no_worse &= c <= p
        worse |= c < p
    return no_worse & worse


def _front_2d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """O(n log n): sorted by a then b descending, a point is on the front iff it has the largest
    b of its a-group and a larger b than every point with a larger a."""
    order = np.lexsort((-b, -a))
    a_s, b_s = a[order], b[order]
    starts = np.flatnonzero(np.r_[True, a_s[1:] != a_s[:-1]])
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(a_s)]))
    best_before = np.r_[-np.inf, np.maximum.accumulate(b_s)[starts[1:] - 1]][group]
    on_front = (b_s == b_s[starts][group]) & ((group == 0) | (b_s > best_before))
    mask = np.zeros(len(a), dtype=bool)
    mask[order[on_front]] = True
    return mask


def _dense_rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x)
    ranks = np.empty(len(x), dtype=np.int64)
    ranks[order] = np.cumsum(np.r_[False, x[order][1:] != x[order][:-1]])
    return ranks


def _front_3d(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """O(n log^2 n), vectorised. With the distinct points sorted by (a, b, c) descending, a
    point is dominated iff an earlier one has b and c at least as large. Divide and conquer
    over positions answers that prefix query: at each level the left half of every block of
    2^(level+1) positions answers its right half's queries through a running max of c taken
    in order of descending b."""
    ra, rb, rc = _dense_rank(a), _dense_rank(b), _dense_rank(c)
    rab = _dense_rank(ra * (rb.max() + 1) + rb)  # ranks keep the combined keys inside int64
    order = np.argsort(-(rab * (rc.max() + 1) + rc), kind="stable")
    rab, rc = rab[order], rc[order]
    distinct = np.r_[True, (rab[1:] != rab[:-1]) | (rc[1:] != rc[:-1])]
    point = np.cumsum(distinct) - 1
    rb, rc = rb[order][distinct], rc[distinct]
    m, span = len(rb), int(rc.max()) + 2
    pos = np.argsort(-rb * m + np.arange(m))  # b descending, earlier position first
    b_order, c_rank = np.arange(m), rc[pos]
    dominated = np.zeros(m, dtype=bool)
    level = 0
    while (1 << level) < m:
        block = pos >> (level + 1)
        step = np.argsort((block << 32) | b_order, kind="stable")  # merges sorted runs
        pos, b_order, c_rank, block = pos[step], b_order[step], c_rank[step], block[step]
        right = ((pos >> level) & 1).astype(bool)
        offset = block * span  # keeps the running max inside each block
        best_left = np.maximum.accumulate(np.where(right, 0, c_rank + 1) + offset) - offset - 1
        dominated[pos[right]] |= best_left[right] >= c_rank[right]
        level += 1
    mask = np.zeros(len(a), dtype=bool)
    mask[order] = ~dominated[point]
    return mask


def _front_nd(cols: list[np.ndarray], score: np.ndarray) -> np.ndarray:
    """Four or more objectives: each surviving candidate, strongest (by score) first, removes
    the rows it dominates; O(n * front size) in the worst case."""
    idx = np.argsort(-score, kind="stable")
    cols = [c[idx] for c in cols]
    i = 0
    while i < len(idx):
        dominated = _dominated_by(cols, [c[i] for c in cols])
        if dominated.any():
            keep = ~dominated
            i = int(np.count_nonzero(keep[:i]))
            idx = idx[keep]
            cols = [c[keep] for c in cols]
        i += 1
    mask = np.zeros(len(score), dtype=bool)
    mask[idx] = True
    return mask
