"""SweepSpec: the one description of a sweep, from which the space, recipe and Tune setup derive."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

from space_defs import SearchSpace, WRNConfig, baselines, format_count
from space_defs.cli import UsageError, option
from space_defs.options import SpaceOptions
from trainer.datasets import DATASETS, dataset_spec
from trainer.protocols import PROTOCOLS
from trainer.recipe import Recipe

from .db.objectives import DIRECTIONS, Objective, described, parse_objectives
from .tune.strategy import SAMPLERS, SCHEDULERS

OBJECTIVES = ("val_robust_acc", "val_clean_acc", "params", "macs")  # what every trial reports
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# Fields that may differ when the same sweep is run again; every other field fixes what the
# sweep's results mean, and changing it is refused.
RUN_FIELDS = ("trials", "max_concurrent", "gpus_per_trial", "cpus_per_trial", "fake_gpus",
              "final_eval", "final_attacks", "final_protocol", "confirm", "confirm_seeds")


FAKE_GPUS_HELP = (
    "allow GPUs that CUDA cannot use, such as Ray's fake ones (`ray start --num-gpus=N` or a "
    "fake_multinode cluster on a machine without a GPU; for tests): a trial granted one trains "
    "on the CPU and says so. Without it such a trial stops the sweep (exit 2)")


@dataclass(frozen=True, kw_only=True)
class SweepSpec(SpaceOptions):
    """A sweep: the space's options (SpaceOptions, shared with ``python -m space_defs``), the
    dataset, objectives, recipe and how the trials run."""

    name: str = option(help="sweep name; rerun a name to resume it (default: DATASET-BUDGET-METHOD)")
    budget: int = option(help="parameter budget, e.g. 36M, 1.5M, 500K")
    dataset: str = option("cifar10", help=" | ".join(DATASETS))
    objectives: tuple[str, ...] = option(
        ("val_robust_acc",),
        help=f"comma-separated, from {', '.join(OBJECTIVES)}: '-name' minimises, '+name' "
             "maximises, a bare name takes its natural direction ("
             + ", ".join(f"{o} {DIRECTIONS[o]}" for o in OBJECTIVES) + ")")
    sampler: str = option("", help=f"{' | '.join(SAMPLERS)}: what proposes the next config "
                                   "(default: grid for the grid space, else tpe)")
    scheduler: str = option("asha", help=f"{' | '.join(SCHEDULERS)}: early stopping of weak trials")
    grace_period: int = option(0, help="epochs before ASHA may stop a trial; 0 = a quarter of them")
    reduction_factor: int = option(4, help="ASHA lets on 1 in this many trials at each rung")
    seed: int = option(0, help="seed of the sampler (search.run's --seed also seeds training)")
    recipe: Recipe = field(default_factory=Recipe)
    trials: int = option(16, help="trials in the sweep; a larger number extends a finished sweep")
    max_concurrent: int | None = option(
        None, help="trials running at once; none: as many as the cluster can run at once (its "
                   "GPUs, up and those its autoscaler may add, over --gpus-per-trial; CPUs for "
                   "CPU trials), at most the trials left")
    gpus_per_trial: float | None = option(
        None, help="GPUs per trial; fractions pack small trials onto one GPU (none: 1 if the "
                   "cluster has or can add GPUs, else 0; the driver resolves it once)")
    cpus_per_trial: float = option(1.0, help="CPUs reserved per trial; also its torch threads")
    fake_gpus: bool = option(False, help=FAKE_GPUS_HELP)
    confirm: int = option(0, help="after the search, train the top K configs by validation score "
                                  "and the uniform baseline on --confirm-seeds seeds (0: off)")
    confirm_seeds: int = option(3, help="seeds each confirmed config is trained on, the search's "
                                        "own run among them (seeds --seed, --seed + 1, ...)")
    final_eval: int = option(0, help="evaluate the top K configs on the test split after the "
                                     "sweep (with --confirm: every seed of the confirmed ones too)")
    final_attacks: tuple[str, ...] = option(("clean", "pgd20", "cw", "autoattack"),
                                            help="the --final-eval cascade, in order")
    final_protocol: str = option("default", help=" | ".join(
        f"{p.name}: {p.about}" for p in PROTOCOLS.values()))

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(what)

        need(bool(_SAFE_NAME.fullmatch(self.name)) and ".." not in self.name,
             f"invalid sweep name {self.name!r}: use letters, digits, '.', '_' and '-' "
             "(at most 100, starting with a letter or digit)")
        # eps and step size resolved, so the saved spec says what was really used
        object.__setattr__(self, "recipe", self.recipe.for_dataset(dataset_spec(self.dataset)))
        super().__post_init__()
        for o in self.parsed_objectives:
            need(o.name in OBJECTIVES, f"unknown objective {o.name!r}; choose from {', '.join(OBJECTIVES)}")
        # one spelling per meaning, so a saved "macs" and a rerun's "-macs" are the same sweep
        object.__setattr__(self, "objectives", tuple(o.spelled for o in self.parsed_objectives))
        if not self.sampler:
            object.__setattr__(self, "sampler", "grid" if self.space == "grid" else "tpe")
        need(self.sampler in SAMPLERS,
             f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        need(self.sampler != "grid" or self.space == "grid",
             "the grid sampler needs the grid space: add --space grid")
        need(self.reduction_factor >= 2, f"reduction factor must be at least 2, got {self.reduction_factor}")
        need(self.scheduler in SCHEDULERS,
             f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
        need(self.scheduler == "none" or len(self.objectives) == 1,
             "ASHA stops trials on one metric: use --scheduler none with several objectives")
        need(0 <= self.grace_period <= self.recipe.epochs,
             f"grace period must be between 0 and the {self.recipe.epochs} epochs")
        need(self.trials >= 1, f"trials must be at least 1, got {self.trials}")
        need(self.max_concurrent is None or self.max_concurrent >= 1,
             f"max concurrent must be at least 1, got {self.max_concurrent}")
        need(self.cpus_per_trial >= 0.01,  # Ray rejects smaller fractional resource requests
             f"CPUs per trial must be at least 0.01, got {self.cpus_per_trial}")
        need(self.gpus_per_trial in (None, 0) or self.gpus_per_trial >= 0.01,
             f"GPUs per trial must be 0 or at least 0.01, got {self.gpus_per_trial}")
        try:
            from trainer.attack_names import parse_attack

            for attack in self.final_attacks:
                parse_attack(attack)
        except ValueError as e:
            raise ValueError(f"--final-attacks: {e}") from None
        need(self.final_protocol in PROTOCOLS, f"unknown --final-protocol {self.final_protocol!r}; "
             f"choose one of {', '.join(PROTOCOLS)}")
        need(0 <= self.confirm <= self.trials,
             f"--confirm K must be between 0 and the number of trials ({self.trials})")
        need(self.confirm_seeds >= 2, f"--confirm-seeds must be at least 2 (the search's run is "
             f"one of them), got {self.confirm_seeds}")
        need(0 <= self.final_eval <= self.trials,
             f"final eval K must be between 0 and the number of trials ({self.trials})")

    # -- what derives from it ---------------------------------------------------------------
    def search_space(self) -> SearchSpace:
        return self.space_for(dataset_spec(self.dataset).data)

    def uniform_baseline(self) -> WRNConfig:
        """The uniform WRN shape at the budget: the sweep's first reference, and what
        ``--confirm`` compares with."""
        return baselines(self.budget, space=self.search_space(), max_macs=self.max_macs,
                         tolerance=self.tolerance)[0]

    def check(self) -> None:
        """UsageError if the space cannot meet the budget (before any trial runs)."""
        try:
            self.search_space().check(self.budget, self.tolerance, self.max_macs)
        except ValueError as e:
            raise UsageError(str(e)) from None

    @property
    def parsed_objectives(self) -> tuple[Objective, ...]:
        return parse_objectives(self.objectives)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.parsed_objectives)

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(o.mode for o in self.parsed_objectives)

    @property
    def seeds(self) -> tuple[int, ...]:
        """The training seeds of a confirmed config: the search's own first, then the others."""
        return tuple(range(self.recipe.seed, self.recipe.seed + self.confirm_seeds))

    @property
    def grace_epochs(self) -> int:
        return self.grace_period or max(1, self.recipe.epochs // 4)

    def describe(self) -> str:
        return (f"sweep {self.name}: {self.trials} trials of {self.recipe.method} on "
                f"{self.dataset}, {self.recipe.epochs} epochs, budget {format_count(self.budget)} "
                f"({self.space} space)\n{described(self.parsed_objectives)}")

    # -- persistence and resume ---------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def __reduce__(self):
        # Crosses to trials and to Tune's snapshot in its saved form, so an unpickled spec is
        # one this code can read, whatever the pickling process's version of the class.
        return (SweepSpec.from_json, (self.to_json(),))

    @classmethod
    def from_json(cls, text: str) -> SweepSpec:
        data = json.loads(text)
        data["recipe"] = Recipe.from_dict(data["recipe"])
        data.update({k: tuple(v) for k, v in data.items() if isinstance(v, list)})  # JSON arrays
        return cls(**data)

    def changes_from(self, saved: SweepSpec) -> list[str]:
        """Human-readable differences from ``saved`` that a rerun may not make."""
        mine, theirs = _flat(self), _flat(saved)
        changed = [f"{k}: {theirs.get(k)!r} -> {mine.get(k)!r}" for k in sorted(mine)
                   if k not in RUN_FIELDS and mine.get(k) != theirs.get(k)]
        if self.trials < saved.trials:
            changed.append(f"trials: {saved.trials} -> {self.trials} (a sweep can only grow)")
        return changed


def _flat(spec: SweepSpec) -> dict[str, Any]:
    data = dataclasses.asdict(spec)
    recipe = data.pop("recipe")
    return {**data, **{f"recipe.{k}": v for k, v in recipe.items()}}


def demo(**overrides: Any) -> SweepSpec:
    """A small real experiment on the offline digits data, about 5 minutes on a 2-core CPU:
    5 networks of 60K parameters (the uniform and the reduced-last-stage WRN shapes first, then
    3 sampled), each PGD adversarially trained to its plateau: 80 epochs at lr 0.4, batch 128
    (720 SGD steps on 1,200 images; at 20 or 40 epochs the ranking still measured which net
    learns fastest), with no early stopping, so every trial is comparable with the uniform
    baseline; PGD-2 training and PGD-5 validation keep it within the time. The top 2 and the
    uniform baseline are then trained on a second seed (about a minute), and the top 2 and every
    seed of the confirmed configs evaluated on the test split with clean, PGD-20 and CW (add
    autoattack to --final-attacks for the full evaluation: several more minutes on 2 cores). ``overrides`` are SweepSpec fields,
    and Recipe fields under ``recipe``."""
    recipe = {**dict(method="pgd_at", epochs=80, batch_size=128, lr=0.4, steps=2, step_size=0.125,
                     val_attack_steps=5, val_size=200), **overrides.pop("recipe", {})}
    fields = dict(name="demo", budget=60_000, dataset="digits", trials=5, max_concurrent=2,
                  min_blocks=1, max_blocks=2, channel_multiple=4, scheduler="none", final_eval=2,
                  final_attacks=("clean", "pgd20", "cw"), confirm=2, confirm_seeds=2)
    fields.update(overrides)
    for k in {"final_eval", "confirm"} - set(overrides):  # a smaller demo keeps its share of them
        fields[k] = min(fields[k], fields["trials"])
    return SweepSpec(recipe=Recipe(**{"seed": fields.get("seed", 0), **recipe}), **fields)
