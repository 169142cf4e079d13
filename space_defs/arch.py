"""The architecture as data: a frozen description of a pre-activation Wide-ResNet."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .cli import option

BASE_CHANNELS = (16, 32, 64)  # channels of a widen-factor-1 WRN, per stage
STRIDES = (1, 2, 2)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class DataShape:
    """What a network must fit of its data; datasets, spaces and configs all hold one."""

    in_channels: int = option(3, help="image channels")
    num_classes: int = option(10, help="classes to predict")
    input_size: int = option(32, help="pixels per side of the square input image")

    def __post_init__(self) -> None:
        for name in ("in_channels", "input_size"):
            value = getattr(self, name)
            if not (_is_int(value) and value >= 1):
                raise ValueError(f"DataShape.{name} must be a positive integer, got {value!r}")
        if not (_is_int(self.num_classes) and self.num_classes >= 2):
            raise ValueError(f"DataShape.num_classes must be an integer >= 2, got {self.num_classes!r}")


@dataclass(frozen=True)
class WRNConfig:
    """A three-stage pre-activation Wide-ResNet (RobustWRN conventions).

    Stage i has ``depths[i]`` blocks of ``channels[i]`` output channels; the widen factor of a
    stage is ``channels[i] / BASE_CHANNELS[i]``.
    """

    depths: tuple[int, int, int]  # blocks per stage
    channels: tuple[int, int, int]  # output channels per stage
    stem_channels: int = 16  # output channels of the 3x3 stem conv
    data: DataShape = DataShape()  # image channels, classes, image side

    def __post_init__(self) -> None:
        for name in ("depths", "channels"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 3:
                raise ValueError(f"WRNConfig.{name} must be 3 integers (one per stage), got {value!r}")
            value = tuple(value)
            if not all(_is_int(v) and v >= 1 for v in value):
                raise ValueError(f"WRNConfig.{name} must be positive integers, got {value!r}")
            object.__setattr__(self, name, tuple(int(v) for v in value))
        if not (_is_int(self.stem_channels) and self.stem_channels >= 1):
            raise ValueError(f"WRNConfig.stem_channels must be a positive integer, "
                             f"got {self.stem_channels!r}")
        if not isinstance(self.data, DataShape):
            raise ValueError(f"WRNConfig.data must be a DataShape, got {self.data!r}")

    @property
    def depth(self) -> int:
        """Conventional WRN depth: 2 convs per block plus stem, head and the 1x1 shortcuts."""
        return 2 * sum(self.depths) + 4

    @property
    def widen_factors(self) -> tuple[float, float, float]:
        return tuple(c / b for c, b in zip(self.channels, BASE_CHANNELS))

    @property
    def label(self) -> str:
        """'d5-5-5 c320-640-512': blocks and channels per stage (the form ``parse_arch`` reads)."""
        return f"d{'-'.join(map(str, self.depths))} c{'-'.join(map(str, self.channels))}"

    @property
    def name(self) -> str:
        k = self.widen_factors
        if len(set(self.depths)) == 1 and len(set(k)) == 1 and k[0].is_integer():
            return f"WRN-{self.depth}-{int(k[0])}"
        return f"WRN-{self.depth} {self.label}"

    def to_dict(self) -> dict[str, Any]:
        """Flat dict of plain values (for Tune configs and Parquet rows): depth1..3,
        channel1..3, stem_channels and the data shape's fields."""
        flat: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                flat.update({f"{f.name[:-1]}{i + 1}": v for i, v in enumerate(value)})
            elif isinstance(value, DataShape):
                flat.update(dataclasses.asdict(value))
            else:
                flat[f.name] = value
        return flat

    @classmethod
    def from_dict(cls, flat: dict[str, Any]) -> WRNConfig:
        """Inverse of ``to_dict``; extra keys are ignored so a whole trial row can be passed."""
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in ("depths", "channels"):
                keys = [f"{f.name[:-1]}{i}" for i in (1, 2, 3)]
                missing = [k for k in keys if k not in flat]
                if missing:
                    raise ValueError(f"WRNConfig.from_dict: missing {', '.join(missing)}")
                kw[f.name] = tuple(_plain_int(flat[k]) for k in keys)
            elif f.name == "data":
                kw[f.name] = DataShape(**{g.name: _plain_int(flat[g.name])
                                          for g in dataclasses.fields(DataShape) if g.name in flat})
            elif f.name in flat:
                kw[f.name] = _plain_int(flat[f.name])
        return cls(**kw)


def _plain_int(value: Any) -> Any:
    """numpy/pandas integers (and integral floats from a NaN-able column) to int."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value


def wrn(depth: int, widen_factor: int, **kw: Any) -> WRNConfig:
    """Classic WRN-depth-k: (depth - 4) / 6 blocks per stage, channels (16k, 32k, 64k)."""
    if (depth - 4) % 6 or depth < 10:
        raise ValueError(f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, ...), got {depth}")
    n = (depth - 4) // 6
    return WRNConfig(depths=(n, n, n), channels=tuple(b * widen_factor for b in BASE_CHANNELS), **kw)


def wrn34_r(**kw: Any) -> WRNConfig:
    """Huang et al. 2021's WRN-34-R: depths 5-5-5, widen factors 20-20-8 (smaller last stage)."""
    return WRNConfig(depths=(5, 5, 5), channels=(320, 640, 512), **kw)


def parse_arch(text: str, **kw: Any) -> WRNConfig:
    """'WRN-28-10', 'WRN-34-R', or 'd5-5-5 c320-640-512' to a WRNConfig."""
    import re

    s = text.strip()
    if s.upper() == "WRN-34-R":
        return wrn34_r(**kw)
    m = re.fullmatch(r"(?i)wrn-(\d+)-(\d+)", s)
    if m:
        return wrn(int(m[1]), int(m[2]), **kw)
    m = re.fullmatch(r"(?i)(?:wrn-\d+\s+)?d(\d+)-(\d+)-(\d+)\s+c(\d+)-(\d+)-(\d+)", s)
    if m:
        g = [int(x) for x in m.groups()]
        return WRNConfig(depths=tuple(g[:3]), channels=tuple(g[3:]), **kw)
    raise ValueError(
        f"unknown architecture {text!r}: use WRN-<depth>-<k> (e.g. WRN-28-10), WRN-34-R, "
        "or 'd<D1>-<D2>-<D3> c<C1>-<C2>-<C3>' (blocks and channels per stage)"
    )
