"""Neuron selectivity transfer (Huang & Wang, 2017), as RepDistiller's ``NSTLoss``: the squared MMD with a
degree-2 polynomial kernel between the channels' spatial activation patterns, on every stage output."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..values import Weight
from .base import LossTerm, StepInputs, TermParams, register_term
from ._shapes import pool_to_common_size

__all__ = ["NSTParams", "NeuronSelectivityTransfer", "nst_loss"]


def _kernel_mean(a: Tensor, b: Tensor) -> Tensor:
    """``mean_{n,i,j} <a[n,i], b[n,j]>^2`` over ``[B, C, HW]`` inputs."""
    return (a @ b.transpose(1, 2)).pow(2).mean()


def nst_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """``MMD^2 = mean k(t, t) + mean k(s, s) - 2 mean k(s, t)``, ``k(x, y) = <x, y>^2``, over each map's
    channels flattened to ``[B, C, H*W]`` and L2-normalised along ``H*W`` (sizes matched first)."""
    f_s, f_t = pool_to_common_size(f_s, f_t.detach())
    s = F.normalize(f_s.flatten(2), dim=2)
    t = F.normalize(f_t.flatten(2), dim=2)
    return _kernel_mean(t, t) + _kernel_mean(s, s) - 2 * _kernel_mean(s, t)


class NSTParams(TermParams):
    weight: Weight = 50.0         # RepDistiller's scripts/run_cifar_distill.sh: --distill nst -b 50


@register_term
class NeuronSelectivityTransfer(LossTerm):
    """``weight * sum_stages nst_loss`` over the stage outputs (RepDistiller's ``feat[1:-1]``: no stem),
    the first ``n`` of each network paired, ``n`` the smaller count (RepDistiller's ``zip``)."""

    name = "nst"
    display = "NST"
    Params = NSTParams
    needs = frozenset({"student_features", "teacher_features"})

    def forward(self, step: StepInputs):
        pairs = zip(step.student_features["stages"][1:], step.teacher_features["stages"][1:])
        return {"nst": self.params.weight * sum(nst_loss(s.float(), t.float()) for s, t in pairs)}
