"""CIFAR ResNets (He et al., 2016, section 4.2): ``resnet8 ... resnet110``, ``resnet8x4``, ``resnet32x4``.

A 3x3 stem, three stages of ``n = (depth - 2) / 6`` basic blocks at strides 1, 2, 2, global average
pooling and a linear classifier. The configurations, attribute names and initialisation follow
RepDistiller's ``models/resnet.py`` (identical in mdistiller's ``mdistiller/models/cifar/resnet.py``),
so their checkpoints load unchanged (keys ``conv1, bn1, layer1.0.conv1, ..., layer1.0.downsample.0, fc``).

Shortcuts on a change of shape (``shortcut=``):

* ``"conv"`` (default): 1x1 convolution with the block's stride plus BatchNorm, as in RepDistiller and
  in the SLKD authors' ``network.py`` (github HaoranZhao1988/kd, ``resblock.ds``; their resnet20 and
  resnet110 are this network with the stages named ``res1..res3`` and the shortcut ``ds``).
* ``"pad"``: He et al.'s option A, strided identity subsampling plus zero channel padding; it has no
  parameters, so a model built this way has no ``downsample`` keys.

``resnet8x4``/``resnet32x4`` widen the stem to 32 channels and the stages to 64/128/256, so their first
block also changes width at stride 1 and gets a shortcut.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._base import ClassifierNet

#: name -> (depth, [stem width, stage 1, stage 2, stage 3 widths])
CONFIGS: dict[str, tuple[int, tuple[int, int, int, int]]] = {
    "resnet8": (8, (16, 16, 32, 64)),
    "resnet14": (14, (16, 16, 32, 64)),
    "resnet20": (20, (16, 16, 32, 64)),
    "resnet32": (32, (16, 16, 32, 64)),
    "resnet44": (44, (16, 16, 32, 64)),
    "resnet56": (56, (16, 16, 32, 64)),
    "resnet110": (110, (16, 16, 32, 64)),
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}
SHORTCUTS = ("conv", "pad")


class PadShortcut(nn.Module):
    """He et al. (2016) option A: take every ``stride``-th pixel, zero-pad the channels to ``out_channels``.

    The padding is split evenly before and after the input channels (the odd one goes after).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"PadShortcut cannot shrink channels ({in_channels} -> {out_channels})")
        self.stride = stride
        self.pad_before = (out_channels - in_channels) // 2
        self.pad_after = out_channels - in_channels - self.pad_before

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            if shortcut == "conv":
                self.downsample = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
                )
            else:
                self.downsample = PadShortcut(in_planes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class CifarResNet(ClassifierNet):
    """CIFAR ResNet of depth ``6n + 2``. Stages in ``features["stages"]``: stem output (after ReLU),
    then the outputs of ``layer1``, ``layer2``, ``layer3``, as RepDistiller's ``f0..f3``."""

    def __init__(
        self,
        depth: int,
        widths: tuple[int, int, int, int],
        num_classes: int,
        in_channels: int = 3,
        shortcut: str = "conv",
    ) -> None:
        super().__init__(in_channels, num_classes)
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, ...), got {depth}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        blocks_per_stage = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = _stage(widths[0], widths[1], blocks_per_stage, 1, shortcut)
        self.layer2 = _stage(widths[1], widths[2], blocks_per_stage, 2, shortcut)
        self.layer3 = _stage(widths[2], widths[3], blocks_per_stage, 2, shortcut)
        self.fc = nn.Linear(widths[3], num_classes)
        self.stage_channels = list(widths)
        # RepDistiller's initialisation: He normal (fan_out) convolutions, BN weight 1 / bias 0,
        # PyTorch's default for the classifier.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def head(self) -> nn.Module:
        return self.fc

    def _body(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(f0)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        return [f0, f1, f2, f3], f3


def _stage(in_planes: int, planes: int, blocks: int, stride: int, shortcut: str) -> nn.Sequential:
    layers = [BasicBlock(in_planes, planes, stride, shortcut)]
    layers += [BasicBlock(planes, planes, 1, shortcut) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def build(name: str, num_classes: int, in_channels: int = 3, shortcut: str = "conv") -> CifarResNet:
    """Build the CIFAR ResNet called ``name`` (a key of :data:`CONFIGS`)."""
    depth, widths = CONFIGS[name]
    return CifarResNet(depth, widths, num_classes, in_channels, shortcut)
