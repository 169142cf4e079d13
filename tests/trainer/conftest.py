"""Shared tiny models and data for the trainer tests (digits: real 8x8 images, no download)."""

from __future__ import annotations

import pytest
import torch

from space_defs.arch import WRNConfig
from trainer import Recipe, dataset_spec, fit
from trainer.data import load_splits

TINY = WRNConfig(depths=(1, 1, 1), channels=(16, 32, 64), data=dataset_spec("digits").data)


@pytest.fixture(scope="session")
def digits():
    return load_splits("digits")


@pytest.fixture(scope="session")
def standard_fit(tmp_path_factory):
    """The tiny net trained without attacks (a few seconds), with its checkpoints."""
    return fit(TINY, Recipe(method="standard", epochs=15, val_size=200, seed=0), "digits",
               checkpoint_dir=tmp_path_factory.mktemp("standard"))


@pytest.fixture(scope="session")
def robust_fit():
    """The same net, same seed and epochs, trained with PGD-5 adversarial training (~10 s)."""
    return fit(TINY, Recipe(method="pgd_at", epochs=15, steps=5, val_size=200, seed=0), "digits")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
