"""MobileNetV2 (Sandler et al., 2018) for CIFAR, width 0.5: ``MobileNetV2`` (RepDistiller's ``mobile_half``).

RepDistiller's variant (from the RCO paper, Jin et al., 2019): expansion ratio T = 6, width multiplier
0.5 on every layer except the 1280-channel last convolution, a stride-2 3x3 stem, seven groups of
inverted residual blocks with strides 1, 1, 2, 2, 1, 2, 1 (the ImageNet schedule with the second
stride removed), a 1x1 convolution to 1280 channels, global average pooling and a linear classifier.
Every block has its 1x1 expansion convolution, even where the ratio is 1.

Attribute names (``conv1.0``, ``blocks.i.j.conv.0 ... conv.7``, ``conv2.0``, ``classifier.0``) and
initialisation follow RepDistiller's ``models/mobilenetv2.py`` (identical to mdistiller's), so their
checkpoints load unchanged. RepDistiller pools with ``AvgPool2d(2, ceil_mode=True)``, which at 32x32
(a 2x2 last map) is the global average used here.
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from ._base import ClassifierNet

#: (expansion ratio or None for T, output channels, blocks, stride of the first block) per group
GROUPS: tuple[tuple[int | None, int, int, int], ...] = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
#: indices into ``blocks`` whose outputs are feature stages (after the stem), as RepDistiller's f1..f4
STAGE_GROUPS = (1, 2, 4, 6)
#: name -> (expansion ratio T, width multiplier)
CONFIGS: dict[str, tuple[int, float]] = {"MobileNetV2": (6, 0.5)}
LAST_CHANNELS = 1280


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand - 3x3 depthwise - 1x1 linear projection; residual when shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(ClassifierNet):
    """MobileNetV2-T-width. Stages in ``features["stages"]``: the stem output, then the outputs of
    block groups 1, 2, 4 and 6 (the last group before each stride change and the last one), as
    RepDistiller's ``f0..f4``."""

    def __init__(self, expand_ratio: int, width_mult: float, num_classes: int, in_channels: int = 3) -> None:
        super().__init__(in_channels, num_classes)
        channels = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(in_channels, channels, 3, 2)
        self.stage_channels = [channels]
        self.blocks = nn.ModuleList()
        for index, (ratio, width, count, first_stride) in enumerate(GROUPS):
            out_channels = int(width * width_mult)
            layers = []
            for stride in [first_stride] + [1] * (count - 1):
                layers.append(InvertedResidual(channels, out_channels, stride, ratio or expand_ratio))
                channels = out_channels
            self.blocks.append(nn.Sequential(*layers))
            if index in STAGE_GROUPS:
                self.stage_channels.append(channels)
        last_channels = int(LAST_CHANNELS * width_mult) if width_mult > 1.0 else LAST_CHANNELS
        self.conv2 = _conv_bn_relu(channels, last_channels, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(last_channels, num_classes))
        # RepDistiller's initialisation: N(0, 2 / (k*k*out_channels)) convolutions, BN weight 1 / bias 0,
        # N(0, 0.01) classifier with zero bias.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def head(self) -> nn.Module:
        return self.classifier

    def _body(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        out = self.conv1(x)
        stages = [out]
        for index, group in enumerate(self.blocks):
            out = group(out)
            if index in STAGE_GROUPS:
                stages.append(out)
        return stages, self.conv2(out)


def build(name: str, num_classes: int, in_channels: int = 3) -> MobileNetV2:
    """Build the MobileNetV2 called ``name`` (a key of :data:`CONFIGS`)."""
    expand_ratio, width_mult = CONFIGS[name]
    return MobileNetV2(expand_ratio, width_mult, num_classes, in_channels)
