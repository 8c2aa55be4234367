"""RepDistiller's convolutional regressor (``models/util.py: ConvReg``): maps a student feature map onto a
teacher map's channels *and* size.

The convolution is chosen from the two shapes: a 3x3 convolution of stride 2 (padding 1) where the student
map is twice the teacher's height, a 4x4 transposed convolution of stride 2 (padding 1) where it is half,
otherwise a ``(1 + H_s - H_t) x (1 + W_s - W_t)`` convolution (1x1 for equal sizes). A BatchNorm follows,
and a ReLU unless ``relu=False`` (AB's connector).
"""
from __future__ import annotations

from torch import Tensor, nn


class ConvReg(nn.Module):
    def __init__(self, student_shape: tuple[int, int, int], teacher_shape: tuple[int, int, int],
                 relu: bool = True) -> None:
        super().__init__()
        s_c, s_h, s_w = student_shape
        t_c, t_h, t_w = teacher_shape
        if s_h == 2 * t_h:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif 2 * s_h == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        elif s_h >= t_h and s_w >= t_w:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise ValueError(f"no RepDistiller regressor maps a student map {tuple(student_shape)} onto a "
                             f"teacher map {tuple(teacher_shape)} (the student's may be at most half as high)")
        self.bn = nn.BatchNorm2d(t_c)
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))
