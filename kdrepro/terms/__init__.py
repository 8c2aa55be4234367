"""Loss terms, registered by name: one file per term, imported here (that import is its registration).

The order of the imports is the order in which the trainer sums the terms' parts.
"""
from .base import (REQUIREMENTS, TERMS, LossTerm, StepInputs, TermContext, TermParams, params_identity,
                   register_term)
from . import ce, kd, mse, fitnet, at, dkd, crd  # noqa: E401,F401  (registration, in summation order)
from . import sp, cc, vid, rkd, pkt, ab, ft, fsp, nst  # noqa: E401,F401  (RepDistiller's other baselines)

__all__ = ["TERMS", "REQUIREMENTS", "LossTerm", "StepInputs", "TermContext", "TermParams", "register_term",
           "params_identity"]
