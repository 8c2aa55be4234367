"""Shared parts of the terms with an initialisation stage (AB, FT, FSP; RepDistiller's ``helper/pretrain.py``)."""
from __future__ import annotations

from pydantic import Field
from torch import nn

from ..values import NonNegativeInt, PositiveFloat
from .base import TermParams


class InitStageParams(TermParams):
    init_epochs: NonNegativeInt = 30        # RepDistiller's --init_epochs
    #: the stage's learning rate; None: the run's lr (RepDistiller's opt.learning_rate)
    init_lr: PositiveFloat | None = Field(None)


def feature_parameters(student: nn.Module) -> list[nn.Parameter]:
    """The student's parameters except its classifier's (RepDistiller's ``get_feat_modules()``)."""
    head = {id(p) for p in student.head.parameters()}
    return [p for p in student.parameters() if id(p) not in head]
