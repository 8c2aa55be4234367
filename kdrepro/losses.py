"""Distillation losses, as small functions in the manner of mdistiller: the engine weights and sums them.

The SLKD objective of the authors' ``train_slkd.py`` (github.com/HaoranZhao1988/kd) is, in the
curriculum phases,

    CE(z_s, y) + 0.1 * T^2 * KL(softmax(z_t/T) || softmax(z_s/T)) + 0.05 * MSE(z_s, z_t),   T = 3,

i.e. ``cross_entropy + 0.1 * kd_loss + 0.05 * logit_mse`` here; the warm-up drops the MSE term.
:class:`FitNetHint` and :func:`attention_transfer` are the feature-based baselines (FitNets, AT) of the
paper's comparison, following RepDistiller (github.com/HobbitLong/RepDistiller).

Teacher (target) logits and features are treated as constants: every loss detaches them, as the authors'
code does (frozen teacher parameters, ``output_t.detach()`` in the MSE term) and RepDistiller (teacher
features computed under ``torch.no_grad()``).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "cross_entropy",
    "kd_loss",
    "logit_mse",
    "FitNetHint",
    "attention_map",
    "attention_transfer",
]


def _check_logit_pair(student_logits: Tensor, other: Tensor, other_name: str) -> None:
    if student_logits.dim() != 2:
        raise ValueError(
            f"student_logits must be 2-D [batch, classes], got shape {tuple(student_logits.shape)}"
        )
    if other.shape != student_logits.shape:
        raise ValueError(
            f"{other_name} has shape {tuple(other.shape)} but student_logits has shape "
            f"{tuple(student_logits.shape)}; they must match (same batch, same number of classes)"
        )


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy with hard labels, averaged over the batch (``nn.CrossEntropyLoss()`` as the authors).

    ``CE = -(1/B) * sum_i log softmax(z_i)[y_i]``.
    """
    return F.cross_entropy(logits, targets)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton et al. (2015) soft-target loss, batch-averaged and scaled by ``T^2``.

    ``L = T^2 * (1/B) * sum_i sum_c p_t[i,c] * (log p_t[i,c] - log p_s[i,c])`` with
    ``p = softmax(z / T)``: the KL divergence is summed over classes and averaged over the batch
    (``reduction='batchmean'``), never divided by the number of classes. This equals the authors'
    ``KLDivLoss(reduction='sum')(log_softmax(z_s/T), softmax(z_t/T)) * T^2 / B`` and RepDistiller's
    ``DistillKL``. Its gradient w.r.t. the student logits is ``T * (p_s - p_t) / B``.
    The teacher logits are detached.
    """
    _check_logit_pair(student_logits, teacher_logits, "teacher_logits")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * (temperature * temperature)


def logit_mse(student_logits: Tensor, target_logits: Tensor) -> Tensor:
    """Mean squared error between logits, averaged over all ``B * C`` elements.

    ``L = (1/(B*C)) * sum_{i,c} (z_s[i,c] - z_t[i,c])^2``: ``nn.MSELoss()`` with its default
    ``reduction='mean'``, as the authors' ``criterionLogits(output_s, output_t.detach())`` (their code
    regresses onto the *teacher's* logits, not the snapshot's). The target is detached.
    """
    _check_logit_pair(student_logits, target_logits, "target_logits")
    return F.mse_loss(student_logits, target_logits.detach())


def _pool_to_common_size(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pool whichever map is larger down to the smaller spatial size (RepDistiller)."""
    size = (min(a.shape[2], b.shape[2]), min(a.shape[3], b.shape[3]))
    if tuple(a.shape[2:]) != size:
        a = F.adaptive_avg_pool2d(a, size)
    if tuple(b.shape[2:]) != size:
        b = F.adaptive_avg_pool2d(b, size)
    return a, b


def _check_feature(feature: Tensor, name: str) -> None:
    if feature.dim() != 4:
        raise ValueError(f"{name} must be a 4-D feature map [B, C, H, W], got shape {tuple(feature.shape)}")


