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

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, field_validator

from ..registry import Registry

from . import mobilenetv2, resnet, shufflenetv1, shufflenetv2, vgg, wrn
from ._base import ClassifierNet, Features, check_positive_int
from .checkpoint import (CheckpointFileError, CheckpointMismatchError, CheckpointReadError, load_weights,
                         read_state_dict)

__all__ = [
    "MODELS",
    "Model",
    "ModelOptions",
    "register_model",
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


class ModelOptions(BaseModel):
    """A model's typed options (``model_options`` of a run config); a model without options has exactly
    these (none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ResNetOptions(ModelOptions):
    #: the CIFAR ResNets' shortcut where the shape changes (:mod:`kdrepro.models.resnet`)
    shortcut: str = "conv"

    @field_validator("shortcut")
    @classmethod
    def _shortcut(cls, v: str) -> str:
        if v not in resnet.SHORTCUTS:
            raise ValueError(f"choose one of {', '.join(resnet.SHORTCUTS)}")
        return v


@dataclass(frozen=True)
class Model:
    """A registered network: ``build(num_classes, in_channels, **options) -> nn.Module`` and its typed
    options. A network that feature-based loss terms read follows :class:`ClassifierNet`
    (``return_features``, ``stage_channels``); logit-only terms need only ``model(x) -> logits``."""

    build: Callable[..., torch.nn.Module]
    Options: type[ModelOptions] = ModelOptions


#: every network by name (``--set model=<name>``); a plugin adds its own with :func:`register_model`
MODELS: Registry[Model] = Registry("model")


def register_model(name: str, options: type[ModelOptions] = ModelOptions):
    """``@register_model("name", options=MyOptions)`` on ``build(num_classes, in_channels, **options)``:
    the network ``name``. Registering a network changes no run id."""
    def wrap(build: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
        MODELS.register(name, Model(build, options))
        return build
    return wrap


for _module, _options in ((resnet, ResNetOptions), (wrn, ModelOptions), (vgg, ModelOptions),
                          (mobilenetv2, ModelOptions), (shufflenetv1, ModelOptions), (shufflenetv2, ModelOptions)):
    for _name in _module.CONFIGS:
        register_model(_name, _options)(functools.partial(_module.build, _name))


def _model(name: str) -> Model:
    if name not in MODELS:
        raise ValueError(f"unknown model name {name!r}; valid names: {', '.join(MODELS.names())}")
    return MODELS.get(name)


def model_option_defaults(name: str) -> dict:
    """``{option: default}`` of model ``name`` (its :class:`ModelOptions` model)."""
    return {k: f.default for k, f in _model(name).Options.model_fields.items()}


def check_model_options(name: str, options: dict) -> dict:
    """Check ``options`` of model ``name`` before anything is built or trained: ``ValueError`` with one line
    naming an unknown option (and the accepted ones) or a value that is not allowed."""
    from ..values import typed_options

    return typed_options(_model(name).Options, options, "model_options", f"model {name!r}")


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, in registry order (ResNets, WRNs, VGGs, mobile nets, then
    any a plugin registered)."""
    return list(MODELS.names())


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
    spec = _model(name)
    unknown = sorted(set(options) - set(spec.Options.model_fields))
    if unknown:
        accepted = ", ".join(spec.Options.model_fields) or "none"
        raise ValueError(f"model {name!r} does not take option(s) {unknown}; accepted options: {accepted}")
    check_positive_int("num_classes", num_classes)
    check_positive_int("in_channels", in_channels)
    model = spec.build(num_classes, in_channels, **options)
    model.arch = name
    if weights is not None:
        load_weights(model, weights)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable (``requires_grad``) parameter elements of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
