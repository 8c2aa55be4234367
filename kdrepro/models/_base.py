"""The interface every kdrepro network implements.

A network returns logits by default and, on request, the intermediate feature maps that feature-based
distillation methods consume (FitNets hints, attention transfer)::

    logits = model(x)                                   # [B, num_classes]
    logits, feats = model(x, return_features=True)      # feats = {"stages": [...], "pooled": p}

``feats["stages"]`` holds one feature map per stage (the same tensors RepDistiller returns from
``forward(x, is_feat=True)`` minus its last entry), ``feats["pooled"]`` the flattened vector after global
average pooling that feeds the classifier. ``model.stage_channels[i]`` is the channel count of
``feats["stages"][i]``.

Global pooling is adaptive, so the networks are not tied to 32x32 inputs. At 32x32 this is exactly the
fixed ``AvgPool2d(8)`` / ``avg_pool2d(out, 4)`` of RepDistiller, because the last feature map there has
that size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Features = dict[str, "list[Tensor] | Tensor"]


class ClassifierNet(nn.Module):
    """Base class: subclasses build their layers and implement :meth:`_body` and :attr:`head`."""

    stage_channels: list[int]

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        #: registry name, set by :func:`kdrepro.models.create_model`; used in error messages
        self.arch = type(self).__name__

    def _body(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """Return ``(stage feature maps, last feature map before global pooling)``."""
        raise NotImplementedError

    @property
    def head(self) -> nn.Module:
        """The classifier that maps the pooled vector to logits."""
        raise NotImplementedError

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Features]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects input of shape [batch, {self.in_channels}, height, width], "
                f"got {list(x.shape)}; build the model with in_channels={x.shape[1] if x.dim() == 4 else '?'} "
                "or fix the input"
            )
        stages, last = self._body(x)
        pooled = torch.flatten(F.adaptive_avg_pool2d(last, 1), 1)
        logits = self.head(pooled)
        if return_features:
            return logits, {"stages": stages, "pooled": pooled}
        return logits


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is a positive int, else raise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