class FitNetHint(nn.Module):
    """FitNets hint loss (Romero et al., ICLR 2015) with a trainable regressor, as in RepDistiller.

    ``L = MSE(r(f_s), f_t)`` averaged over all elements (RepDistiller's ``HintLoss`` = ``nn.MSELoss()``),
    where the regressor ``r`` is RepDistiller's ``ConvReg``: a convolution from the student's to the
    teacher's channels followed by BatchNorm and ReLU. With equal spatial sizes ConvReg's convolution is
    1x1, hence ``kernel_size=1`` by default; ``kernel_size=3`` (padding 1) is the other choice.

    Spatial mismatch: ConvReg picks a strided or transposed convolution from the shapes it is built
    with; this module is built from channel counts only, so a mismatch is handled instead by
    adaptive-average-pooling the larger map to the smaller size (as RepDistiller's attention loss does);
    the FitNets term's ``regressor: convreg`` is RepDistiller's ConvReg instead.
    The teacher feature is detached. The regressor's parameters must be given to the optimizer.
    """

    def __init__(self, student_channels: int, teacher_channels: int, *, kernel_size: int = 1) -> None:
        super().__init__()
        for name, value in (("student_channels", student_channels), ("teacher_channels", teacher_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if kernel_size not in (1, 3):
            raise ValueError(f"kernel_size must be 1 or 3 (as RepDistiller's ConvReg), got {kernel_size!r}")
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.regressor = nn.Sequential(
            nn.Conv2d(student_channels, teacher_channels, kernel_size, padding=kernel_size // 2),
            nn.BatchNorm2d(teacher_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        _check_feature(student_feature, "student_feature")
        _check_feature(teacher_feature, "teacher_feature")
        if student_feature.shape[1] != self.student_channels:
            raise ValueError(
                f"student_feature has {student_feature.shape[1]} channels but this FitNetHint was built "
                f"for student_channels={self.student_channels}"
            )
        if teacher_feature.shape[1] != self.teacher_channels:
            raise ValueError(
                f"teacher_feature has {teacher_feature.shape[1]} channels but this FitNetHint was built "
                f"for teacher_channels={self.teacher_channels}"
            )
        regressed, target = _pool_to_common_size(self.regressor(student_feature), teacher_feature.detach())
        return F.mse_loss(regressed, target)


def attention_map(feature: Tensor, p: float = 2.0) -> Tensor:
    """Spatial attention map of Zagoruyko & Komodakis (ICLR 2017): ``Q = normalize(mean_c |f|^p)``.

    ``feature`` is ``[B, C, H, W]``; the channel mean of ``|f|^p`` is flattened to ``[B, H*W]`` and
    L2-normalised per sample (``F.normalize``, as RepDistiller's ``Attention.at``, which writes
    ``f.pow(p)``: the same for the default ``p = 2``).
    """
    _check_feature(feature, "feature")
    return F.normalize(feature.abs().pow(p).mean(dim=1).flatten(1), dim=1)


def attention_transfer(student_features: list[Tensor], teacher_features: list[Tensor], p: float = 2.0) -> Tensor:
    """Attention-transfer loss (Zagoruyko & Komodakis 2017), RepDistiller's convention.

    ``L = sum_stages mean_{i,j} (Q_s[i,j] - Q_t[i,j])^2`` with ``Q = attention_map(f, p)``: per stage the
    squared difference is averaged over the batch *and* the ``H*W`` positions, exactly
    ``(at(f_s) - at(f_t)).pow(2).mean()`` of RepDistiller's ``Attention`` and of the original
    attention-transfer code, so that the literature's weight (beta = 1000) applies unchanged; the
    per-stage losses are summed. Stages are paired in order; if the lists differ in length, the last
    ``min(len)`` of each are paired (the AT term's ``pairing: first`` passes the first ``n`` instead). Spatial sizes are matched by adaptive-average-pooling the larger
    map to the smaller. Teacher features are detached.
    """
    if len(student_features) == 0 or len(teacher_features) == 0:
        raise ValueError(
            f"attention_transfer needs at least one feature map on each side, got "
            f"{len(student_features)} student and {len(teacher_features)} teacher features"
        )
    n = min(len(student_features), len(teacher_features))
    pairs = zip(student_features[len(student_features) - n:], teacher_features[len(teacher_features) - n:])
    total = student_features[0].new_zeros(())
    for f_s, f_t in pairs:
        _check_feature(f_s, "student feature")
        _check_feature(f_t, "teacher feature")
        if f_s.shape[0] != f_t.shape[0]:
            raise ValueError(
                f"batch sizes differ: student feature {tuple(f_s.shape)}, teacher feature {tuple(f_t.shape)}"
            )
        f_s, f_t = _pool_to_common_size(f_s, f_t.detach())
        total = total + (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()
    return total
