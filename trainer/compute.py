"""What a training run computes, in FLOPs: arithmetic over the architecture's MACs
(space_defs.cost) and the recipe, without torch, so a sweep's driver can price a sweep before
its first trial.

The count is exact for what torch's flop counter counts (convolutions and the linear head, 2
FLOPs per multiply-accumulate; batch norm, activations, the optimizer and the data pipeline are
not counted): tests/trainer/test_compute.py holds ``trial_flops`` equal to
``torch.utils.flop_counter`` over fit()'s own training epoch and validation, for every method.
With M the MACs of one forward pass of one image and S those of the stem convolution:

    forward                                   2M
    backward for the input only (an attack)   2M                 no weight gradients
    backward of a training step               2M + 2(M - S)      weight gradients, and input
                                                                 gradients but the stem's

An attack step is a forward and a backward for the input. Per training image a method makes
the passes its entry says (trainer.method_names.Method): ``standard`` one forward and one
training backward; ``pgd_at`` k attack steps, the training forward and backward, and one
gradient-free clean forward (its clean accuracy); ``trades`` a clean forward (the attack's
target), k attack steps, and forward and training backward of both the clean and the
adversarial batch; ``mart`` the same without the first clean forward. Each epoch trains on
the training split less the validation hold-out (``Recipe.training_images``), in whole batches
(the last partial one is dropped), then validates: a clean forward of every image of the
selection split (the validation split, or the test split with ``select_on="test"``), and
PGD-k' (k' = ``val_attack_steps``) plus a forward on the first ``val_size`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from space_defs.arch import WRNConfig
from space_defs.cost import macs, stem_macs

from .datasets import dataset_spec
from .recipe import Recipe

FLOPS_PER_MAC = 2
# Dense bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s, by a name torch or Ray
# uses for the GPU ("NVIDIA A10G" matches "A10"). Real training reaches a fraction of them, so
# hours at a peak are a lower bound.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
                    "A10": 125.0, "T4": 65.0}


def peak_bf16_flops(gpu: str) -> float | None:
    """The data-sheet bf16 peak of the GPU named ``gpu`` (FLOP/s), None when not listed."""
    name = gpu.upper()
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS.items() if key in name), None)


@dataclass(frozen=True)
class PassFlops:
    """FLOPs of the passes one image makes through ``arch``."""

    forward: int
    input_backward: int  # an attack's backward: input gradients only
    training_backward: int  # weight gradients, and input gradients below the stem

    @classmethod
    def of(cls, arch: WRNConfig) -> PassFlops:
        m, s = macs(arch), stem_macs(arch)
        return cls(FLOPS_PER_MAC * m, FLOPS_PER_MAC * m, FLOPS_PER_MAC * (2 * m - s))

    @property
    def attack_step(self) -> int:
        return self.forward + self.input_backward

    @property
    def training_step(self) -> int:
        return self.forward + self.training_backward


def training_flops_per_image(arch: WRNConfig, recipe: Recipe) -> int:
    """FLOPs one training image costs with ``recipe``'s method and attack steps."""
    p, m = PassFlops.of(arch), recipe.training_method
    return (m.forwards * p.forward + m.attacks * recipe.steps * p.attack_step
            + m.training_steps * p.training_step)


@dataclass(frozen=True)
class TrialFlops:
    """FLOPs of one trial trained for all of its epochs (an early-stopped one does fewer)."""

    train_per_epoch: int
    validation_per_epoch: int
    epochs: int
    train_images: int  # per epoch

    @property
    def per_epoch(self) -> int:
        return self.train_per_epoch + self.validation_per_epoch

    @property
    def total(self) -> int:
        return self.epochs * self.per_epoch


def trial_flops(arch: WRNConfig, recipe: Recipe, dataset: str) -> TrialFlops:
    """What training ``arch`` with ``recipe`` on ``dataset`` costs, as fit() runs it."""
    spec = dataset_spec(dataset)
    recipe = recipe.for_dataset(spec)
    p = PassFlops.of(arch)
    train_images = recipe.training_images(spec) // recipe.batch_size * recipe.batch_size
    validation = (recipe.selection_images(spec) * p.forward
                  + recipe.val_size * (recipe.val_attack_steps * p.attack_step + p.forward))
    return TrialFlops(train_per_epoch=train_images * training_flops_per_image(arch, recipe),
                      validation_per_epoch=validation, epochs=recipe.epochs,
                      train_images=train_images)
