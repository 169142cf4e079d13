"""Exact, closed-form cost of a WRNConfig: parameters and multiply-accumulates.

Both equal what torch counts for ``trainer.models.build_model(cfg)``: parameters exactly
(BatchNorm running statistics are buffers, not parameters), MACs as torch's flop counter / 2
(convolutions and the linear head; BatchNorm, ReLU and pooling are not counted).
"""

from __future__ import annotations

from .arch import STRIDES, WRNConfig


def _conv_out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # 3x3 pad 1 and 1x1 pad 0 agree on this


def _cost(depths, channels, stem, cin, classes, size) -> tuple[int, int, tuple[int, ...]]:
    """(params, MACs, params per stage) from plain values; the hot path of the budget solver."""
    params = 9 * cin * stem
    macs = params * size * size
    per_stage = []
    c_in = stem
    for d, c, stride in zip(depths, channels, STRIDES):
        size = _conv_out(size, stride)
        # first block: BN(c_in), conv c_in->c (strided), BN(c), conv c->c, maybe a 1x1 shortcut
        convs = 9 * c_in * c + 9 * c * c + (c_in * c if (c_in != c or stride != 1) else 0)
        convs += (d - 1) * 18 * c * c
        stage = convs + 2 * c_in + 2 * c + (d - 1) * 4 * c
        per_stage.append(stage)
        params += stage
        macs += convs * size * size
        c_in = c
    head = c_in * classes
    return params + 2 * c_in + head + classes, macs + head, tuple(per_stage)


def cost(cfg: WRNConfig) -> tuple[int, int]:
    """(parameters, MACs) of one forward pass of a single image."""
    return _of(cfg)[:2]


def param_count(cfg: WRNConfig) -> int:
    """Trainable parameters of the model ``trainer.models.build_model(cfg)``."""
    return cost(cfg)[0]


def macs(cfg: WRNConfig) -> int:
    """Multiply-accumulates of one forward pass of one image (convs and the linear head)."""
    return cost(cfg)[1]


def stem_macs(cfg: WRNConfig) -> int:
    """Multiply-accumulates of the stem convolution alone (part of ``macs``): the one layer
    whose input gradient a training step does not compute."""
    d = cfg.data
    return 9 * d.in_channels * cfg.stem_channels * d.input_size * d.input_size


def stage_params(cfg: WRNConfig) -> tuple[int, int, int]:
    """Parameters held by each stage (blocks, BNs and shortcuts), for 'share per stage' plots."""
    return _of(cfg)[2]


def _of(cfg: WRNConfig):
    d = cfg.data
    return _cost(cfg.depths, cfg.channels, cfg.stem_channels, d.in_channels, d.num_classes,
                 d.input_size)
