"""FitNets (Romero et al., ICLR 2015): a hint on one stage's feature map, through a trainable regressor.

Where the two maps differ in size, ``regressor`` picks the convention: ``pool`` (kdrepro's first one, the
default, so the committed runs keep their ids) is a 1x1 (or 3x3) convolution whose output and the teacher's
map are matched by adaptive-average-pooling the larger one; ``convreg`` is RepDistiller's ``ConvReg``
(:class:`kdrepro.terms.convreg.ConvReg`: a strided convolution where the student's map is twice the
teacher's size, a transposed one where it is half), which the ``paper`` profile uses to compare with
published FitNets numbers. With equal sizes both are a 1x1 convolution, BatchNorm and ReLU.
"""
from __future__ import annotations

import functools
from typing import Literal

import torch.nn.functional as F
from pydantic import Field

from .. import losses
from ..values import Int, Weight
from .base import LossTerm, StepInputs, TermContext, TermParams, register_term
from ._shapes import feature_shapes
from .convreg import ConvReg


class FitNetParams(TermParams):
    weight: Weight = 100.0        # RepDistiller's scripts/run_cifar_distill.sh: --distill hint -b 100
    stage: Int = 2               # index into the models' features["stages"] (RepDistiller's hint layer 2)
    kernel_size: Literal[1, 3] = 1           # of the ``pool`` regressor
    #: ``pool`` (kdrepro's first convention) or ``convreg`` (RepDistiller's ConvReg): see the module docstring
    regressor: Literal["pool", "convreg"] = Field("pool", json_schema_extra={"neutral": "pool"})


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
        if params.regressor == "convreg" and params.kernel_size != 1:
            raise ValueError("losses.fitnet.kernel_size applies to regressor: pool only; ConvReg picks its own "
                             "kernel from the maps' sizes (leave kernel_size at 1)")

    def __init__(self, params: FitNetParams, ctx: TermContext):
        super().__init__(params, ctx)
        if params.regressor == "convreg":
            s_shape = feature_shapes(ctx.student, ctx.image_shape)[0][params.stage]
            t_shape = feature_shapes(ctx.teacher, ctx.image_shape)[0][params.stage]
            self.convreg = ConvReg(s_shape, t_shape)
        else:
            s_ch, t_ch = ctx.student.stage_channels, ctx.teacher.stage_channels
            self.hint = losses.FitNetHint(s_ch[params.stage], t_ch[params.stage], kernel_size=params.kernel_size)

    def forward(self, step: StepInputs):
        st = self.params.stage
        f_s, f_t = step.student_features["stages"][st].float(), step.teacher_features["stages"][st]
        if self.params.regressor == "convreg":
            return {"fitnet": self.params.weight * F.mse_loss(self.convreg(f_s), f_t.detach().float())}
        return {"fitnet": self.params.weight * self.hint(f_s, f_t)}
