"""What trials need to know about each dataset, without torch: shapes, normalisation, attack
budgets, split sizes. The driver of a sweep reads these; only trials load the data itself."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from space_defs.arch import DataShape

from .status import EnvironmentProblem

SPLIT_SEED = 0  # the train/val(/test) split is the same for every trial and every recipe seed
DEFAULT_DATA_DIR = Path(os.environ.get("TRAINER_DATA_DIR", Path.home() / ".cache" / "trainer-data"))


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the model, the attacks and the splits need to know about a dataset."""

    name: str
    data: DataShape  # image channels, classes, pixels per side: what a network for it must fit
    mean: tuple[float, ...]  # per-channel pixel mean in [0, 1] units, used inside the model
    std: tuple[float, ...]
    eps: float  # default Linf budget, [0, 1] pixel units
    step_size: float  # default PGD step, [0, 1] pixel units
    train_size: int  # images of the training split, validation hold-out included
    val_size: int  # training images held out as the validation split
    test_size: int  # images of the test split
    crop_padding: int  # pixels of zero padding for the random crop; 0 = no crop
    flip: bool  # random horizontal flip fits the data (not for digits or house numbers)
    files: tuple[str, ...] = ()  # what torchvision reads under DATA_DIR/NAME, the test split's
    # last (none: no download)
    md5: tuple[str, ...] = ()  # torchvision's md5 of each of ``files``, in the same order

    def check_arch(self, arch) -> None:
        """ValueError if ``arch`` cannot take this dataset's images or predict its classes."""
        if arch.data != self.data:
            raise ValueError(f"architecture {arch.name} does not fit dataset {self.name!r} ({arch.data}); "
                             f"it needs {self.data}: build it with trainer.datasets.adapt_arch(arch, "
                             f"{self.name!r})")

    def on_disk(self, data_dir: str | Path) -> bool:
        """Whether the files trials read are all under ``data_dir`` (what they hold:
        trainer.dataset_files.read_files)."""
        return all((Path(data_dir) / self.name / f).is_file() for f in self.files)


def _files(folder: str, md5: tuple[tuple[str, str], ...]) -> dict[str, tuple[str, ...]]:
    """DatasetSpec's ``files`` and ``md5`` from (name, md5) pairs, as torchvision lists them."""
    return {"files": tuple(folder + name for name, _ in md5), "md5": tuple(m for _, m in md5)}


_CIFAR_EPS, _CIFAR_STEP = 8 / 255, 2 / 255
DATASETS: dict[str, DatasetSpec] = {
    s.name: s for s in (
        DatasetSpec(name="cifar10", data=DataShape(in_channels=3, num_classes=10, input_size=32),
                    mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616),
                    eps=_CIFAR_EPS, step_size=_CIFAR_STEP, train_size=50_000, val_size=5000,
                    test_size=10_000, crop_padding=4, flip=True, **_files("cifar-10-batches-py/", (
                        ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
                        ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                        ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
                        ("data_batch_4", "634d18415352ddfa80567beed471001a"),
                        ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
                        ("test_batch", "40351d587109b95175f43aff81a1287e")))),
        DatasetSpec(name="cifar100", data=DataShape(in_channels=3, num_classes=100, input_size=32),
                    mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
                    eps=_CIFAR_EPS, step_size=_CIFAR_STEP, train_size=50_000, val_size=5000,
                    test_size=10_000, crop_padding=4, flip=True,
                    **_files("cifar-100-python/", (("train", "16019d7e3df5f24257cddd939b257f8d"),
                                                   ("test", "f0ef6b0ae62326f3e7ffdfab6717acfc")))),
        DatasetSpec(name="svhn", data=DataShape(in_channels=3, num_classes=10, input_size=32),
                    mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
                    eps=_CIFAR_EPS, step_size=_CIFAR_STEP, train_size=73_257, val_size=5000,
                    test_size=26_032, crop_padding=4, flip=False,
                    **_files("", (("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
                                  ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3")))),
        # Measured on a 1-1-1/16-32-64 WRN, 15 epochs on 1,400 images: clean training 98.7% clean /
        # 21% PGD-20 at eps 0.2, PGD-5 training 97.7% / 68%, so 0.2 separates robust from not.
        DatasetSpec(name="digits", data=DataShape(in_channels=1, num_classes=10, input_size=8),
                    mean=(0.3,), std=(0.38,), eps=0.2, step_size=0.05, train_size=1400,
                    val_size=200, test_size=397, crop_padding=1, flip=False),
    )
}
DIGITS_TEST_SIZE = DATASETS["digits"].test_size  # no official test split: 1,400 / 397, fixed


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None


def adapt_arch(arch, dataset: str):
    """``arch`` with the input channels, classes and input size of ``dataset``."""
    return dataclasses.replace(arch, data=dataset_spec(dataset).data)


class DataUnavailableError(EnvironmentProblem):
    """The dataset is neither on disk nor downloadable (e.g. offline)."""
