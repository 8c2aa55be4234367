"""Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018), as RepDistiller's ``PKT`` on the pooled
features: the batch's cosine-similarity distributions of student and teacher, compared by a KL divergence."""
from __future__ import annotations

import torch
from torch import Tensor

from ..values import Weight
from .base import LossTerm, StepInputs, TermParams, register_term
from ._shapes import flat

__all__ = ["PKTParams", "ProbabilisticKT", "pkt_loss"]

EPS = 1e-7  # RepDistiller's eps


def _similarity_distribution(f: Tensor) -> Tensor:
    f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + EPS)
    f = torch.nan_to_num(f, nan=0.0)
    sim = (f @ f.t() + 1.0) / 2.0
    return sim / sim.sum(1, keepdim=True)


def pkt_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """``mean_{i,j} q[i,j] log((q[i,j] + eps) / (p[i,j] + eps))``: ``p``, ``q`` the row-normalised
    ``(cos + 1) / 2`` similarity matrices of the student's and the teacher's (detached) vectors."""
    p = _similarity_distribution(flat(f_s))
    q = _similarity_distribution(flat(f_t.detach()))
    return (q * torch.log((q + EPS) / (p + EPS))).mean()


class PKTParams(TermParams):
    weight: Weight = 30000.0      # RepDistiller's scripts/run_cifar_distill.sh: --distill pkt -b 30000


@register_term
class ProbabilisticKT(LossTerm):
    """``weight * pkt_loss(pooled_s, pooled_t)``."""

    name = "pkt"
    display = "PKT"
    Params = PKTParams
    needs = frozenset({"student_features", "teacher_features"})

    def forward(self, step: StepInputs):
        return {"pkt": self.params.weight * pkt_loss(step.student_features["pooled"].float(),
                                                     step.teacher_features["pooled"].float())}
