"""The confirmation runs a sweep still needs (``--confirm K --confirm-seeds N``): the search's
top K configs by their selected validation score, and the uniform baseline, each trained on
the spec's seeds. The search's own run of a config is its first seed; a (config, seed) the
database holds as trained, whatever its outcome, is not trained again, so a resumed or extended
sweep trains only what is new. (Its answer: search.db.seeds.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from space_defs import WRNConfig
from trainer.status import NOT_COUNTED, Status

from ..db.ranking import arch_label, full_fidelity, most_robust, roles
from ..db.schema import CONFIRM, SEARCH
from ..spec import SweepSpec

if TYPE_CHECKING:
    from ..trial.trainable import TrialRun


def confirmation_runs(spec: SweepSpec, trials: pd.DataFrame) -> list[TrialRun]:
    """What is left to train, finalists in rank order then the uniform baseline, by seed."""
    from ..trial.trainable import TrialRun  # imports Ray

    if not spec.confirm or trials.empty:
        return []
    trials = trials.assign(arch=arch_label(trials), role=roles(trials))
    search = trials[trials["role"] == SEARCH]
    finalists = most_robust(full_fidelity(search)).drop_duplicates("arch").head(spec.confirm)
    configs = [WRNConfig.from_dict(row) for row in finalists.to_dict("records")]
    if (uniform := spec.uniform_baseline()).label not in {c.label for c in configs}:
        configs.append(uniform)
    # ended and counted; a search trial ASHA stopped did not train its seed to the end
    trained = ~trials["status"].isin({Status.RUNNING, *NOT_COUNTED}) & ~(
        (trials["role"] == SEARCH) & (trials["status"] == Status.STOPPED_EARLY))
    done = set(zip(trials.loc[trained, "arch"], trials.loc[trained, "seed"].astype(int)))
    return [TrialRun(c, seed, CONFIRM) for c in configs for seed in spec.seeds
            if (c.label, seed) not in done]


def most_confirmation_runs(spec: SweepSpec) -> int:
    """How many runs confirmation will train, at most, said before the first trial: K finalists
    on the other seeds, and the uniform baseline on them too, or on all seeds where ASHA may
    stop its search run."""
    if not spec.confirm:
        return 0
    others = spec.confirm_seeds - 1
    return spec.confirm * others + (spec.confirm_seeds if spec.scheduler != "none" else others)


def describe(runs: list[TrialRun]) -> str:
    """'3 confirmation runs: d2-2-2 c9-19-37 on seeds 1, 2; ...'."""
    by_arch: dict[str, list[int]] = {}
    for run in runs:
        by_arch.setdefault(run.arch.label, []).append(run.seed)
    return f"{len(runs)} confirmation runs: " + "; ".join(
        f"{arch} on seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}"
        for arch, seeds in by_arch.items())
