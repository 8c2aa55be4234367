"""Correlation congruence (Peng et al., ICCV 2019), as RepDistiller implements it (``Correlation``, the code
the authors shared with it): linear embeddings of both networks' pooled features, and the mean over the
batch of ``sum_c |e_s - e_t|[i, c] * |e_s - e_t|[i + 1, c]``, consecutive samples of the batch paired."""
from __future__ import annotations

from torch import Tensor, nn

from ..values import PositiveInt, Weight
from .base import LossTerm, StepInputs, TermContext, TermParams, register_term
from ._shapes import feature_shapes, flat

__all__ = ["CCParams", "CorrelationCongruence", "correlation_congruence_loss"]


def correlation_congruence_loss(e_s: Tensor, e_t: Tensor) -> Tensor:
    """``mean_{i < B-1} sum_c d[i, c] d[i+1, c]`` with ``d = |e_s - e_t|`` (the teacher side detached)."""
    delta = (e_s - e_t.detach()).abs()
    return (delta[:-1] * delta[1:]).sum(1).mean()


class CCParams(TermParams):
    weight: Weight = 0.02         # RepDistiller's scripts/run_cifar_distill.sh: --distill correlation -b 0.02
    feat_dim: PositiveInt = 128             # --feat_dim: the embeddings' width


@register_term
class CorrelationCongruence(LossTerm):
    """``weight * correlation_congruence_loss(W_s p_s + b_s, W_t p_t + b_t)`` on the pooled features; both
    linear embeddings (RepDistiller's ``LinearEmbed``) are trained with the student."""

    name = "cc"
    display = "CC"
    Params = CCParams
    needs = frozenset({"student_features", "teacher_features"})

    def __init__(self, params: CCParams, ctx: TermContext):
        super().__init__(params, ctx)
        self.embed_s = nn.Linear(feature_shapes(ctx.student, ctx.image_shape)[1], params.feat_dim)
        self.embed_t = nn.Linear(feature_shapes(ctx.teacher, ctx.image_shape)[1], params.feat_dim)

    def forward(self, step: StepInputs):
        e_s = self.embed_s(flat(step.student_features["pooled"].float()))
        e_t = self.embed_t(flat(step.teacher_features["pooled"].float().detach()))
        return {"cc": self.params.weight * correlation_congruence_loss(e_s, e_t)}
