"""ShuffleNet V1 (Zhang et al., 2018) for CIFAR, 3 groups: ``ShuffleV1``.

RepDistiller's CIFAR variant: a 1x1 convolution stem to 24 channels (no stride, no max-pool), three
stages of 4, 8, 4 bottleneck units with 240, 480, 960 output channels, global average pooling and a
linear classifier. A unit is grouped 1x1 conv - BN - ReLU - channel shuffle - 3x3 depthwise conv (stride
2 in a stage's first unit) - BN - grouped 1x1 conv - BN, added to the input (stride 1) or concatenated
with a 3x3 average-pooled input (stride 2), then ReLU. As in the paper, the very first 1x1 convolution
(24 input channels) is not grouped.

Attribute names (``conv1, bn1, layer1.0.conv1 ... bn3, linear``) follow RepDistiller's
``models/ShuffleNetv1.py`` (identical to mdistiller's), so their checkpoints load unchanged; like them,
the layers keep PyTorch's default initialisation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import ClassifierNet

#: name -> (stage output channels, units per stage, groups)
CONFIGS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], int]] = {
    "ShuffleV1": ((240, 480, 960), (4, 8, 4), 3),
}
STEM_CHANNELS = 24


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of ``groups`` equal groups: channel ``g * (C // groups) + i`` moves to
    position ``i * groups + g``."""
    batch, channels, height, width = x.shape
    x = x.reshape(batch, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


class ShuffleUnit(nn.Module):
    """ShuffleNet unit producing ``out_planes`` new channels (concatenated to the input at stride 2)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int, group_first: bool) -> None:
        super().__init__()
        self.stride = stride
        mid_planes = out_planes // 4
        self.first_groups = groups if group_first else 1
        self.conv1 = nn.Conv2d(in_planes, mid_planes, 1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.conv2 = nn.Conv2d(mid_planes, mid_planes, 3, stride=stride, padding=1, groups=mid_planes, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)

    def forward(self, x: Tensor) -> Tensor:
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            shortcut = F.avg_pool2d(x, 3, stride=2, padding=1)
            return F.relu(torch.cat([out, shortcut], 1))
        return F.relu(out + x)


class ShuffleNetV1(ClassifierNet):
    """ShuffleNet V1. Stages in ``features["stages"]``: the stem output (after ReLU), then the outputs
    of ``layer1``, ``layer2``, ``layer3``, as RepDistiller's ``f0..f3``."""

    def __init__(
        self,
        stage_planes: tuple[int, int, int],
        units: tuple[int, int, int],
        groups: int,
        num_classes: int,
        in_channels: int = 3,
    ) -> None:
        super().__init__(in_channels, num_classes)
        self.conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.layer1 = _stage(STEM_CHANNELS, stage_planes[0], units[0], groups, group_first=False)
        self.layer2 = _stage(stage_planes[0], stage_planes[1], units[1], groups, group_first=True)
        self.layer3 = _stage(stage_planes[1], stage_planes[2], units[2], groups, group_first=True)
        self.linear = nn.Linear(stage_planes[2], num_classes)
        self.stage_channels = [STEM_CHANNELS, *stage_planes]

    @property
    def head(self) -> nn.Module:
        return self.linear

    def _body(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(f0)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        return [f0, f1, f2, f3], f3


def _stage(in_planes: int, out_planes: int, units: int, groups: int, group_first: bool) -> nn.Sequential:
    """First unit: stride 2, ``out_planes - in_planes`` new channels concatenated to the pooled input;
    the rest: stride 1, residual. Only the very first unit of the network has an ungrouped conv1."""
    layers = [ShuffleUnit(in_planes, out_planes - in_planes, 2, groups, group_first)]
    layers += [ShuffleUnit(out_planes, out_planes, 1, groups, True) for _ in range(units - 1)]
    return nn.Sequential(*layers)


def build(name: str, num_classes: int, in_channels: int = 3) -> ShuffleNetV1:
    """Build the ShuffleNet V1 called ``name`` (a key of :data:`CONFIGS`)."""
    stage_planes, units, groups = CONFIGS[name]
    return ShuffleNetV1(stage_planes, units, groups, num_classes, in_channels)
