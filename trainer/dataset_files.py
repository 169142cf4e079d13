"""A dataset's files on disk, checked before they are trusted: every file's md5 against
torchvision's (unless TRAINER_DATA_MD5=off), then read as torchvision reads them (numpy, no
torch: ``python -m trainer fetch`` checks a copy in about a second, before a sweep's first
trial), then the image counts, shapes and labels against the dataset's spec."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any, NamedTuple

from .datasets import DataUnavailableError, DatasetSpec

MD5_ENV = "TRAINER_DATA_MD5"  # "off": trust files whose md5 is not torchvision's (counts still checked)


class DataCorruptError(DataUnavailableError):
    """The dataset's files are there but are not the dataset: a file's md5 is not torchvision's,
    a file is unreadable, or they hold other image counts or shapes than the dataset has."""


class Images(NamedTuple):
    x: Any  # uint8 numpy array (N, C, H, W)
    y: Any  # int64 numpy array (N,)


def read_files(spec: DatasetSpec, data_dir: str | Path) -> tuple[Images, Images]:
    """The train and test images of ``spec`` in its files under ``data_dir``, read as
    torchvision reads them, once the files' md5 is torchvision's (unless TRAINER_DATA_MD5=off)
    and their image counts and shapes the dataset's: DataCorruptError otherwise."""
    root = Path(data_dir) / spec.name
    if checks_md5():
        for name, md5 in zip(spec.files, spec.md5):
            _check_md5(spec, data_dir, root / name, md5)
    read = _read_svhn if spec.name == "svhn" else _read_cifar
    train, test = (read(spec, data_dir, [root / f for f in files])
                   for files in (spec.files[:-1], spec.files[-1:]))  # the last file: the test split
    _check_counts(spec, data_dir, train, test)
    return train, test


def checks_md5() -> bool:
    """Whether read_files compares the files' md5 with torchvision's (unless TRAINER_DATA_MD5=off)."""
    return os.environ.get(MD5_ENV, "").strip().lower() != "off"


def _refetch(spec: DatasetSpec, data_dir: str | Path) -> str:
    return (f"delete {Path(data_dir) / spec.name} and run `python -m trainer fetch {spec.name} "
            f"--data-dir {data_dir}` where the internet is reachable, or copy the original files there")


def _check_md5(spec: DatasetSpec, data_dir: str | Path, path: Path, want: str) -> None:
    with open(path, "rb") as f:
        got = hashlib.file_digest(f, "md5").hexdigest()
    if got != want:
        raise DataCorruptError(
            f"{spec.name}: {path} fails its integrity check (md5 {got}, torchvision's copy has "
            f"{want}): it is corrupt or not the original; {_refetch(spec, data_dir)} "
            f"({MD5_ENV}=off skips this check, for files you converted yourself)")


def _shape(x) -> str:
    return "x".join(str(n) for n in x.shape[1:])


def _check_counts(spec: DatasetSpec, data_dir: str | Path, train: Images, test: Images) -> None:
    d = spec.data
    want = f"{d.in_channels}x{d.input_size}x{d.input_size}"
    counts = (len(train.x), len(test.x))
    if counts != (spec.train_size, spec.test_size) or {_shape(train.x), _shape(test.x)} != {want}:
        shapes = " and ".join(dict.fromkeys((_shape(train.x), _shape(test.x))))
        raise DataCorruptError(
            f"{spec.name} in {data_dir} has {len(train.x):,} training and {len(test.x):,} test "
            f"images of {shapes}; torchvision's {spec.name} has {spec.train_size:,} and "
            f"{spec.test_size:,} of {want}: the copy is incomplete or not {spec.name}; "
            f"{_refetch(spec, data_dir)}")
    for split, images in (("training", train), ("test", test)):
        if len(images.y) != len(images.x):
            why = f"{len(images.x):,} images but {len(images.y):,} labels"
        elif len(images.y) and not 0 <= images.y.min() <= images.y.max() < d.num_classes:
            why = f"labels from {images.y.min()} to {images.y.max()}, not 0 to {d.num_classes - 1}"
        else:
            continue
        raise DataCorruptError(f"{spec.name} in {data_dir}: its {split} files hold {why}: the "
                               f"copy is not {spec.name}; {_refetch(spec, data_dir)}")


def _read_cifar(spec: DatasetSpec, data_dir: str | Path, paths: list[Path]) -> Images:
    """As torchvision's CIFAR10 and CIFAR100 read them: pickled dicts of flat 3x32x32 rows."""
    import numpy as np

    xs, ys = [], []
    for path in paths:
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            xs.append(np.asarray(entry["data"], dtype=np.uint8))
            ys.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
        except Exception as e:  # noqa: BLE001 - not a pickle, not a dict, no such key...
            raise DataCorruptError(f"{spec.name}: {path} is not a {spec.name} batch file "
                                   f"({type(e).__name__}: {e}); {_refetch(spec, data_dir)}") from e
    if len({x.shape[1:] for x in xs}) != 1 or xs[0].ndim != 2:
        raise DataCorruptError(f"{spec.name}: the images of {', '.join(map(str, paths))} are not "
                               f"rows of one size; {_refetch(spec, data_dir)}")
    x = np.concatenate(xs)
    if x.shape[1] == 3 * 32 * 32:
        x = x.reshape(len(x), 3, 32, 32)
    return Images(x, np.asarray(ys, dtype=np.int64))


def _read_svhn(spec: DatasetSpec, data_dir: str | Path, paths: list[Path]) -> Images:
    """As torchvision's SVHN reads it: a MATLAB file of X (H, W, C, N) and y in 1..10 (10: 0)."""
    import numpy as np
    from scipy.io import loadmat

    (path,) = paths
    try:
        mat = loadmat(path)
        x = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)), dtype=np.uint8)
        y = mat["y"].astype(np.int64).reshape(-1)
    except Exception as e:  # noqa: BLE001 - not a MATLAB file, no such variable...
        raise DataCorruptError(f"{spec.name}: {path} is not an {spec.name} file "
                               f"({type(e).__name__}: {e}); {_refetch(spec, data_dir)}") from e
    np.place(y, y == 10, 0)
    return Images(x, y)
