"""What the feature-based terms need to know of the two networks when they are built: feature-map shapes.

:func:`feature_shapes` runs one dummy image of the run's size through a network (eval mode, no gradient,
every training flag restored afterwards, so BatchNorm statistics are untouched) and returns the shapes
of its ``stages`` maps (without the batch dimension) and the width of its pooled vector.
:func:`pool_to_common_size` is RepDistiller's way of pairing two maps of different sizes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: the input size assumed when a term is built without the run's image shape (CIFAR)
DEFAULT_IMAGE_SIZE = 32


def feature_shapes(model: nn.Module, image_shape: tuple[int, ...] | None = None
                   ) -> tuple[list[tuple[int, int, int]], int]:
    """``([(C, H, W) of every stage map], pooled width)`` of ``model`` on one ``image_shape`` input."""
    params = next(iter(model.parameters()), None)
    device = params.device if params is not None else torch.device("cpu")
    shape = tuple(image_shape) if image_shape else (getattr(model, "in_channels", 3), DEFAULT_IMAGE_SIZE,
                                                    DEFAULT_IMAGE_SIZE)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            _, feats = model(torch.zeros(1, *shape, device=device), return_features=True)
    finally:
        for m, training in modes:
            m.training = training
    return [tuple(f.shape[1:]) for f in feats["stages"]], int(feats["pooled"].shape[1])


def pool_to_common_size(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """RepDistiller's pairing of maps: the one with the larger height is adaptive-average-pooled to the
    other's ``(H, H)`` (its maps are square); maps of equal height pass unchanged."""
    ha, hb = a.shape[2], b.shape[2]
    if ha > hb:
        a = F.adaptive_avg_pool2d(a, (hb, hb))
    elif ha < hb:
        b = F.adaptive_avg_pool2d(b, (ha, ha))
    return a, b


def flat(x: Tensor) -> Tensor:
    """``[B, ...]`` -> ``[B, -1]``."""
    return x.reshape(x.shape[0], -1)


def stage_shape_pairs(student: nn.Module, teacher: nn.Module, image_shape=None) -> list[tuple[tuple, tuple]]:
    """``[(student (C, H, W), teacher (C, H, W))]`` of the stage outputs without the stem (RepDistiller's
    ``feat[1:-1]``), the first ``n`` of each paired."""
    return list(zip(feature_shapes(student, image_shape)[0][1:], feature_shapes(teacher, image_shape)[0][1:]))
