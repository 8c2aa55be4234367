"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017) on every stage's spatial attention map."""
from __future__ import annotations

from .. import losses
from ..values import NonNegativeFloat, PositiveFloat
from .base import LossTerm, StepInputs, TermParams, register_term


class ATParams(TermParams):
    weight: NonNegativeFloat = 1000.0       # RepDistiller's scripts/run_cifar_distill.sh: --distill attention -b 1000
    p: PositiveFloat = 2.0


@register_term
class AttentionTransfer(LossTerm):
    """``weight * sum_stages mean (Q_s - Q_t)^2`` (:func:`kdrepro.losses.attention_transfer`)."""

    name = "at"
    display = "AT"
    Params = ATParams
    needs = frozenset({"student_features", "teacher_features"})

    def forward(self, step: StepInputs):
        return {"at": self.params.weight * losses.attention_transfer(
            [f.float() for f in step.student_features["stages"]], step.teacher_features["stages"], p=self.params.p)}
