"""Every distillation loss as a plain function, in one place: ``from kdrepro.functional import dkd_loss``.

The functions live beside their loss terms (:mod:`kdrepro.losses` for CE, KD, the logit MSE, FitNets and AT;
``kdrepro/terms/<term>.py`` for the others); this module imports them all. Each takes tensors and returns a
scalar loss, unweighted; the term classes (:data:`kdrepro.terms.TERMS`) add the weight and read the inputs from
a training step. Teacher-side inputs are treated as constants (detached).
"""
from __future__ import annotations

from .losses import FitNetHint, attention_map, attention_transfer, cross_entropy, kd_loss, logit_mse
from .terms.ab import ab_loss
from .terms.cc import correlation_congruence_loss
from .terms.crd import contrast_loss
from .terms.dkd import dkd_loss
from .terms.fsp import fsp_loss, fsp_matrices
from .terms.ft import factor, factor_loss
from .terms.nst import nst_loss
from .terms.pkt import pkt_loss
from .terms.rkd import rkd_loss
from .terms.sp import similarity_preserving_loss
from .terms.vid import vid_loss

__all__ = [
    "cross_entropy", "kd_loss", "logit_mse", "FitNetHint", "attention_map", "attention_transfer",
    "dkd_loss", "contrast_loss", "similarity_preserving_loss", "correlation_congruence_loss", "vid_loss",
    "rkd_loss", "pkt_loss", "ab_loss", "fsp_matrices", "fsp_loss", "factor", "factor_loss", "nst_loss",
]
