import math

import numpy as np
import pytest

from trainer import Recipe, dataset_spec


def test_defaults_are_the_papers():
    r = Recipe()
    assert (r.lr, r.momentum, r.weight_decay, r.steps, r.beta, r.grad_clip) == (0.1, 0.9, 2e-4, 10, 6.0, 5.0)
    cifar = r.for_dataset(dataset_spec("cifar10"))
    assert cifar.eps == pytest.approx(8 / 255) and cifar.step_size == pytest.approx(2 / 255)
    assert Recipe(eps=0.1).for_dataset(dataset_spec("digits")).eps == 0.1


def test_piecewise_and_cosine_schedules():
    r = Recipe(epochs=100)
    assert [r.lr_at(e) for e in (0, 74, 75, 89, 90, 99)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    c = Recipe(epochs=10, schedule="cosine")
    assert c.lr_at(0) == pytest.approx(0.1) and c.lr_at(5) == pytest.approx(0.05)


def test_flat_round_trip_including_parquet_values():
    r = Recipe(method="mart", epochs=7, eps=0.1, ema_decay=0.999, amp="none")
    assert Recipe.from_dict(r.to_dict()) == r
    assert all(not isinstance(v, (dict, list, tuple)) for v in r.to_dict().values())
    row = {**{k: (np.float64(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
              for k, v in Recipe().to_dict().items()}, "eps": math.nan, "depth1": 3}
    assert Recipe.from_dict(row) == Recipe()


@pytest.mark.parametrize("kw, message", [
    (dict(method="fgsm_at"), "method"), (dict(epochs=0), "epochs"), (dict(lr=-1), "lr"),
    (dict(eps=8), "eps"), (dict(schedule="step"), "schedule"), (dict(ema_decay=1.0), "ema_decay"),
    (dict(amp="fp8"), "amp"), (dict(batch_size=2.5), "batch_size"), (dict(momentum=1.0), "momentum"),
])
def test_bad_values_are_rejected_with_the_field_named(kw, message):
    with pytest.raises(ValueError, match=message):
        Recipe(**kw)


def test_the_validation_attack_steps_like_training_unless_training_is_single_step():
    from trainer.datasets import dataset_spec

    cifar = dataset_spec("cifar10")
    assert Recipe().for_dataset(cifar).val_step_size == pytest.approx(2 / 255)
    # FGSM-style training steps eps or more: a PGD at that step would be a weak validation attack
    fgsm = Recipe(method="pgd_at", steps=1, step_size=10 / 255).for_dataset(cifar)
    assert fgsm.val_step_size == pytest.approx(2 / 255) and fgsm.step_size == pytest.approx(10 / 255)
    assert Recipe(val_step_size=1 / 255).for_dataset(cifar).val_step_size == pytest.approx(1 / 255)
    assert Recipe().for_dataset(cifar).val_size == 5000  # the whole validation split
    assert Recipe(val_size=9999).for_dataset(cifar).val_size == 5000
    assert Recipe(select_on="test").for_dataset(cifar).val_size == 10_000
