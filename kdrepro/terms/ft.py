"""Factor transfer (Kim et al., NeurIPS 2018), as RepDistiller's ``FactorTransfer``, ``Paraphraser`` and
``Translator`` on the last stage's map.

Initialisation stage: for ``init_epochs`` the paraphraser (an encoder of three 3x3 convolutions to
``rate`` times the teacher's channels, a decoder of three transposed ones back; LeakyReLU 0.1, no
BatchNorm) learns to reconstruct the teacher's map (``nn.MSELoss``), at ``init_lr`` (RepDistiller: 0.01 for
ResNet and WRN students, else the run's lr). Main phase: the translator (the same encoder on the student's
map, with BatchNorm) is trained with the student on ``weight * mean |F(translator(f_s)) - F(encoder(f_t))|``,
``F(x) = normalize(mean_c x^2)`` flattened per sample; the paraphraser stays fixed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..values import PositiveFloat, Weight
from .base import LossTerm, StepInputs, TermContext, register_term
from ._init import InitStageParams
from ._shapes import feature_shapes, pool_to_common_size

__all__ = ["FTParams", "FactorTransfer", "factor", "factor_loss", "Paraphraser", "Translator"]


def factor(f: Tensor) -> Tensor:
    """``normalize(mean_c f^2)``, flattened to ``[B, H*W]`` (RepDistiller's ``p1 = 2``)."""
    return F.normalize(f.pow(2).mean(1).flatten(1))


def factor_loss(factor_s: Tensor, factor_t: Tensor) -> Tensor:
    """``mean |factor(s) - factor(t)|`` (RepDistiller's ``p2 = 1``), sizes matched first."""
    factor_s, factor_t = pool_to_common_size(factor_s, factor_t.detach())
    return (factor(factor_s) - factor(factor_t)).abs().mean()


def _encoder(c_in: int, c_out: int, bn: bool) -> list[nn.Module]:
    layers = []
    for a, b in ((c_in, c_in), (c_in, c_out), (c_out, c_out)):
        layers += [nn.Conv2d(a, b, 3, 1, 1), nn.BatchNorm2d(b) if bn else nn.Identity(), nn.LeakyReLU(0.1)]
    return layers


class Paraphraser(nn.Module):
    def __init__(self, channels: int, rate: float):
        super().__init__()
        factor_channels = int(channels * rate)
        self.encoder = nn.Sequential(*_encoder(channels, factor_channels, bn=False))
        decoder = []
        for a, b in ((factor_channels, factor_channels), (factor_channels, channels), (channels, channels)):
            decoder += [nn.ConvTranspose2d(a, b, 3, 1, 1), nn.LeakyReLU(0.1)]
        self.decoder = nn.Sequential(*decoder)

    def forward(self, f: Tensor) -> Tensor:
        return self.decoder(self.encoder(f))


class Translator(nn.Module):
    def __init__(self, channels: int, factor_channels: int):
        super().__init__()
        self.encoder = nn.Sequential(*_encoder(channels, factor_channels, bn=True))

    def forward(self, f: Tensor) -> Tensor:
        return self.encoder(f)


class FTParams(InitStageParams):
    weight: Weight = 200.0        # RepDistiller's scripts/run_cifar_distill.sh: --distill factor -b 200
    rate: PositiveFloat = 0.5               # Paraphraser(k=0.5): the factor's share of the teacher's channels
    init_lr: PositiveFloat | None = 0.01    # RepDistiller's init lr for ResNet and WRN students


@register_term
class FactorTransfer(LossTerm):
    """FT (module docstring): paraphraser trained in the initialisation stage, translator with the student."""

    name = "ft"
    display = "FT"
    Params = FTParams
    needs = frozenset({"student_features", "teacher_features"})
    init_reads_student = False

    def __init__(self, params: FTParams, ctx: TermContext):
        super().__init__(params, ctx)
        s_channels = feature_shapes(ctx.student, ctx.image_shape)[0][-1][0]
        t_channels = feature_shapes(ctx.teacher, ctx.image_shape)[0][-1][0]
        self.paraphraser = Paraphraser(t_channels, params.rate)
        self.translator = Translator(s_channels, int(t_channels * params.rate))

    def init_epochs(self) -> int:
        return self.params.init_epochs

    def init_parameters(self, student: nn.Module) -> list[nn.Parameter]:
        return list(self.paraphraser.parameters())

    def init_loss(self, step: StepInputs) -> Tensor:
        f_t = step.teacher_features["stages"][-1].float().detach()
        return F.mse_loss(self.paraphraser(f_t), f_t)

    def forward(self, step: StepInputs):
        with torch.no_grad():
            factor_t = self.paraphraser.encoder(step.teacher_features["stages"][-1].float())
        factor_s = self.translator(step.student_features["stages"][-1].float())
        return {"ft": self.params.weight * factor_loss(factor_s, factor_t)}
