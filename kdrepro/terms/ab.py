"""Activation boundaries (Heo et al., AAAI 2019), as RepDistiller's ``ABLoss`` and ``Connector``.

AB transfers the teacher's activation boundaries (which neurons are on, ``t > 0``) in an initialisation
stage only: for ``init_epochs`` the student's feature layers and a connector per stage output (identity
where the shapes agree, else RepDistiller's ``ConvReg`` without ReLU) are trained on the AB loss alone;
then the run trains as usual, and AB adds nothing to its loss (RepDistiller: ``loss_kd = 0`` for
``abound``, whatever ``-b``). ``weight`` scales the stage's loss (RepDistiller: 1).

Deviation: RepDistiller feeds AB the stage outputs *before* their last ReLU (``preact=True``); kdrepro's
networks return them after it. The teacher's boundary ``t > 0`` is the same either way (``relu(t) > 0``
iff ``t > 0``); the student side passes through the connector, which has no ReLU, wherever the
shapes differ, and is the post-ReLU map where they agree (there the ``t <= 0`` part of the loss can only
reach 0 at the map's value 0, not below ``-margin``).
"""
from __future__ import annotations

from torch import Tensor, nn

from ..values import PositiveFloat, Weight
from .base import LossTerm, StepInputs, TermContext, register_term
from ._init import InitStageParams, feature_parameters
from ._shapes import stage_shape_pairs
from .convreg import ConvReg

__all__ = ["ABParams", "ActivationBoundaries", "ab_loss"]


def _alternative_l2(source: Tensor, target: Tensor, margin: float) -> Tensor:
    off = (source > -margin) & (target <= 0)
    on = (source <= margin) & (target > 0)
    return ((source + margin).pow(2) * off + (source - margin).pow(2) * on).sum()


def ab_loss(sources: list[Tensor], targets: list[Tensor], margin: float = 1.0) -> Tensor:
    """``sum_k 2^(k - n + 1) * 3/1000 * (1/B) * sum [(s + m)^2 if s > -m and t <= 0; (s - m)^2 if s <= m
    and t > 0]`` over ``n`` pairs of maps: RepDistiller's weights, halving from the last map back."""
    n, batch = len(sources), sources[0].shape[0]
    total = sources[0].new_zeros(())
    for k, (s, t) in enumerate(zip(sources, targets)):
        total = total + 2.0 ** (k - n + 1) * _alternative_l2(s, t.detach(), margin) / batch / 1000 * 3
    return total


class ABParams(InitStageParams):
    weight: Weight = 1.0          # on the initialisation stage's loss (RepDistiller: unweighted)
    margin: PositiveFloat = 1.0             # ABLoss(margin=1.0)


@register_term
class ActivationBoundaries(LossTerm):
    """AB's initialisation stage (module docstring); no part in the main phase's loss."""

    name = "ab"
    display = "AB"
    Params = ABParams
    needs = frozenset({"student_features", "teacher_features"})

    def __init__(self, params: ABParams, ctx: TermContext):
        super().__init__(params, ctx)
        self.connectors = nn.ModuleList(nn.Identity() if s[:2] == t[:2] else ConvReg(s, t, relu=False)
                                        for s, t in stage_shape_pairs(ctx.student, ctx.teacher, ctx.image_shape))

    def init_epochs(self) -> int:
        return self.params.init_epochs

    def init_parameters(self, student: nn.Module) -> list[nn.Parameter]:
        return list(self.connectors.parameters()) + feature_parameters(student)

    def init_loss(self, step: StepInputs) -> Tensor:
        pairs = list(zip(step.student_features["stages"][1:], step.teacher_features["stages"][1:]))
        sources = [conn(s.float()) for conn, (s, _) in zip(self.connectors, pairs)]
        return self.params.weight * ab_loss(sources, [t.float() for _, t in pairs], self.params.margin)

    def forward(self, step: StepInputs):
        return {}
