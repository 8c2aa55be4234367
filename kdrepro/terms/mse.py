"""SLKD's logit MSE (the authors' ``criterionLogits``), applied in the curriculum phases only."""
from __future__ import annotations

from typing import Literal

import torch

from .. import losses
from ..values import Weight
from .base import LossTerm, StepInputs, TermParams, register_term


class MSEParams(TermParams):
    weight: Weight = 0.05
    #: ``teacher`` (the authors' code: ``criterionLogits(output_s, output_t.detach())``) or ``snapshot``
    #: (the phase's frozen student: the authors load it as ``tempsnet`` but never use it; an option, the
    #: quirk ``mse_to_snapshot`` of earlier versions)
    target: Literal["teacher", "snapshot"] = "teacher"


@register_term
class LogitMSE(LossTerm):
    """``weight * MSE(z_s, z_target)`` averaged over all elements, in curriculum phases only."""

    name = "mse"
    display = "logit MSE"
    Params = MSEParams
    curriculum_only = True

    @classmethod
    def requirements(cls, params: MSEParams):
        return frozenset({"teacher_logits"} if params.target == "teacher" else {"snapshot"})

    def forward(self, step: StepInputs):
        if self.params.target == "snapshot":
            with torch.no_grad():
                target = step.snapshot(step.images).float()
        else:
            target = step.teacher_logits
        return {"mse": self.params.weight * losses.logit_mse(step.student_logits.float(), target)}
