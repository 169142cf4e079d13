"""Checkpoint files: atomic writes, loads that need no pickle trust, models rebuilt from them.

A run's directory holds ``checkpoint.pt`` (everything needed to resume, rewritten each epoch)
and ``best.pt`` (the weights of the selected epoch, ``Recipe.selected_by``: the best validation
robust accuracy, or clean accuracy for method ``standard``). Both hold only tensors and plain
Python values, so ``torch.load(weights_only=True)`` reads them, and both carry ``arch``
(WRNConfig.to_dict()), ``dataset`` and ``recipe`` (its eps and step size resolved), so a model
can be rebuilt from either and evaluated at the budget it was trained at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_path
from .datasets import DatasetSpec, dataset_spec

CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Readers (and a crash mid-write) see the old file or the new one, never half of one."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (its best.pt, else its checkpoint.pt)."""
    path = Path(path)
    if path.is_dir():
        for name in (BEST_FILE, CHECKPOINT_FILE):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path} holds neither {BEST_FILE} nor {CHECKPOINT_FILE}")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return path


def eval_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights to evaluate: the EMA's where the run kept one."""
    return state.get("ema") or state["model"]


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, DatasetSpec]:
    return model_from(load(resolve(path)), device)


def model_from(state: dict[str, Any], device: torch.device | str = "cpu") -> tuple[nn.Module, DatasetSpec]:
    """The model a loaded checkpoint describes, with its evaluation weights, and its dataset."""
    from space_defs.arch import WRNConfig

    from .models import build_model

    spec = dataset_spec(state["dataset"])
    model = build_model(WRNConfig.from_dict(state["arch"]), mean=spec.mean, std=spec.std)
    model.load_state_dict(eval_weights(state))
    return model.to(device).eval(), spec
