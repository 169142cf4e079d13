import dataclasses

import numpy as np
import pytest
import torch

from space_defs import DataShape
from trainer.data import augment, load_splits, train_batches
from trainer.dataset_files import DataCorruptError, read_files
from trainer.datasets import DATASETS, DataUnavailableError, dataset_spec

from tests.harness.cifar import as_the_original, cifar10_standin, with_one_byte_changed, write_cifar10  # noqa: F401


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


def test_the_md5s_are_torchvisions_for_every_file_it_reads():
    from torchvision import datasets

    def listed(spec):
        return [(f.rsplit("/", 1)[-1], m) for f, m in zip(spec.files, spec.md5, strict=True)]

    for name, cls in (("cifar10", datasets.CIFAR10), ("cifar100", datasets.CIFAR100)):
        assert listed(dataset_spec(name)) == [tuple(p) for p in cls.train_list + cls.test_list]
        assert all(f.startswith(cls.base_folder + "/") for f in dataset_spec(name).files)
    assert listed(dataset_spec("svhn")) == [tuple(datasets.SVHN.split_list[s][1:]) for s in ("train", "test")]


def test_the_stand_in_reads_as_torchvision_reads_it(cifar10_standin, monkeypatch):
    import torchvision.datasets.cifar as tv

    monkeypatch.setenv("TRAINER_DATA_MD5", "off")
    monkeypatch.setattr(tv, "check_integrity", lambda *a, **k: True)  # the stand-in is not the original
    train, test = read_files(dataset_spec("cifar10"), cifar10_standin)
    for ours, split in ((train, True), (test, False)):
        theirs = tv.CIFAR10(cifar10_standin / "cifar10", train=split)
        assert np.array_equal(ours.x, theirs.data.transpose(0, 3, 1, 2))
        assert ours.y.tolist() == theirs.targets
    assert theirs.classes[0] == "airplane"
    splits = load_splits("cifar10", data_dir=cifar10_standin)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (45_000, 5000, 10_000)
    assert splits.train.x.shape[1:] == (3, 32, 32) and 0 <= splits.train.x.min() < splits.train.x.max() <= 1


def test_a_changed_byte_is_named_with_what_to_do_and_nothing_is_downloaded(cifar10_standin, tmp_path,
                                                                          monkeypatch):
    as_the_original(monkeypatch, cifar10_standin)
    monkeypatch.setattr("urllib.request.urlopen", _no_network)
    assert len(load_splits("cifar10", data_dir=cifar10_standin).test) == 10_000  # md5s match
    bad = with_one_byte_changed(cifar10_standin, tmp_path)
    with pytest.raises(DataCorruptError) as e:
        load_splits("cifar10", data_dir=bad)
    path, md5 = bad / "cifar10/cifar-10-batches-py/data_batch_3", dataset_spec("cifar10").md5[2]
    assert str(e.value).startswith(f"cifar10: {path} fails its integrity check (md5 ")
    assert f"torchvision's copy has {md5}): it is corrupt or not the original; delete {bad / 'cifar10'} " \
           f"and run `python -m trainer fetch cifar10 --data-dir {bad}`" in str(e.value)
    assert "TRAINER_DATA_MD5=off" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setenv("TRAINER_DATA_MD5", "off")  # the user trusts it: counts and shapes only
    assert len(load_splits("cifar10", data_dir=bad).train) == 45_000


def test_a_copy_with_other_image_counts_is_named_incomplete(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINER_DATA_MD5", "off")
    write_cifar10(tmp_path, per_batch=1200)
    with pytest.raises(DataCorruptError, match=r"^cifar10 in .* has 6,000 training and 1,200 test images "
                                               r"of 3x32x32; torchvision's cifar10 has 50,000 and "
                                               r"10,000 of 3x32x32: the copy is incomplete"):
        load_splits("cifar10", data_dir=tmp_path)


def test_a_file_that_is_no_batch_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINER_DATA_MD5", "off")
    for name in dataset_spec("cifar10").files:
        (tmp_path / "cifar10" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cifar10" / name).write_bytes(b"not cifar")
    with pytest.raises(DataCorruptError, match="data_batch_1 is not a cifar10 batch file"):
        load_splits("cifar10", data_dir=tmp_path)


def test_a_trial_meeting_a_corrupt_copy_stops_the_sweep_as_an_environment_problem():
    from search.tune.failures import environment_problem

    error = DataCorruptError("cifar10: /d/x fails its integrity check (md5 a, torchvision's copy has b)")
    assert issubclass(DataCorruptError, DataUnavailableError)
    assert environment_problem(error) == str(error)
    text = f"Failure # 1\nTraceback ...\ntrainer.dataset_files.DataCorruptError: {error}\n"
    assert environment_problem(text) == str(error)


def test_svhn_reads_as_torchvision_reads_it_and_a_small_copy_is_named(tmp_path, monkeypatch):
    import torchvision.datasets.svhn as tv
    from scipy.io import savemat

    from trainer.dataset_files import _read_svhn

    rng = np.random.default_rng(0)
    for name, n in (("train_32x32.mat", 20), ("test_32x32.mat", 10)):
        (tmp_path / "svhn").mkdir(exist_ok=True)
        savemat(tmp_path / "svhn" / name, {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                           "y": rng.integers(1, 11, (n, 1))})
    monkeypatch.setattr(tv.SVHN, "_check_integrity", lambda self: True)
    spec = dataset_spec("svhn")
    ours, theirs = _read_svhn(spec, tmp_path, [tmp_path / "svhn/train_32x32.mat"]), tv.SVHN(tmp_path / "svhn")
    assert np.array_equal(ours.x, theirs.data) and np.array_equal(ours.y, theirs.labels)
    monkeypatch.setenv("TRAINER_DATA_MD5", "off")
    with pytest.raises(DataCorruptError, match="svhn in .* has 20 training and 10 test images of "
                                               "3x32x32; torchvision's svhn has 73,257 and 26,032"):
        read_files(spec, tmp_path)
    monkeypatch.delenv("TRAINER_DATA_MD5")
    with pytest.raises(DataCorruptError, match="train_32x32.mat fails its integrity check"):
        read_files(spec, tmp_path)


def test_labels_that_do_not_fit_the_images_are_named(tmp_path, monkeypatch):
    import pickle

    monkeypatch.setenv("TRAINER_DATA_MD5", "off")
    folder = write_cifar10(tmp_path, per_batch=2)
    for labels, says in (([0], "training files hold 10 images but 9 labels"),
                         ([0, 10], "training files hold labels from 0 to 10, not 0 to 9")):
        entry = pickle.loads((folder / "data_batch_3").read_bytes())
        (folder / "data_batch_3").write_bytes(pickle.dumps({**entry, "labels": labels}))
        spec = dataclasses.replace(dataset_spec("cifar10"), train_size=10, test_size=2)
        with pytest.raises(DataCorruptError, match=says):
            read_files(spec, tmp_path)
