"""What a sweep will cost, said before its first trial: exact FLOPs per trial (trainer.compute,
for the uniform baseline every sweep trains first; sampled shapes differ with their MACs) and,
where the trials' throughput is known, hours per trial and for the sweep:

- GPU trials: at the data-sheet bf16 peak of the fastest GPU the cluster has or may launch
  (Ray's accelerator type of a live node, or the instance type of a node type): a lower bound,
  real training reaching a fraction of it. An unknown GPU model leaves the hours unknown.
- CPU trials: measured, in seconds, by a Ray task with a trial's CPUs timing a training step of
  the baseline where trials run (trainer.bench.training_throughput); skipped when even
  CPU_FLOOR per CPU would finish the sweep within a day.

A CPU sweep estimated above a day is refused without ``--yes`` (exit 2, nothing written).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from space_defs import WRNConfig
from space_defs.budget import format_sci
from space_defs.cli import UsageError
from trainer.compute import TrialFlops, peak_bf16_flops, trial_flops

from .cluster.place import Place
from .spec import SweepSpec
from .sweep.confirm import most_confirmation_runs

DAY_H = 24.0
CPU_FLOOR = 1e9  # FLOP/s per CPU no current CPU falls below on convolutions (10-100x slower than they run)
CONFIRM_FLAG = "--yes"


@dataclass(frozen=True)
class SweepCost:
    """A sweep's compute: FLOPs exact, time from a known or measured throughput."""

    arch: WRNConfig  # the trial priced: the uniform baseline
    flops: TrialFlops
    trials: int
    at_once: int  # trials running at once
    gpus_per_trial: float
    rate: float | None  # FLOP/s one trial gets; None: unknown
    rate_source: str  # how the rate is known, for the user
    bound: str = ""  # "at least" (a peak), "at most" (a floor), "" (measured)
    confirm_runs: int = 0  # of ``trials``: --confirm's runs, at most (search.sweep.confirm)

    @property
    def hours_per_trial(self) -> float | None:
        return None if self.rate is None else self.flops.total / self.rate / 3600

    @property
    def sweep_hours(self) -> float | None:
        """Wall-clock hours of the whole sweep, ``at_once`` trials at a time."""
        h = self.hours_per_trial
        return None if h is None else h * math.ceil(self.trials / self.at_once)

    @property
    def gpu_hours(self) -> float | None:
        h = self.hours_per_trial
        return None if h is None or not self.gpus_per_trial else h * self.trials * self.gpus_per_trial

    def _confirmed(self) -> str:
        return (f" ({self.trials - self.confirm_runs} searched, at most {self.confirm_runs} "
                "confirmation runs)") if self.confirm_runs else ""

    def describe(self) -> str:
        f = self.flops
        lines = [f"cost: {format_sci(f.total)} FLOPs per trial trained to the end ({self.arch.name}, the "
                 f"uniform baseline: {f.epochs} epochs x ({f.train_images:,} training images x "
                 f"{format_sci(f.train_per_epoch / f.train_images)} FLOPs + {format_sci(f.validation_per_epoch)} "
                 f"validation)); {format_sci(self.trials * f.total)} for {self.trials} trials{self._confirmed()}"]
        if self.rate is None:
            lines.append(f"time: unknown ({self.rate_source})")
        else:
            bound = f"{self.bound} " if self.bound else ""
            line = (f"time: {bound}{_duration(self.hours_per_trial)} per trial, {bound}"
                    f"{_duration(self.sweep_hours)} for the sweep ({self.at_once} at a time), at "
                    f"{format_sci(self.rate)} FLOP/s per trial ({self.rate_source})")
            if self.gpu_hours is not None:
                line += f"; {bound}{self.gpu_hours:.3g} GPU-hours"
            lines.append(line)
        return "\n".join(lines)


def estimate(spec: SweepSpec, place: Place, *, at_once: int) -> SweepCost:
    """The sweep's cost on ``place`` (measuring CPU throughput there when it matters); its GPUs
    per trial resolved by the driver."""
    gpus_per_trial = spec.gpus_per_trial
    if gpus_per_trial is None:
        raise ValueError("GPUs per trial are resolved before the cost (search.cluster.place.gpus_per_trial)")
    arch = spec.uniform_baseline()
    confirm_runs = most_confirmation_runs(spec)
    cost = SweepCost(arch, trial_flops(arch, spec.recipe, spec.dataset), spec.trials + confirm_runs,
                     at_once, gpus_per_trial, None, "", confirm_runs=confirm_runs)
    if gpus_per_trial > 0:
        peaks = {m: peak_bf16_flops(m) for s in place.shapes if s.gpus and (m := s.gpu_model)}
        known = {m: p for m, p in peaks.items() if p}
        if not known:
            return _with(cost, None, "the GPU model is not known here")
        model = max(known, key=known.get)
        return _with(cost, known[model] * gpus_per_trial, f"the {model}'s bf16 peak; real "
                     "training reaches a fraction of it", bound="at least")
    floor = CPU_FLOOR * spec.cpus_per_trial
    if _with(cost, floor, "").sweep_hours <= DAY_H:
        return _with(cost, floor, f"{CPU_FLOOR / 1e9:g} GFLOP/s per CPU, a floor under what CPUs "
                     "do; not measured", bound="at most")
    rate = measure(arch, cpus=spec.cpus_per_trial)
    return _with(cost, rate, f"measured here: a training step of {arch.name} on "
                 f"{spec.cpus_per_trial:g} CPU{'s' * (spec.cpus_per_trial != 1)}")


def check(cost: SweepCost, place: Place, *, yes: bool) -> None:
    """UsageError for a sweep of CPU trials estimated above a day, unless ``yes``."""
    hours = cost.sweep_hours
    if yes or cost.gpus_per_trial > 0 or hours is None or hours <= DAY_H or cost.bound == "at most":
        return
    where = "this machine has no GPU" if place.embedded else "this Ray cluster has no GPU"
    raise UsageError(
        f"this sweep would take about {_duration(hours)} ({cost.trials} trials{cost._confirmed()} x "
        f"{format_sci(cost.flops.total)} FLOPs at {format_sci(cost.rate)} FLOP/s each, {cost.rate_source}, "
        f"{cost.at_once} at a time) and {where}; add {CONFIRM_FLAG} to run it anyway, try --demo "
        "for a small real sweep, or run it on a GPU cluster (README: On a GPU cluster)")


def measure(arch: WRNConfig, *, cpus: float) -> float:
    """FLOP/s of one CPU trial, measured by a Ray task with a trial's CPUs where trials run."""
    import ray

    @ray.remote(num_cpus=cpus, num_gpus=0)
    def throughput(arch_dict: dict, threads: int) -> float:
        from trainer.bench import training_throughput

        return training_throughput(WRNConfig.from_dict(arch_dict), threads=threads)

    return ray.get(throughput.remote(arch.to_dict(), max(1, int(cpus))))


def _with(cost: SweepCost, rate: float | None, source: str, bound: str = "") -> SweepCost:
    return dataclasses.replace(cost, rate=rate, rate_source=source, bound=bound)


def _duration(hours: float) -> str:
    if hours < 1 / 60:
        return f"{hours * 3600:.2g} s"
    if hours < 1:
        return f"{hours * 60:.2g} min"
    if hours < 2 * DAY_H:
        return f"{hours:.3g} h"
    if hours < 2 * 365 * DAY_H:
        return f"{hours / DAY_H:.3g} days"
    return f"{hours / DAY_H / 365:.3g} years"
