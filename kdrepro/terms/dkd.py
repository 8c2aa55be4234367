"""Decoupled Knowledge Distillation (Zhao, Cui, Song, Qiu, Liang, CVPR 2022), as in mdistiller.

DKD splits Hinton's KD loss into two parts that are weighted separately:

* TCKD (target-class KD): the KL divergence between the teacher's and the student's *binary*
  distributions ``b = [p_y, 1 - p_y]`` (the probability of the target class against all the others);
* NCKD (non-target-class KD): the KL divergence between their distributions over the ``C - 1``
  non-target classes only, renormalised (``softmax`` of the non-target logits).

``DKD = alpha * TCKD + beta * NCKD``, each scaled by ``T^2`` and averaged over the batch, as mdistiller's
``mdistiller/distillers/DKD.py`` (github.com/megvii-research/mdistiller). The defaults are mdistiller's
CIFAR-100 ones (``mdistiller/engine/cfg.py``: ``ALPHA 1.0, BETA 8.0, T 4.0, WARMUP 20``; its
``configs/cifar100/dkd/*.yaml`` lower ``BETA`` to 2.0 for resnet56/110 teachers and 6.0 for the
vgg13 and wrn40_2 -> wrn pairs). mdistiller's cross-entropy (``CE_WEIGHT 1.0``) is not part of this term:
it is the ``ce`` term.

Numerics. mdistiller isolates the non-target classes by subtracting ``1000`` from the target logit
(after dividing by ``T``) and computes TCKD as ``log`` of summed softmax probabilities. Both are
approximations that break in float32 at the extremes: the offset is not enough when the logits
themselves span more than ~1000 (times ``T``), and ``log(sum of probabilities)`` is ``-inf`` (so TCKD is
infinite or NaN) once the student's non-target probabilities underflow. Here nothing is masked or
offset: the ``C - 1`` non-target logits of each row are *gathered* into a ``[B, C - 1]`` tensor (an
exact selection, index arithmetic only, no host synchronisation), and every log-probability is
computed in log space with ``logsumexp``:

* ``log b_target = z_y/T - logsumexp(z/T)``, ``log b_other = logsumexp(z_{c != y}/T) - logsumexp(z/T)``;
* ``log q = log_softmax(z_{c != y}/T)`` over the gathered non-target logits.

On ordinary logits this agrees with mdistiller's formula to float rounding (``tests/test_term_dkd.py``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..values import NonNegativeInt, Temperature, Weight
from .base import LossTerm, StepInputs, TermParams, register_term

__all__ = ["dkd_loss", "DKDParams", "DecoupledKD"]


def _check_inputs(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, temperature: float) -> None:
    if student_logits.dim() != 2:
        raise ValueError(f"student_logits must be 2-D [batch, classes], got shape {tuple(student_logits.shape)}")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher_logits has shape {tuple(teacher_logits.shape)} but student_logits has shape "
            f"{tuple(student_logits.shape)}; they must match (same batch, same number of classes)"
        )
    batch, classes = student_logits.shape
    if batch < 1:
        raise ValueError(f"student_logits has an empty batch (shape {tuple(student_logits.shape)})")
    if classes < 2:
        raise ValueError(
            f"student_logits has {classes} class(es); DKD needs at least 2 (a target and a non-target class)"
        )
    if targets.shape != (batch,):
        raise ValueError(
            f"targets must be 1-D [batch] = ({batch},) like student_logits' batch, got shape {tuple(targets.shape)}"
        )
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(f"targets must hold integer class indices, got dtype {targets.dtype}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    # one host synchronisation per call (as F.cross_entropy's own index check on the CPU)
    if bool(((targets < 0) | (targets >= classes)).any()):
        bad = targets[(targets < 0) | (targets >= classes)]
        raise ValueError(f"targets must be class indices in [0, {classes - 1}], got {bad.tolist()[:5]}")


def _non_target_index(targets: Tensor, classes: int) -> Tensor:
    """``[B, C - 1]`` indices of each row's non-target classes, in increasing order: ``0..C-2`` with every
    index ``>= y`` shifted up by one (the target ``y`` is skipped)."""
    idx = torch.arange(classes - 1, device=targets.device).unsqueeze(0)
    return idx + (idx >= targets.unsqueeze(1)).long()


def _binary_log_probs(z: Tensor, y: Tensor, z_other: Tensor) -> Tensor:
    """``[B, 2]``: ``log [p_y, 1 - p_y]`` of ``softmax(z)``, both in log space (no ``log(1 - p)``)."""
    lse = torch.logsumexp(z, dim=1, keepdim=True)
    return torch.cat([z.gather(1, y) - lse, torch.logsumexp(z_other, dim=1, keepdim=True) - lse], dim=1)


def dkd_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor,
             alpha: float, beta: float, temperature: float) -> Tensor:
    """Decoupled KD loss (Zhao et al., CVPR 2022, eq. 4/5; mdistiller's ``dkd_loss``), batch mean.

    With ``p = softmax(z / T)``, ``b = [p_y, 1 - p_y]`` and ``q = softmax(z_{c != y} / T)`` (the non-target
    classes only),

        ``TCKD = T^2 * (1/B) * sum_i KL(b_t[i] || b_s[i])``,
        ``NCKD = T^2 * (1/B) * sum_i KL(q_t[i] || q_s[i])``,
        ``L = alpha * TCKD + beta * NCKD``.

    KL divergences are summed over their bins and averaged over the batch (mdistiller's
    ``kl_div(..., size_average=False) / batch``). The non-target classes are gathered exactly and all
    log-probabilities are computed with ``logsumexp`` (see the module docstring), not with mdistiller's
    ``-1000`` offset on the target logit. With two classes NCKD is exactly 0; with ``teacher == student``
    the loss is 0. The teacher logits are detached and cast to the student logits' dtype.
    """
    _check_inputs(student_logits, teacher_logits, targets, temperature)
    classes = student_logits.shape[1]
    s = student_logits / temperature
    t = teacher_logits.detach().to(s.dtype) / temperature
    y = targets.long().unsqueeze(1)
    others = _non_target_index(targets.long(), classes)
    s_other, t_other = s.gather(1, others), t.gather(1, others)

    tckd = F.kl_div(_binary_log_probs(s, y, s_other), _binary_log_probs(t, y, t_other),
                    reduction="batchmean", log_target=True)
    nckd = F.kl_div(F.log_softmax(s_other, dim=1), F.log_softmax(t_other, dim=1),
                    reduction="batchmean", log_target=True)
    return (alpha * tckd + beta * nckd) * (temperature * temperature)


class DKDParams(TermParams):
    weight: Weight = 1.0          # an overall factor on alpha * TCKD + beta * NCKD (mdistiller: none)
    alpha: Weight = 1.0           # mdistiller cfg.DKD.ALPHA (TCKD weight)
    beta: Weight = 8.0            # mdistiller cfg.DKD.BETA (NCKD weight; its CIFAR configs: 8, 6 or 2)
    T: Temperature = 4.0                  # mdistiller cfg.DKD.T
    warmup: NonNegativeInt = 20             # mdistiller cfg.DKD.WARMUP: epochs of linear ramp; 0 = no ramp


@register_term
class DecoupledKD(LossTerm):
    """``weight * min(epoch / warmup, 1) * dkd_loss(z_s, z_t, y, alpha, beta, T)`` (:func:`dkd_loss`).

    The ramp is mdistiller's ``min(kwargs["epoch"] / self.warmup, 1.0)`` with its 1-based epoch
    (``step.epoch``): at warmup 20 the loss has 1/20 of its weight in epoch 1 and all of it from epoch 20
    on. ``warmup = 0`` turns the ramp off (mdistiller would divide by zero).
    """

    name = "dkd"
    display = "DKD"
    Params = DKDParams
    needs = frozenset({"teacher_logits"})

    def ramp(self, epoch: int | None) -> float:
        """The warm-up factor in ``[0, 1]`` for the 1-based ``epoch`` in progress (1 when no epoch is given)."""
        warmup = self.params.warmup
        if warmup == 0 or epoch is None:
            return 1.0
        return min(max(epoch / warmup, 0.0), 1.0)

    def forward(self, step: StepInputs):
        p = self.params
        loss = dkd_loss(step.student_logits.float(), step.teacher_logits, step.targets, p.alpha, p.beta, p.T)
        return {"dkd": (p.weight * self.ramp(step.epoch)) * loss}
