"""FitNets (Romero et al., ICLR 2015): a hint on one stage's feature map, through a trainable regressor."""
from __future__ import annotations

import functools
from typing import Literal

from .. import losses
from ..values import NonNegativeFloat, Int
from .base import LossTerm, StepInputs, TermContext, TermParams, register_term


class FitNetParams(TermParams):
    weight: NonNegativeFloat = 100.0        # RepDistiller's scripts/run_cifar_distill.sh: --distill hint -b 100
    stage: Int = 2               # index into the models' features["stages"] (RepDistiller's hint layer 2)
    kernel_size: Literal[1, 3] = 1


@functools.lru_cache(maxsize=None)
def _stages(model_name: str) -> int:
    from ..models import create_model

    return len(create_model(model_name, 10).stage_channels)


@register_term
class FitNet(LossTerm):
    """``weight * MSE(r(f_s), f_t)`` at ``stage`` (:class:`kdrepro.losses.FitNetHint`, RepDistiller's
    ConvReg + ``nn.MSELoss``). The regressor is trained with the student and saved with the run."""

    name = "fitnet"
    display = "FitNets"
    Params = FitNetParams
    needs = frozenset({"student_features", "teacher_features"})

    @classmethod
    def check(cls, params: FitNetParams, student_model: str, teacher_model: str | None) -> None:
        for role, model in (("student", student_model), ("teacher", teacher_model)):
            if model is None:
                continue
            n = _stages(model)
            if not -n <= params.stage < n:
                raise ValueError(f"losses.fitnet.stage={params.stage}: out of range for the {role} {model} "
                                 f"({n} stages: use -{n}..{n - 1})")

    def __init__(self, params: FitNetParams, ctx: TermContext):
        super().__init__(params, ctx)
        s_ch, t_ch = ctx.student.stage_channels, ctx.teacher.stage_channels
        self.hint = losses.FitNetHint(s_ch[params.stage], t_ch[params.stage], kernel_size=params.kernel_size)

    def forward(self, step: StepInputs):
        st = self.params.stage
        return {"fitnet": self.params.weight * self.hint(step.student_features["stages"][st].float(),
                                                         step.teacher_features["stages"][st])}
