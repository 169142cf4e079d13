"""The trial database: one Parquet table each for trials, epochs and final evaluations per sweep,
and the questions asked of it (rankings, Pareto fronts). Needs pandas and pyarrow only::

    from search.db import load_sweep, full_fidelity, pareto_front, best
    df = full_fidelity(load_sweep("wrn-36m", storage="./runs"))
    front = pareto_front(df, ["val_robust_acc", "val_clean_acc", "-params"])
"""

from .errors import StoreError, UsageError
from .pareto import pareto_front
from .ranking import best, full_fidelity, most_robust, top
from .schema import EpochRow, EvalRow, TrialRow
from .store import TrialStore, list_sweeps, load_epochs, load_evals, load_sweep, load_trials

__all__ = ["load_sweep", "list_sweeps", "load_trials", "load_epochs", "load_evals", "TrialStore",
           "TrialRow", "EpochRow", "EvalRow", "pareto_front", "best", "most_robust",
           "full_fidelity", "top", "StoreError", "UsageError"]
