"""The pre-activation Wide-ResNet of a WRNConfig, in RobustWRN's layout with one choice made.

Parameter counts and MACs equal those of RobustWRN (HanxunH/RobustWRN, the paper's code) and
of its successor robust-residual-network (zhichao-lu) for every config. The choice: where a
block needs its 1x1 shortcut conv, the conv takes the block's pre-activated input
relu(bn1(x)), as robust-residual-network does (outputs equal with copied weights) and as
pre-activation ResNets' projection shortcuts do (He et al. 2016). RobustWRN's block instead
feeds the raw x to that conv when the input and output channels are equal and the stride is 2
(everywhere else it takes relu(bn1(x)) too). That case arises only when a stage keeps its
predecessor's width, which a budget search samples (never in the paper's WRN-34-R); one rule
for every block keeps BN-ReLU on both paths of every projection, so no block's shortcut sees
un-normalised activations.
"""

from __future__ import annotations

import torch
from torch import nn

from space_defs import STRIDES, WRNConfig


class Block(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3; a 1x1 shortcut on the activated input relu(bn1(x))
    when the shape changes (see the module docstring for RobustWRN's one difference)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        needs_projection = c_in != c_out or stride != 1
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = torch.relu(self.bn1(x))
        y = self.conv2(torch.relu(self.bn2(self.conv1(o))))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """Takes images in [0, 1]; normalisation is inside so attacks work in pixel space."""

    def __init__(self, cfg: WRNConfig, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None):
        super().__init__()
        self.cfg = cfg
        mean = mean or (0.5,) * cfg.data.in_channels
        std = std or (0.5,) * cfg.data.in_channels
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.stem = nn.Conv2d(cfg.data.in_channels, cfg.stem_channels, 3, 1, 1, bias=False)
        layers, c_in = [], cfg.stem_channels
        for depth, c, stride in zip(cfg.depths, cfg.channels, STRIDES):
            layers += [Block(c_in, c, stride)] + [Block(c, c, 1) for _ in range(depth - 1)]
            c_in = c
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(c_in)
        self.fc = nn.Linear(c_in, cfg.data.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem((x - self.mean) / self.std))
        x = torch.relu(self.bn(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def build_model(cfg: WRNConfig, *, mean: tuple[float, ...] | None = None,
                std: tuple[float, ...] | None = None) -> WideResNet:
    """The network ``cfg`` describes; ``mean``/``std`` are the dataset's per-channel statistics."""
    return WideResNet(cfg, mean, std)
