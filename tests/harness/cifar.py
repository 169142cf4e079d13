"""A stand-in for CIFAR-10 in torchvision's file format, so the CIFAR path runs offline.

``write_cifar10(DIR)`` writes DIR/cifar10/cifar-10-batches-py/: data_batch_1..5 and test_batch,
pickles of {"batch_label", "labels", "data": uint8 (N, 3072), "filenames"} as torchvision's
CIFAR10 reads them, and batches.meta ({"label_names": [...]}). (The original's are Python 2
pickles: torchvision's ``encoding="latin1"`` reads their keys as str, as these are.) Each class is a colour pattern
of its own plus noise, seeded, so a tiny net beats chance after a few SGD steps. Its files are
not the original's: readers need TRAINER_DATA_MD5=off (trainer.dataset_files.MD5_ENV).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
           "test_batch")
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NOISE = 48  # pixel values of uniform noise around each class's pattern


def write_cifar10(data_dir: str | Path, *, per_batch: int = 10_000, seed: int = 0) -> Path:
    """The stand-in under ``data_dir``/cifar10 with ``per_batch`` images in each of the six
    batch files (the original has 10,000); returns its cifar-10-batches-py folder."""
    folder = Path(data_dir) / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    patterns = _patterns(rng)
    for name in BATCHES:
        labels = rng.integers(0, len(CLASSES), per_batch)
        noise = rng.integers(0, NOISE, (per_batch, 3072), dtype=np.uint8)
        data = patterns[labels] + noise  # patterns stay below 256 - NOISE: no overflow
        _dump(folder / name, {"batch_label": name, "labels": labels.tolist(), "data": data,
                              "filenames": [f"{name}_{i}.png" for i in range(per_batch)]})
    _dump(folder / "batches.meta", {"num_cases_per_batch": per_batch, "num_vis": 3072,
                                    "label_names": list(CLASSES)})
    return folder


def _patterns(rng: np.random.Generator) -> np.ndarray:
    """(classes, 3072) uint8 below 256 - NOISE: per class, a colour of its own (what survives
    crops and flips) under a random 4x4 layout of lighter and darker squares, blown up to 32x32."""
    levels = np.stack(np.meshgrid(*[[40, 110, 180]] * 3), -1).reshape(-1, 3)
    colours = rng.permutation(levels)[:len(CLASSES)]
    shade = rng.integers(-25, 26, (len(CLASSES), 1, 4, 4))
    coarse = colours[:, :, None, None] + shade
    return coarse.repeat(8, axis=2).repeat(8, axis=3).reshape(len(CLASSES), 3072).astype(np.uint8)


def _dump(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def with_one_byte_changed(src: Path, dst: Path, name: str = "data_batch_3") -> Path:
    """A copy of the stand-in ``src`` (a data dir) at ``dst`` whose file ``name`` differs from
    the original in one byte (the other files: links to the stand-in's)."""
    for f in (src / "cifar10" / "cifar-10-batches-py").iterdir():
        out = dst / "cifar10" / "cifar-10-batches-py" / f.name
        out.parent.mkdir(parents=True, exist_ok=True)
        if f.name == name:
            data = bytearray(f.read_bytes())
            data[len(data) // 2] ^= 0xFF
            out.write_bytes(bytes(data))
        else:
            out.symlink_to(f)
    return dst


@pytest.fixture(scope="session")
def cifar10_standin(tmp_path_factory) -> Path:
    """A data dir holding the full-size stand-in (60,000 images, 184 MB), written once per test
    session (modules that import this fixture share it)."""
    root = tmp_path_factory.getbasetemp() / "cifar10-standin"
    if not (root / "complete").is_file():
        write_cifar10(root)
        (root / "complete").touch()
    return root


def as_the_original(monkeypatch, data_dir: Path) -> None:
    """Make trainer.datasets take the stand-in in ``data_dir`` for torchvision's copy: its md5s
    in place of the original's, so that TRAINER_DATA_MD5 can stay on (in this process only)."""
    import dataclasses
    import hashlib

    from trainer.datasets import DATASETS

    spec = DATASETS["cifar10"]
    md5 = tuple(hashlib.md5((data_dir / "cifar10" / f).read_bytes()).hexdigest() for f in spec.files)
    monkeypatch.setitem(DATASETS, "cifar10", dataclasses.replace(spec, md5=md5))
    monkeypatch.delenv("TRAINER_DATA_MD5", raising=False)
