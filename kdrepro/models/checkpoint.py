"""Loading published checkpoints into kdrepro networks.

RepDistiller (``train_teacher.py``) and mdistiller save ``ckpt_epoch_240.pth`` as a dict whose
``"model"`` entry is the network's state dict. Also accepted: a bare state dict, a ``"state_dict"`` or
``"net"`` entry, and keys prefixed with ``module.`` by ``nn.DataParallel`` (or ``_orig_mod.`` by
``torch.compile``). Files are read with ``torch.load(weights_only=True)``: tensors and plain
containers only, no arbitrary code.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Mapping

import torch
from torch import Tensor, nn

#: entries of a checkpoint dict that may hold the state dict, in the order they are tried
STATE_DICT_ENTRIES = ("model", "state_dict", "net")
#: key prefixes added by wrappers (``nn.DataParallel``, ``torch.compile``), stripped when on every key
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: how many offending keys an error message lists
_SHOWN = 8


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not match the model's (other architecture or class count)."""


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    )


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read the state dict stored in ``path`` (see the module docstring for the accepted layouts)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"cannot read checkpoint {path!r} with torch.load(weights_only=True): {err}. "
            "Re-save it as a plain state dict (torch.save(model.state_dict(), path))."
        ) from err
    if _is_state_dict(obj):
        state = obj
    else:
        state = None
        if isinstance(obj, Mapping):
            state = next((obj[k] for k in STATE_DICT_ENTRIES if k in obj and _is_state_dict(obj[k])), None)
        if state is None:
            found = sorted(map(str, obj))[:_SHOWN] if isinstance(obj, Mapping) else type(obj).__name__
            raise ValueError(
                f"checkpoint {path!r} holds no state dict: expected a dict of tensors or a dict with one "
                f"under {list(STATE_DICT_ENTRIES)}, found {found}"
            )
    for prefix in WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def _describe(model: nn.Module) -> str:
    name = getattr(model, "arch", type(model).__name__)
    num_classes = getattr(model, "num_classes", None)
    return f"{name!r} (num_classes={num_classes})" if num_classes is not None else repr(name)


def _listing(keys: list[str]) -> str:
    more = f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load the checkpoint at ``path`` into ``model`` in place and return ``model``.

    Keys and shapes must match exactly, except that ``*.num_batches_tracked`` counters missing from
    old checkpoints are tolerated (they do not affect the network's output). On a mismatch raises
    :class:`CheckpointMismatchError` naming the model, the file and the offending keys and shapes.
    """
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k}: file {list(state[k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        problems = []
        if wrong_shape:
            problems.append(f"{len(wrong_shape)} shape mismatch(es): {_listing(wrong_shape)}")
        if missing:
            problems.append(f"{len(missing)} key(s) missing from the file: {_listing(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} key(s) the model does not have: {_listing(unexpected)}")
        raise CheckpointMismatchError(
            f"checkpoint {os.fspath(path)!r} does not fit model {_describe(model)}: " + "; ".join(problems)
            + ". Check that the file was trained for this architecture and number of classes "
            "(and, for CIFAR ResNets, the same shortcut option)."
        )
    model.load_state_dict(state, strict=False)
    return model
