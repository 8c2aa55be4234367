"""Variational information distillation (Ahn et al., CVPR 2019), as RepDistiller's ``VIDLoss`` on every
stage output: a Gaussian whose mean a small 1x1-conv network predicts from the student map and whose
per-channel variance is learnt, scored by its negative log-likelihood of the teacher map."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..values import PositiveFloat, Weight
from .base import LossTerm, StepInputs, TermContext, TermParams, register_term
from ._shapes import pool_to_common_size, stage_shape_pairs

__all__ = ["VIDParams", "VariationalID", "VIDRegressor", "vid_loss"]


def vid_loss(mean: Tensor, target: Tensor, log_scale: Tensor, eps: float = 1e-5) -> Tensor:
    """``mean_{b,c,h,w} 0.5 * ((mu - t)^2 / var_c + log var_c)``, ``var_c = softplus(log_scale_c) + eps``."""
    var = (F.softplus(log_scale) + eps).view(1, -1, 1, 1)
    return (0.5 * ((mean - target.detach()).pow(2) / var + torch.log(var))).mean()


class VIDRegressor(nn.Module):
    """The predicted mean (three 1x1 convolutions without bias, ReLUs between) and the log-scale of the
    variance, initialised so that the variance starts at ``init_var`` (RepDistiller: 5)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, init_var: float, eps: float):
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.ReLU(),
            nn.Conv2d(mid_channels, mid_channels, 1, bias=False), nn.ReLU(),
            nn.Conv2d(mid_channels, out_channels, 1, bias=False))
        self.log_scale = nn.Parameter(torch.full((out_channels,), math.log(math.expm1(init_var - eps))))
        self.eps = eps

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        f_s, f_t = pool_to_common_size(f_s, f_t)
        return vid_loss(self.regressor(f_s), f_t, self.log_scale, self.eps)


class VIDParams(TermParams):
    weight: Weight = 1.0          # RepDistiller's scripts/run_cifar_distill.sh: --distill vid -b 1
    init_var: PositiveFloat = 5.0           # VIDLoss(init_pred_var=5.0)
    eps: PositiveFloat = 1e-5               # VIDLoss(eps=1e-5)


@register_term
class VariationalID(LossTerm):
    """``weight * sum_stages VIDRegressor_k(stages_s[k], stages_t[k])`` over the stage outputs (no stem);
    the mid width is the teacher's (RepDistiller's ``VIDLoss(s, t, t)``). Trained with the student."""

    name = "vid"
    display = "VID"
    Params = VIDParams
    needs = frozenset({"student_features", "teacher_features"})

    def __init__(self, params: VIDParams, ctx: TermContext):
        super().__init__(params, ctx)
        self.heads = nn.ModuleList(VIDRegressor(s[0], t[0], t[0], params.init_var, params.eps)
                                   for s, t in stage_shape_pairs(ctx.student, ctx.teacher, ctx.image_shape))

    def forward(self, step: StepInputs):
        pairs = zip(step.student_features["stages"][1:], step.teacher_features["stages"][1:], self.heads)
        return {"vid": self.params.weight * sum(head(s.float(), t.float()) for s, t, head in pairs)}
