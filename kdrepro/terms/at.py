"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017) on the stages' spatial attention maps.

Which maps: the network's feature list ``stages`` is ``[stem output, stage 1, ..., stage k]``. RepDistiller
(``train_student.py``: ``g_s = feat_s[1:-1]``, its last entry being the pooled feature) and mdistiller use
the stage outputs only, without the stem; kdrepro before this option used the stem map too. ``stem``
keeps that (``true``, the default, so the committed runs keep their ids and meaning); ``stem: false``
is RepDistiller's convention, which the ``paper`` profile uses to compare with published AT numbers.

Pairing, where the two networks have different numbers of maps: ``last`` (the default, kdrepro's first
convention) pairs the last ``n`` of each, ``n`` the smaller count, so that the deepest maps meet; ``first``
is RepDistiller's ``zip(g_s, g_t)``, the first ``n``. No published CIFAR pair has unequal counts.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .. import losses
from ..values import Bool, PositiveFloat, Weight
from .base import LossTerm, StepInputs, TermParams, register_term


class ATParams(TermParams):
    weight: Weight = 1000.0       # RepDistiller's scripts/run_cifar_distill.sh: --distill attention -b 1000
    p: PositiveFloat = 2.0
    # include the stem's map (kdrepro's first convention); false: stage outputs only, as RepDistiller
    stem: Bool = Field(True, json_schema_extra={"neutral": True})
    # unequal numbers of maps: pair the last n (kdrepro) or the first n (RepDistiller's zip)
    pairing: Literal["last", "first"] = Field("last", json_schema_extra={"neutral": "last"})


@register_term
class AttentionTransfer(LossTerm):
    """``weight * sum_stages mean (Q_s - Q_t)^2`` (:func:`kdrepro.losses.attention_transfer`)."""

    name = "at"
    display = "AT"
    Params = ATParams
    needs = frozenset({"student_features", "teacher_features"})

    def forward(self, step: StepInputs):
        first = 0 if self.params.stem else 1
        student, teacher = step.student_features["stages"][first:], step.teacher_features["stages"][first:]
        if self.params.pairing == "first":
            n = min(len(student), len(teacher))
            student, teacher = student[:n], teacher[:n]
        return {"at": self.params.weight * losses.attention_transfer([f.float() for f in student], teacher,
                                                                     p=self.params.p)}
