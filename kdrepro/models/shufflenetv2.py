"""ShuffleNet V2 (Ma et al., 2018) for CIFAR, 1x width: ``ShuffleV2``.

RepDistiller's CIFAR variant: a 1x1 convolution stem to 24 channels (no stride, no max-pool), three
stages with 116, 232, 464 channels, each a downsampling unit followed by 3, 7, 3 basic units, a 1x1
convolution to 1024 channels with BN-ReLU, global average pooling and a linear classifier.

* Basic unit: split the channels in half; the second half goes through 1x1 conv-BN-ReLU, 3x3 depthwise
  conv-BN, 1x1 conv-BN-ReLU; concatenate with the untouched first half; shuffle with 2 groups.
* Downsampling unit: left branch 3x3 depthwise stride-2 conv-BN, 1x1 conv-BN-ReLU; right branch 1x1
  conv-BN-ReLU, 3x3 depthwise stride-2 conv-BN, 1x1 conv-BN-ReLU; concatenate; shuffle with 2 groups.

Each stage has 1 + 3, 1 + 7, 1 + 3 units, as in the paper's Table 5. Attribute names
(``conv1, bn1, layer1.0.conv1 ... bn5, layer1.1.conv1 ... bn3, conv2, bn2, linear``) follow
RepDistiller's ``models/ShuffleNetv2.py`` (identical to mdistiller's); like them, the layers keep
PyTorch's default initialisation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import ClassifierNet
from .shufflenetv1 import channel_shuffle

#: name -> (stage channels, basic units per stage after the downsampling unit, last conv channels)
CONFIGS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], int]] = {
    "ShuffleV2": ((116, 232, 464), (3, 7, 3), 1024),
}
STEM_CHANNELS = 24


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)


def _pointwise(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


class BasicUnit(nn.Module):
    """Channel-split unit that keeps shape."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.keep = channels // 2
        branch = channels - self.keep
        self.conv1 = _pointwise(branch, branch)
        self.bn1 = nn.BatchNorm2d(branch)
        self.conv2 = _depthwise(branch, 1)
        self.bn2 = nn.BatchNorm2d(branch)
        self.conv3 = _pointwise(branch, branch)
        self.bn3 = nn.BatchNorm2d(branch)

    def forward(self, x: Tensor) -> Tensor:
        kept, branch = x[:, : self.keep], x[:, self.keep :]
        out = F.relu(self.bn1(self.conv1(branch)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([kept, out], 1), 2)


class DownUnit(nn.Module):
    """Two-branch unit halving the resolution; each branch gives ``out_channels // 2`` channels."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = _depthwise(in_channels, 2)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = _pointwise(in_channels, mid)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = _pointwise(in_channels, mid)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = _depthwise(mid, 2)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = _pointwise(mid, mid)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(ClassifierNet):
    """ShuffleNet V2. Stages in ``features["stages"]``: the stem output (after ReLU), then the outputs
    of ``layer1``, ``layer2``, ``layer3``, as RepDistiller's ``f0..f3``."""

    def __init__(
        self,
        stage_channels: tuple[int, int, int],
        units: tuple[int, int, int],
        last_channels: int,
        num_classes: int,
        in_channels: int = 3,
    ) -> None:
        super().__init__(in_channels, num_classes)
        self.conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        widths = [STEM_CHANNELS, *stage_channels]
        self.layer1 = _stage(widths[0], widths[1], units[0])
        self.layer2 = _stage(widths[1], widths[2], units[1])
        self.layer3 = _stage(widths[2], widths[3], units[2])
        self.conv2 = _pointwise(widths[3], last_channels)
        self.bn2 = nn.BatchNorm2d(last_channels)
        self.linear = nn.Linear(last_channels, num_classes)
        self.stage_channels = widths

    @property
    def head(self) -> nn.Module:
        return self.linear

    def _body(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(f0)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        return [f0, f1, f2, f3], F.relu(self.bn2(self.conv2(f3)))


def _stage(in_channels: int, out_channels: int, basic_units: int) -> nn.Sequential:
    return nn.Sequential(DownUnit(in_channels, out_channels), *(BasicUnit(out_channels) for _ in range(basic_units)))


def build(name: str, num_classes: int, in_channels: int = 3) -> ShuffleNetV2:
    """Build the ShuffleNet V2 called ``name`` (a key of :data:`CONFIGS`)."""
    stage_channels, units, last_channels = CONFIGS[name]
    return ShuffleNetV2(stage_channels, units, last_channels, num_classes, in_channels)
