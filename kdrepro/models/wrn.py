"""Wide ResNets (Zagoruyko and Komodakis, 2016): ``wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2``.

``wrn_D_k`` has depth ``D = 6n + 4`` and widening factor ``k``: a 3x3 stem with 16 channels, three
groups of ``n`` pre-activation blocks (BN-ReLU-conv3x3-BN-ReLU-conv3x3) with ``16k, 32k, 64k`` channels
at strides 1, 2, 2, a final BN-ReLU, global average pooling and a linear classifier. When a block changes
width its shortcut is a 1x1 convolution applied to the pre-activated input.

Attribute names (``conv1, block1.layer.0.bn1, ..., block1.layer.0.convShortcut, bn1, fc``) and
initialisation follow RepDistiller's ``models/wrn.py`` (identical to mdistiller's), so their checkpoints
load unchanged. Dropout is left out: RepDistiller builds these networks with ``dropRate=0``.
"""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from ._base import ClassifierNet

#: name -> (depth, widening factor)
CONFIGS: dict[str, tuple[int, int]] = {
    "wrn_16_1": (16, 1),
    "wrn_16_2": (16, 2),
    "wrn_40_1": (40, 1),
    "wrn_40_2": (40, 2),
}


class WideBasicBlock(nn.Module):
    """Pre-activation basic block; ``convShortcut`` exists only when the width changes."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.convShortcut: nn.Conv2d | None = None
        if in_planes != out_planes:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        # As in the original WRN code: a same-width block adds the raw input, a widening block
        # projects the pre-activated input.
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        return shortcut + out


class WideGroup(nn.Module):
    """A group of blocks kept under ``.layer`` so that state-dict keys read ``blockN.layer.i``."""

    def __init__(self, blocks: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            WideBasicBlock(in_planes, out_planes, stride),
            *(WideBasicBlock(out_planes, out_planes, 1) for _ in range(blocks - 1)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(ClassifierNet):
    """WRN-depth-k. Stages in ``features["stages"]``: the stem convolution output, then the outputs of
    ``block1``, ``block2``, ``block3`` (before the next BN-ReLU), as RepDistiller's ``f0..f3``."""

    def __init__(self, depth: int, widen_factor: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__(in_channels, num_classes)
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, ...), got {depth}")
        blocks = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = WideGroup(blocks, widths[0], widths[1], 1)
        self.block2 = WideGroup(blocks, widths[1], widths[2], 2)
        self.block3 = WideGroup(blocks, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        self.stage_channels = widths
        # RepDistiller's initialisation: N(0, 2 / (k*k*out_channels)) convolutions, BN weight 1 / bias 0,
        # zero classifier bias.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @property
    def head(self) -> nn.Module:
        return self.fc

    def _body(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        return [f0, f1, f2, f3], F.relu(self.bn1(f3))


def build(name: str, num_classes: int, in_channels: int = 3) -> WideResNet:
    """Build the Wide ResNet called ``name`` (a key of :data:`CONFIGS`)."""
    depth, widen_factor = CONFIGS[name]
    return WideResNet(depth, widen_factor, num_classes, in_channels)
