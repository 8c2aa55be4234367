"""Similarity-preserving KD (Tung & Mori, ICCV 2019), as RepDistiller's ``Similarity`` on the last stage map."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..values import Int, Weight
from .base import LossTerm, StepInputs, TermParams, register_term
from ._shapes import flat

__all__ = ["SPParams", "SimilarityPreserving", "similarity_preserving_loss"]


def similarity_preserving_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """``||normalize(F_s F_s^T) - normalize(F_t F_t^T)||_F^2 / B^2`` with ``F = f`` flattened to ``[B, -1]``
    and each row of the ``B x B`` Gram matrix L2-normalised. The teacher map is detached."""
    g_s = F.normalize(flat(f_s) @ flat(f_s).t(), dim=1)
    g_t = F.normalize(flat(f_t.detach()) @ flat(f_t.detach()).t(), dim=1)
    return (g_t - g_s).pow(2).sum() / (f_s.shape[0] ** 2)


class SPParams(TermParams):
    weight: Weight = 3000.0       # RepDistiller's scripts/run_cifar_distill.sh: --distill similarity -b 3000
    stage: Int = -1                         # RepDistiller's feat[-2]: the last stage's output


@register_term
class SimilarityPreserving(LossTerm):
    """``weight * similarity_preserving_loss(stages_s[stage], stages_t[stage])``."""

    name = "sp"
    display = "SP"
    Params = SPParams
    needs = frozenset({"student_features", "teacher_features"})

    def forward(self, step: StepInputs):
        st = self.params.stage
        return {"sp": self.params.weight * similarity_preserving_loss(step.student_features["stages"][st].float(),
                                                                      step.teacher_features["stages"][st].float())}
