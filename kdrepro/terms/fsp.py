"""Flow of solution procedure (Yim et al., CVPR 2017), as RepDistiller's ``FSP``.

The FSP matrix of two consecutive maps ``a`` (``[B, C_a, H, W]``) and ``b`` (``C_b``), sizes matched, is
``G[n, i, j] = mean_{h,w} b[n, i, h, w] * a[n, j, h, w]``. FSP transfers them in an initialisation stage
only: for ``init_epochs`` the student's feature layers are trained on
``sum_k mean (G_s^k - G_t^k)^2`` over every consecutive pair of ``stages`` (the stem's map included,
RepDistiller's ``feat[:-1]``); then the run trains as usual and FSP adds nothing to its loss
(RepDistiller: ``loss_kd = 0`` for ``fsp``, whatever ``-b``). ``weight`` scales the stage's loss
(RepDistiller: 1). Student and teacher must have the same channel counts at every map, unless
``connector: conv`` (kdrepro's extension, for pairs RepDistiller refuses): each student map whose channels
differ from the teacher's passes through a 1x1 convolution and BatchNorm to the teacher's channels (AB's
connector), trained in the stage with the student's feature layers, before its FSP matrices are taken.
"""
from __future__ import annotations

import functools

from typing import Literal

from torch import Tensor, nn

from ..values import Weight
from .base import LossTerm, StepInputs, TermContext, register_term
from ._init import InitStageParams, feature_parameters
from ._shapes import feature_shapes, pool_to_common_size

__all__ = ["FSPParams", "FlowOfSolution", "fsp_matrices", "fsp_loss"]


def fsp_matrices(maps: list[Tensor]) -> list[Tensor]:
    """``[G(maps[0], maps[1]), G(maps[1], maps[2]), ...]``, each ``[B, C_{k+1}, C_k]``."""
    out = []
    for low, high in zip(maps[:-1], maps[1:]):
        low, high = pool_to_common_size(low, high)
        out.append(high.flatten(2) @ low.flatten(2).transpose(1, 2) / low.shape[2] / low.shape[3])
    return out


def fsp_loss(student_maps: list[Tensor], teacher_maps: list[Tensor]) -> Tensor:
    """``sum_k mean (G_s^k - G_t^k)^2`` (teacher maps detached)."""
    pairs = zip(fsp_matrices(student_maps), fsp_matrices([t.detach() for t in teacher_maps]))
    return sum((g_s - g_t).pow(2).mean() for g_s, g_t in pairs)


class FSPParams(InitStageParams):
    weight: Weight = 1.0          # on the initialisation stage's loss (RepDistiller: unweighted)
    #: ``none`` (RepDistiller: equal channels required) or ``conv`` (1x1 conv + BN where the channels differ)
    connector: Literal["none", "conv"] = "none"


@functools.lru_cache(maxsize=None)
def _channels(model_name: str) -> tuple[int, ...]:
    from ..models import create_model

    return tuple(create_model(model_name, 10).stage_channels)


@register_term
class FlowOfSolution(LossTerm):
    """FSP's initialisation stage (module docstring); no part in the main phase's loss."""

    name = "fsp"
    display = "FSP"
    Params = FSPParams
    needs = frozenset({"student_features", "teacher_features"})

    @classmethod
    def check(cls, params: FSPParams, student_model: str, teacher_model: str | None) -> None:
        if teacher_model is None:
            return
        s, t = _channels(student_model), _channels(teacher_model)
        if s != t and params.connector == "none":
            raise ValueError(f"losses.fsp: the student {student_model} (channels {list(s)}) and the teacher "
                             f"{teacher_model} ({list(t)}) differ in channels; FSP needs equal channel counts "
                             "at every stage (RepDistiller refuses such pairs too), or set losses.fsp.connector=conv")

    def __init__(self, params: FSPParams, ctx: TermContext):
        super().__init__(params, ctx)
        self.connectors = nn.ModuleList()
        if params.connector == "conv":
            pairs = zip(feature_shapes(ctx.student, ctx.image_shape)[0], feature_shapes(ctx.teacher, ctx.image_shape)[0])
            self.connectors.extend(nn.Identity() if s[0] == t[0] else
                                   nn.Sequential(nn.Conv2d(s[0], t[0], 1, bias=False), nn.BatchNorm2d(t[0]))
                                   for s, t in pairs)

    def init_epochs(self) -> int:
        return self.params.init_epochs

    def init_parameters(self, student: nn.Module) -> list[nn.Parameter]:
        return list(self.connectors.parameters()) + feature_parameters(student)

    def init_loss(self, step: StepInputs) -> Tensor:
        maps = [s.float() for s in step.student_features["stages"]]
        if len(self.connectors):
            maps = [conn(m) for conn, m in zip(self.connectors, maps)]
        return self.params.weight * fsp_loss(maps, [t.float() for t in step.teacher_features["stages"]])

    def forward(self, step: StepInputs):
        return {}
