import pytest
import torch

from space_defs import DataShape
from trainer.data import augment, load_splits, train_batches
from trainer.datasets import DATASETS, DataUnavailableError, dataset_spec


def test_digits_splits_are_fixed_disjoint_and_in_unit_range(digits):
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1200, 200, 397)
    assert digits.train.x.shape[1:] == (1, 8, 8)
    again = load_splits("digits")
    assert torch.equal(again.val.x, digits.val.x) and torch.equal(again.test.y, digits.test.y)
    rows = {tuple(r.tolist()) for split in (digits.train, digits.val, digits.test) for r in split.x.flatten(1)}
    assert len(rows) >= 1797 - 20  # the bundled set has a few duplicate images, not shared splits
    assert digits.train.x.min() == 0 and digits.train.x.max() == 1


def test_augmentation_crops_and_flips_only_where_it_fits(digits):
    g = torch.Generator().manual_seed(0)
    x = digits.train.x[:32]
    out = augment(x, dataset_spec("digits"), g)
    assert out.shape == x.shape and not torch.equal(out, x)
    cifar = dataset_spec("cifar10")
    img = torch.rand(64, 3, 32, 32)
    flipped_or_shifted = augment(img, cifar, g)
    assert flipped_or_shifted.shape == img.shape
    assert not dataset_spec("svhn").flip and not dataset_spec("digits").flip and cifar.flip
    no_aug = dataset_spec("digits").__class__(**{**dataset_spec("digits").__dict__, "crop_padding": 0})
    assert torch.equal(augment(x, no_aug, g), x)


def test_batches_are_reproducible_from_the_generator(digits):
    spec = dataset_spec("digits")
    a = [y for _, y in train_batches(digits.train, spec, batch_size=100, generator=torch.Generator().manual_seed(1))]
    b = [y for _, y in train_batches(digits.train, spec, batch_size=100, generator=torch.Generator().manual_seed(1))]
    assert len(a) == 12 and all(torch.equal(u, v) for u, v in zip(a, b))


def test_specs_cover_the_datasets_and_unknown_names_fail():
    assert set(DATASETS) == {"cifar10", "cifar100", "svhn", "digits"}
    assert dataset_spec("CIFAR10").eps == pytest.approx(8 / 255)
    assert dataset_spec("digits").data == DataShape(in_channels=1, num_classes=10, input_size=8)
    with pytest.raises(ValueError, match="digits"):
        dataset_spec("mnist")


def test_missing_data_offline_names_the_digits_fallback(tmp_path, monkeypatch):
    monkeypatch.setattr("urllib.request.urlopen", _no_network)
    with pytest.raises(DataUnavailableError, match="--dataset digits"):
        load_splits("cifar10", data_dir=tmp_path)


def _no_network(*args, **kwargs):
    raise OSError("network unreachable (test)")
