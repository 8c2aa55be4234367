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
from dataclasses import dataclass, field

import torch

from . import mobilenetv2, resnet, shufflenetv1, shufflenetv2, vgg, wrn
from ._base import ClassifierNet, Features, check_positive_int
from .checkpoint import (CheckpointFileError, CheckpointMismatchError, CheckpointReadError, load_weights,
                         read_state_dict)

__all__ = [
    "CheckpointFileError",
    "CheckpointMismatchError",
    "CheckpointReadError",
    "ClassifierNet",
    "Features",
    "count_parameters",
    "check_model_options",
    "create_model",
    "list_models",
    "model_option_defaults",
    "load_weights",
    "read_state_dict",
]


@dataclass(frozen=True)
class _Family:
    build: Callable[..., ClassifierNet]
    names: tuple[str, ...]
    #: option -> (default, allowed values)
    choices: dict[str, tuple[object, tuple]] = field(default_factory=dict)

    @property
    def options(self) -> tuple[str, ...]:
        return tuple(self.choices)


_FAMILIES = (
    _Family(resnet.build, tuple(resnet.CONFIGS), choices={"shortcut": ("conv", resnet.SHORTCUTS)}),
    _Family(wrn.build, tuple(wrn.CONFIGS)),
    _Family(vgg.build, tuple(vgg.CONFIGS)),
    _Family(mobilenetv2.build, tuple(mobilenetv2.CONFIGS)),
    _Family(shufflenetv1.build, tuple(shufflenetv1.CONFIGS)),
    _Family(shufflenetv2.build, tuple(shufflenetv2.CONFIGS)),
)
_REGISTRY: dict[str, _Family] = {name: family for family in _FAMILIES for name in family.names}


def model_option_defaults(name: str) -> dict:
    """``{option: default}`` of model ``name``'s family (only CIFAR ResNets have one: ``shortcut``)."""
    return {k: default for k, (default, _) in _REGISTRY[name].choices.items()}


def check_model_options(name: str, options: dict) -> dict:
    """Check ``options`` of model ``name`` before anything is built or trained: ``ValueError`` with one line
    naming an unknown option (and the accepted ones) or a value that is not allowed."""
    from ..registry import nearest

    family = _REGISTRY[name]
    for key, value in options.items():
        if key not in family.choices:
            raise ValueError(f"model_options.{key}: model {name!r} takes no option {key!r}; accepted options: "
                             f"{', '.join(family.choices) or 'none'}{nearest(key, list(family.choices))}")
        allowed = family.choices[key][1]
        if value not in allowed:
            raise ValueError(f"model_options.{key}={value!r}: choose one of {', '.join(map(str, allowed))}")
    return dict(options)


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
