"""Hinton et al.'s soft-target KD term: ``weight * T^2 * KL(softmax(z_t/T) || softmax(z_s/T))``."""
from __future__ import annotations

from .. import losses
from ..values import Temperature, Weight
from .base import LossTerm, StepInputs, TermParams, register_term


class KDParams(TermParams):
    weight: Weight = 0.9          # RepDistiller's -b 0.9 with T = 4 (the slkd recipe sets 0.1 and 3)
    T: Temperature = 4.0


@register_term
class KnowledgeDistillation(LossTerm):
    """:func:`kdrepro.losses.kd_loss` (batch-mean KL, scaled by ``T^2``) on the teacher's logits."""

    name = "kd"
    display = "KD"
    Params = KDParams
    needs = frozenset({"teacher_logits"})

    def forward(self, step: StepInputs):
        p = self.params
        return {"kd": p.weight * losses.kd_loss(step.student_logits.float(), step.teacher_logits, p.T)}
