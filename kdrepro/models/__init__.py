"""The model zoo: the CIFAR networks of RepDistiller / mdistiller under the same names.

>>> model = create_model("resnet8x4", num_classes=100)
>>> logits, feats = model(torch.randn(2, 3, 32, 32), return_features=True)
>>> [f.shape[1] for f in feats["stages"]] == model.stage_channels
True

Names follow RepDistiller's ``models/__init__.py`` (``vgg8`` is their ``vgg8_bn``, ``MobileNetV2`` their
``mobile_half``), so published tables line up, and state-dict keys and shapes match theirs, so their
teacher checkpoints load with ``create_model(name, num_classes, weights=path)``. Every network accepts
``in_channels`` (e.g. 1 for greyscale digits) and any input of at least 8x8 pixels.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import mobilenetv2, resnet, shufflenetv1, shufflenetv2, vgg, wrn
from ._base import ClassifierNet, Features, check_positive_int
from .checkpoint import CheckpointMismatchError, load_weights, read_state_dict

__all__ = [
    "CheckpointMismatchError",
    "ClassifierNet",
    "Features",
    "count_parameters",
    "create_model",
    "list_models",
    "load_weights",
    "read_state_dict",
]


@dataclass(frozen=True)
class _Family:
    build: Callable[..., ClassifierNet]
    names: tuple[str, ...]
    options: tuple[str, ...] = ()


_FAMILIES = (
    _Family(resnet.build, tuple(resnet.CONFIGS), options=("shortcut",)),
    _Family(wrn.build, tuple(wrn.CONFIGS)),
    _Family(vgg.build, tuple(vgg.CONFIGS)),
    _Family(mobilenetv2.build, tuple(mobilenetv2.CONFIGS)),
    _Family(shufflenetv1.build, tuple(shufflenetv1.CONFIGS)),
    _Family(shufflenetv2.build, tuple(shufflenetv2.CONFIGS)),
)
_REGISTRY: dict[str, _Family] = {name: family for family in _FAMILIES for name in family.names}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, in registry order (ResNets, WRNs, VGGs, mobile nets)."""
    return list(_REGISTRY)


def create_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    weights: str | os.PathLike | None = None,
    **options: object,
) -> ClassifierNet:
    """Build the network ``name`` with a ``num_classes``-way classifier on ``in_channels``-channel inputs.

    ``weights``: optional checkpoint path, loaded with :func:`load_weights`. ``options``: family-specific
    settings; only CIFAR ResNets have one, ``shortcut="conv"`` (default) or ``"pad"`` (see
    :mod:`kdrepro.models.resnet`). The model is returned in training mode; the caller sets ``eval()``.
    """
    family = _REGISTRY.get(name)
    if family is None:
        raise ValueError(f"unknown model name {name!r}; valid names: {', '.join(_REGISTRY)}")
    unknown = sorted(set(options) - set(family.options))
    if unknown:
        accepted = ", ".join(family.options) if family.options else "none"
        raise ValueError(f"model {name!r} does not take option(s) {unknown}; accepted options: {accepted}")
    check_positive_int("num_classes", num_classes)
    check_positive_int("in_channels", in_channels)
    model = family.build(name, num_classes, in_channels, **options)
    model.arch = name
    if weights is not None:
        load_weights(model, weights)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable (``requires_grad``) parameter elements of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
