"""The Ray Tune trainable: a thin adapter that runs ``trainer.fit`` for one sampled config."""

from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import tune

from space_defs import WRNConfig, macs, param_count
from trainer.status import EnvironmentProblem, Status

if TYPE_CHECKING:
    from trainer import EpochReport

from ..db.schema import SEARCH
from ..spec import SweepSpec

TRIAL_STATUS = "trial_status"  # Tune's own "status" is taken
ERROR = "error"  # a trial's failure that retrying cannot fix, reported as its last result
NOTE = "note"  # something the trainer wants the user to know (e.g. a skipped checkpoint)
DEVICE = "device"  # where the trial really ran: torch's GPU name or "cpu"
GPUS = "gpus"  # GPUs Ray granted it (GPU-hours = GPUs x hours)
SEED = "seed"  # in a confirmation run's config: the training seed (else the recipe's)
ROLE = "role"  # in a confirmation run's config: CONFIRM


@dataclass(frozen=True)
class TrialRun:
    """What a Tune trial's config says to train: an architecture, on a seed, in a role."""

    arch: WRNConfig
    seed: int
    role: str = SEARCH

    @classmethod
    def of(cls, config: dict[str, Any], spec: SweepSpec) -> TrialRun:
        return cls(WRNConfig.from_dict(config), int(config.get(SEED, spec.recipe.seed)),
                   config.get(ROLE, SEARCH))

    def config(self) -> dict[str, Any]:
        """The Tune config of a confirmation run (a search trial's is the architecture alone)."""
        return {**self.arch.to_dict(), SEED: self.seed, ROLE: self.role}

    def recipe(self, spec: SweepSpec):
        return dataclasses.replace(spec.recipe, seed=self.seed)


def epoch_result(report: EpochReport, arch: WRNConfig) -> dict[str, Any]:
    """What a trial tells Tune after an epoch: the trainer's metrics, the epoch they reflect,
    the trainer's status and the config's cost (so cost can be an objective)."""
    metrics = {k: (0.0 if math.isnan(v) and k.startswith("val_") else v)
               for k, v in report.metrics().items()}
    return {**metrics, "epoch": report.epoch, TRIAL_STATUS: report.status, NOTE: report.note,
            "params": param_count(arch), "macs": macs(arch)}


def failure_result(error: BaseException, last: dict[str, Any] | None, arch: WRNConfig) -> dict[str, Any]:
    """The last result of a trial that failed for good: the searcher scores it as the worst
    robust accuracy (so TPE learns to avoid such configs) at the epoch it reached."""
    base = dict(last) if last else {"epoch": 0, "params": param_count(arch), "macs": macs(arch)}
    return {**base, "val_robust_acc": 0.0, "val_clean_acc": 0.0, TRIAL_STATUS: Status.FAILED,
            ERROR: f"{type(error).__name__}: {error}"[:500], NOTE: ""}


class Superseded(Exception):
    """The trial's driver no longer holds the sweep: the trial ends without writing more."""


def train_trial(config: dict[str, Any], *, spec: SweepSpec, data_dir: str,
                fence=None) -> None:
    """Train the architecture in ``config``; resumes from Tune's checkpoint after a failure.

    Errors that a retry cannot fix (out of memory at this size, an invalid config) end the trial
    as ``failed`` with its message. What is wrong with its node rather than its config (a GPU
    CUDA cannot use, a dataset neither on disk nor downloadable: EnvironmentProblem) is raised
    before training starts, and the driver stops the sweep without counting the trial (the
    recorder's ``environment_stop``). Any other error of its own is retried from the last
    checkpoint OWN_ERROR_RETRIES times (counted beside the trial, across nodes), then ends it
    as ``failed``; losing its node is Tune's to retry, many more times (search.trial.retry). With a
    ``fence`` (object storage), a trial whose driver lost the sweep stops before its next
    checkpoint: what it would write lands in a directory nobody reads (search.storage.s3), and
    the GPU is freed for the sweep's new driver. ``fence.current()`` asks the sweep's storage
    (search.storage.base.Storage.trial_fence)."""
    import torch

    from trainer import fit

    from .device import trial_device
    from .retry import OwnErrors

    run = TrialRun.of(config, spec)
    arch, recipe = run.arch, run.recipe(spec)
    torch.set_num_threads(max(1, int(spec.cpus_per_trial)))
    state_dir = Path(tempfile.mkdtemp(prefix="trial-state-"))
    restored = tune.get_checkpoint()
    if restored is not None:
        restored.to_directory(str(state_dir))
    last: dict[str, Any] | None = None

    device = trial_device(fake_gpus=spec.fake_gpus)  # EnvironmentProblem: the sweep stops
    note = device.note  # said once, with the first epoch of this attempt

    def still_ours() -> None:
        if fence is not None and not fence.current():
            raise Superseded

    def report(epoch: EpochReport) -> None:
        nonlocal last, note
        still_ours()
        last = {**epoch_result(epoch, arch), DEVICE: device.name, GPUS: device.gpus}
        last[NOTE] = "; ".join(n for n in (note, last[NOTE]) if n)
        note = ""
        tune.report(last, checkpoint=tune.Checkpoint.from_directory(epoch.checkpoint_dir))

    try:
        still_ours()
        fit(arch, recipe, spec.dataset, report=report, checkpoint_dir=state_dir, data_dir=data_dir,
            device=device.device)
    except EnvironmentProblem:
        raise  # not the config's fault, nor retried here: the driver stops the sweep
    except Superseded:
        return
    except (torch.OutOfMemoryError, ValueError) as e:
        tune.report(failure_result(e, last, arch))
    except Exception as e:  # noqa: BLE001 - the trial's own error: retried a few times
        if OwnErrors.of_this_trial().record(e):
            raise
        tune.report(failure_result(e, last, arch))
