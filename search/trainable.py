"""The Ray Tune trainable: a thin adapter that runs ``trainer.fit`` for one sampled config."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from space_defs import WRNConfig, macs, param_count
from trainer import EpochReport, fit

from .spec import SweepSpec

TRIAL_STATUS = "trial_status"  # Tune's own "status" is taken


def epoch_result(report: EpochReport, arch: WRNConfig) -> dict[str, Any]:
    """What a trial tells Tune after an epoch: the trainer's metrics, the epoch they reflect,
    the trainer's status and the config's cost (so cost can be an objective)."""
    metrics = {k: (0.0 if math.isnan(v) and k.startswith("val_") else v)
               for k, v in report.metrics().items()}
    return {**metrics, "epoch": report.epoch, TRIAL_STATUS: report.status,
            "params": param_count(arch), "macs": macs(arch)}


def train_trial(config: dict[str, Any], *, spec_json: str, data_dir: str) -> None:
    """Train the architecture in ``config``; resumes from Tune's checkpoint after a failure."""
    import torch

    spec = SweepSpec.from_json(spec_json)
    arch = WRNConfig.from_dict(config)
    torch.set_num_threads(max(1, int(spec.cpus_per_trial)))
    state_dir = Path(tempfile.mkdtemp(prefix="trial-state-"))
    restored = tune.get_checkpoint()
    if restored is not None:
        restored.to_directory(str(state_dir))

    def report(epoch: EpochReport) -> None:
        checkpoint = tune.Checkpoint.from_directory(epoch.checkpoint_dir)
        tune.report(epoch_result(epoch, arch), checkpoint=checkpoint)

    fit(arch, spec.recipe, spec.dataset, report=report, checkpoint_dir=state_dir, data_dir=data_dir)
