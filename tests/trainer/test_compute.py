"""trainer.compute's FLOPs are exactly what torch's flop counter counts over fit()'s own
training epoch and validation, for every method; and the formula needs no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from space_defs import WRNConfig
from trainer.compute import PassFlops, peak_bf16_flops, training_flops_per_image, trial_flops
from trainer.data import Split, load_splits
from trainer.datasets import dataset_spec
from trainer.loop import Run
from trainer.recipe import METHODS, Recipe


class FlopCount(TorchDispatchMode):
    """torch's flop formulas (torch.utils.flop_counter) over every op run inside. (Its
    FlopCounterMode also tracks modules, which breaks on the attacks' autograd.grad.)"""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if (count := flop_registry.get(func._overloadpacket)) is not None:
            self.total += count(*args, **(kwargs or {}), out_val=out)
        return out


DIGITS = dataset_spec("digits")
ARCH = WRNConfig(depths=(1, 2, 1), channels=(8, 16, 12), data=DIGITS.data)  # shortcuts, strides


@pytest.mark.parametrize("method", METHODS)
def test_a_training_image_costs_what_torch_counts(method):
    recipe = Recipe(method=method, batch_size=10, steps=3).for_dataset(DIGITS)
    run = Run.start(ARCH, recipe, DIGITS, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    split = Split(torch.rand(20, 1, 8, 8, generator=g), torch.randint(10, (20,), generator=g))
    with FlopCount() as counted:
        run.train_epoch(split)
    assert counted.total == 20 * training_flops_per_image(ARCH, recipe)


def test_a_whole_epoch_of_fit_costs_what_torch_counts():
    """Training on digits' 1,200 training images in whole batches (every method's per-image
    count: the test above), then validation: clean on all 200 validation images, PGD-2 on the
    first 50."""
    recipe = Recipe(method="standard", epochs=3, batch_size=128, val_attack_steps=2,
                    val_size=50).for_dataset(DIGITS)
    splits = load_splits("digits")
    run = Run.start(ARCH, recipe, DIGITS, torch.device("cpu"))
    with FlopCount() as train:
        run.train_epoch(splits.train)
    with FlopCount() as validation:
        run.validate(splits.val)
    flops = trial_flops(ARCH, recipe, "digits")
    assert flops.train_images == 9 * 128 and len(splits.train) + len(splits.val) == DIGITS.train_size
    assert (flops.train_per_epoch, flops.validation_per_epoch) == (train.total, validation.total)
    assert flops.total == 3 * (train.total + validation.total)


def test_the_passes_follow_from_the_macs():
    p = PassFlops.of(ARCH)
    assert p.forward == p.input_backward and p.training_backward < 2 * p.forward
    standard = Recipe(method="standard").for_dataset(DIGITS)
    assert training_flops_per_image(ARCH, standard) == p.training_step
    pgd = Recipe(method="pgd_at", steps=10).for_dataset(DIGITS)
    assert training_flops_per_image(ARCH, pgd) - training_flops_per_image(
        ARCH, Recipe(method="pgd_at", steps=9).for_dataset(DIGITS)) == p.attack_step
    assert peak_bf16_flops("NVIDIA A10G") == 125e12 and peak_bf16_flops("NVIDIA L4") == 121e12
    assert peak_bf16_flops("Tesla V100") is None


def test_the_cost_is_computed_without_torch():
    code = ("import sys; from space_defs import wrn; from trainer.compute import trial_flops; "
            "from trainer.recipe import Recipe; "
            "f = trial_flops(wrn(28, 10), Recipe(), 'cifar10'); print(f.total, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    total, imported = out.stdout.split()
    assert imported == "False" and int(total) > 1e18  # WRN-28-10, TRADES, 100 epochs of CIFAR-10
