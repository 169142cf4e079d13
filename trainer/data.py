"""Datasets as tensors: fixed seeded splits and on-device augmentation (specs: datasets.py).

A whole dataset is held as one float tensor in [0, 1] on the training device, so batches are
index gathers and augmentation is a few tensor ops; the CPU path runs the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .dataset_files import Images, read_files
from .datasets import (DEFAULT_DATA_DIR, DIGITS_TEST_SIZE, SPLIT_SEED, DataUnavailableError,
                       DatasetSpec, dataset_spec)


@dataclass(frozen=True)
class Split:
    """Images (N, C, H, W) float32 in [0, 1] and labels (N,) int64, on one device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))

    def head(self, n: int | None) -> Split:
        return self if n is None else Split(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split
    test: Split


def load_splits(dataset: str, *, data_dir: str | Path = DEFAULT_DATA_DIR,
                device: torch.device | str = "cpu", select_on: str = "val") -> Splits:
    """Train/val/test of ``dataset`` on ``device``; val is a fixed seeded hold-out of train.

    ``select_on="test"`` is the references' protocol: nothing is held out, train is the whole
    training set (in the same fixed shuffled order) and val *is* the test split.
    """
    spec = dataset_spec(dataset)
    train, test = _digits() if spec.name == "digits" else _torchvision(spec, Path(data_dir))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SPLIT_SEED))
    test = test.to(device)
    if select_on == "test":
        return Splits(train=Split(train.x[order], train.y[order]).to(device), val=test, test=test)
    val_idx, train_idx = order[:spec.val_size], order[spec.val_size:]
    return Splits(train=Split(train.x[train_idx], train.y[train_idx]).to(device),
                  val=Split(train.x[val_idx], train.y[val_idx]).to(device), test=test)


def _digits() -> tuple[Split, Split]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    test_idx, train_idx = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
    return Split(x[train_idx], y[train_idx]), Split(x[test_idx], y[test_idx])


def _torchvision(spec: DatasetSpec, data_dir: Path) -> tuple[Split, Split]:
    train, test = fetch(spec.name, data_dir)
    return _as_split(train), _as_split(test)


def fetch(dataset: str, data_dir: str | Path = DEFAULT_DATA_DIR) -> tuple[Images, Images]:
    """The train and test images of ``dataset`` (numpy), downloaded into ``data_dir`` first if
    its files are not all there (``python -m trainer fetch``; a sweep's driver runs it before
    the first trial). DataUnavailableError when that fails; DataCorruptError when the files
    there are not the dataset (trainer.dataset_files.read_files)."""
    spec = dataset_spec(dataset)
    download(spec, Path(data_dir))
    return read_files(spec, data_dir)


def download(spec: DatasetSpec, data_dir: Path) -> None:
    """``spec``'s files into ``data_dir``/NAME by torchvision's downloader, unless all are there
    (what they hold is read_files' to check)."""
    from filelock import FileLock

    root = data_dir / spec.name
    root.mkdir(parents=True, exist_ok=True)
    # Many trials on a node start together: one downloads, the others wait and then read.
    with FileLock(str(root / ".download.lock")):
        if spec.on_disk(data_dir):
            return
        try:
            _download(spec, root)
        except Exception as e:  # noqa: BLE001 - torchvision raises URLError, RuntimeError, OSError...
            raise DataUnavailableError(
                f"{spec.name} is not in {root} and could not be downloaded ({type(e).__name__}: {e}); "
                f"put it there (`python -m trainer fetch {spec.name} --data-dir DIR` downloads it "
                f"where the internet is reachable; TRAINER_DATA_DIR or --data-dir say where it is), "
                f"or use the offline '--dataset digits'") from e


def _download(spec: DatasetSpec, root: Path) -> None:
    """What ``download=True`` of torchvision's dataset class does, without reading the data."""
    from torchvision import datasets
    from torchvision.datasets.utils import download_and_extract_archive, download_url

    if spec.name == "svhn":
        for split in ("train", "test"):
            url, filename, md5 = datasets.SVHN.split_list[split]
            download_url(url, str(root), filename, md5)
        return
    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[spec.name]
    download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)


def _as_split(images: Images) -> Split:
    return Split(torch.from_numpy(images.x).float().div_(255), torch.from_numpy(images.y).long())


def augment(x: torch.Tensor, spec: DatasetSpec, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and (where it fits) horizontal flip, per image, on x's device.

    The random draws come from ``generator`` (a CPU generator) so the data order and augmentation
    are reproducible and checkpointable independently of the device.
    """
    n, _, h, w = x.shape
    p = spec.crop_padding
    if p:
        dy, dx = (torch.randint(0, 2 * p + 1, (2, n), generator=generator).to(x.device))
        rows = (torch.arange(h, device=x.device) + dy[:, None])[:, None, :, None]
        cols = (torch.arange(w, device=x.device) + dx[:, None])[:, None, None, :]
        padded = F.pad(x, (p, p, p, p))
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    if spec.flip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)[:, None, None, None]
        x = torch.where(flip, x.flip(3), x)
    return x


def train_batches(split: Split, spec: DatasetSpec, *, batch_size: int, generator: torch.Generator):
    """One epoch of shuffled, augmented (x, y) batches; the last partial batch is dropped."""
    order = torch.randperm(len(split), generator=generator).to(split.y.device)
    for start in range(0, len(split) - batch_size + 1, batch_size):
        idx = order[start:start + batch_size]
        yield augment(split.x[idx], spec, generator), split.y[idx]


def eval_batches(split: Split, *, batch_size: int):
    for start in range(0, len(split), batch_size):
        yield split.x[start:start + batch_size], split.y[start:start + batch_size]
