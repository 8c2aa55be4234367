"""Relational KD (Park et al., CVPR 2019), as RepDistiller's ``RKDLoss`` on the pooled features: the
distance-wise and the angle-wise relations of the batch, each compared by a smooth-L1 (Huber) loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..values import NonNegativeFloat, Weight
from .base import LossTerm, StepInputs, TermParams, register_term
from ._shapes import flat

__all__ = ["RKDParams", "RelationalKD", "rkd_loss"]


def _distances(e: Tensor) -> Tensor:
    """Pairwise Euclidean distances, ``sqrt(max(|a|^2 + |b|^2 - 2ab, 1e-12))``, zero diagonal, divided by
    the mean of the positive ones (RepDistiller's ``pdist`` and normalisation)."""
    sq = e.pow(2).sum(1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=1e-12).sqrt()
    d = d * (1 - torch.eye(len(e), dtype=d.dtype, device=d.device))
    return d / d[d > 0].mean()


def _angles(e: Tensor) -> Tensor:
    """``cos`` of the angle at ``j`` between ``i`` and ``k``: ``<n(e_i - e_j), n(e_k - e_j)>``, flattened."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)


def rkd_loss(f_s: Tensor, f_t: Tensor, distance_weight: float = 25.0, angle_weight: float = 50.0) -> Tensor:
    """``distance_weight * huber(D_s, D_t) + angle_weight * huber(A_s, A_t)`` (mean smooth-L1, beta 1)."""
    s, t = flat(f_s), flat(f_t.detach())
    loss_d = F.smooth_l1_loss(_distances(s), _distances(t))
    loss_a = F.smooth_l1_loss(_angles(s), _angles(t))
    return distance_weight * loss_d + angle_weight * loss_a


class RKDParams(TermParams):
    weight: Weight = 1.0          # RepDistiller's scripts/run_cifar_distill.sh: --distill rkd -b 1
    distance_weight: NonNegativeFloat = 25.0  # RKDLoss(w_d=25)
    angle_weight: NonNegativeFloat = 50.0     # RKDLoss(w_a=50)


@register_term
class RelationalKD(LossTerm):
    """``weight * rkd_loss(pooled_s, pooled_t, distance_weight, angle_weight)``."""

    name = "rkd"
    display = "RKD"
    Params = RKDParams
    needs = frozenset({"student_features", "teacher_features"})

    def forward(self, step: StepInputs):
        p = self.params
        return {"rkd": p.weight * rkd_loss(step.student_features["pooled"].float(),
                                           step.teacher_features["pooled"].float(),
                                           p.distance_weight, p.angle_weight)}
