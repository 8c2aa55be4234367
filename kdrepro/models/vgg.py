"""VGG with BatchNorm for CIFAR: ``vgg8, vgg11, vgg13`` (RepDistiller's ``vgg8_bn, vgg11_bn, vgg13_bn``).

Five convolutional blocks (3x3 conv with bias, BN, ReLU), max-pooling between the first four, global
average pooling and a single linear classifier (no fully connected hidden layers). The block widths are
those of Simonyan and Zisserman's configurations A (vgg11) and B (vgg13) and RepDistiller's "S" (vgg8).

Attribute names (``block0.0`` ... ``block4.k``, ``classifier``), initialisation and the pooling schedule
follow RepDistiller's ``models/vgg.py`` (identical to mdistiller's), so their checkpoints load unchanged.
RepDistiller applies the fourth max-pool only to 64-pixel (TinyImageNet) inputs and never at 32x32; here
it is applied to inputs at least 64 pixels high, which is the same at both sizes. The smallest input
that passes through is 8x8 (three 2x2 max-pools down to 1x1).
"""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from ._base import ClassifierNet

#: name -> output channels of the convolutions in each of the five blocks
CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}
#: inputs at least this high get the fourth max-pool (RepDistiller: ``if h == 64``)
POOL3_MIN_HEIGHT = 64


def _conv_block(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    """conv-BN-ReLU repeated, without the final ReLU (the network applies it, keeping the
    pre-activation available as in RepDistiller)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_channels = width
    return nn.Sequential(*layers[:-1])


class VGG(ClassifierNet):
    """VGG-BN. Stages in ``features["stages"]``: the ReLU outputs of ``block0 ... block4`` (before each
    max-pool), as RepDistiller's ``f0..f4``."""

    def __init__(self, widths: tuple[tuple[int, ...], ...], num_classes: int, in_channels: int = 3) -> None:
        super().__init__(in_channels, num_classes)
        self.block0 = _conv_block(in_channels, widths[0])
        self.block1 = _conv_block(widths[0][-1], widths[1])
        self.block2 = _conv_block(widths[1][-1], widths[2])
        self.block3 = _conv_block(widths[2][-1], widths[3])
        self.block4 = _conv_block(widths[3][-1], widths[4])
        self.classifier = nn.Linear(widths[4][-1], num_classes)
        self.stage_channels = [w[-1] for w in widths]
        # RepDistiller's initialisation: N(0, 2 / (k*k*out_channels)) convolutions with zero bias,
        # BN weight 1 / bias 0, N(0, 0.01) classifier with zero bias.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(m.bias)
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
        pool3 = x.shape[-2] >= POOL3_MIN_HEIGHT
        f0 = F.relu(self.block0(x))
        f1 = F.relu(self.block1(F.max_pool2d(f0, 2)))
        f2 = F.relu(self.block2(F.max_pool2d(f1, 2)))
        f3 = F.relu(self.block3(F.max_pool2d(f2, 2)))
        f4 = F.relu(self.block4(F.max_pool2d(f3, 2) if pool3 else f3))
        return [f0, f1, f2, f3, f4], f4


def build(name: str, num_classes: int, in_channels: int = 3) -> VGG:
    """Build the VGG called ``name`` (a key of :data:`CONFIGS`)."""
    return VGG(CONFIGS[name], num_classes, in_channels)
