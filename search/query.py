"""``python -m search.query COMMAND``: the trial database's command line (search.db.cli), and the
names a notebook wants from it (search.db)::

    from search.query import load_sweep, full_fidelity, pareto_front, best
"""

from search.db import best, full_fidelity, load_sweep, most_robust, pareto_front, top
from search.db.cli import main

__all__ = ["load_sweep", "full_fidelity", "pareto_front", "best", "most_robust", "top", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
