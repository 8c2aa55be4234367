"""Loading published checkpoints into kdrepro networks.

Recognised layouts (each may hold its state dict under one of :data:`STATE_DICT_ENTRIES`, or be a bare
state dict):

* RepDistiller (``train_teacher.py``, ``train_student.py``): ``ckpt_epoch_240.pth`` and ``*_best.pth`` are
  dicts whose ``"model"`` entry is the network's state dict; ``*_last.pth`` adds ``"opt"``, the run's
  ``argparse.Namespace``, and (teachers) ``"optimizer"``.
* mdistiller: ``student_*`` files hold ``{"model": student state dict}``; ``latest``, ``best`` and
  ``epoch_*`` hold the whole distiller (a ``DataParallel``), keys ``module.student.*`` and
  ``module.teacher.*``: both networks are candidates.
* The SLKD authors (github.com/HaoranZhao1988/kd): ``{"epoch", "net"}`` (teacher, ``train_baseline.py``) and
  ``{"epoch", "snet", "tnet"}`` (student, ``train_slkd.py``), state dicts of ``DataParallel`` models with
  the stages named ``res1..res3`` and the conv shortcut ``ds``; these are renamed to ``layer1..layer3``
  and ``downsample`` (:func:`authors_to_kdrepro`).

Key prefixes added by wrappers (``module.`` by ``nn.DataParallel``, ``_orig_mod.`` by ``torch.compile``) are
stripped when on every key. Where a file holds several networks (``snet``/``tnet``, mdistiller's student and
teacher), :func:`load_weights` takes the first one that fits the model, or the one named by ``entry``.

Files are read with ``torch.load(weights_only=True)``, which unpickles tensors and plain containers only;
the one class added to that list is ``argparse.Namespace`` (:data:`SAFE_GLOBALS`, RepDistiller's ``"opt"``),
whose fields are plain values too. Anything else is refused, not unpickled. A file that cannot be used
raises a :class:`CheckpointFileError` whose message names the file.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import zipfile
from collections.abc import Mapping

import torch
from torch import Tensor, nn

#: entries of a checkpoint dict that may hold a state dict, in the order they are tried
STATE_DICT_ENTRIES = ("model", "state_dict", "net", "snet", "tnet")
#: key prefixes added by wrappers (``nn.DataParallel``, ``torch.compile``), stripped when on every key
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: sub-networks of a distiller's state dict (mdistiller's ``Distiller``), each a candidate of its own
SUB_NETWORKS = ("student", "teacher")
#: the classes besides tensors and plain containers that a checkpoint may hold
SAFE_GLOBALS = (argparse.Namespace,)
#: how many offending keys an error message lists
_SHOWN = 8

_AUTHORS_STAGE = re.compile(r"^res([1-9])\.")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class CheckpointFileError(ValueError):
    """A weights file that cannot be used: unreadable, damaged, empty, foreign, or not fitting the model."""


class CheckpointReadError(CheckpointFileError):
    """The file is not a readable PyTorch checkpoint holding a state dict."""


class CheckpointMismatchError(CheckpointFileError):
    """The checkpoint's tensors do not match the model's (other architecture or class count)."""


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    )


def _head(path: str, n: int = 8) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _what_it_is(path: str) -> str:
    """A few words on what the unreadable file at ``path`` looks like."""
    head = _head(path, 64)
    if not head:
        return "is empty (0 bytes)"
    if head.startswith(b"PK\x03\x04") or zipfile.is_zipfile(path):
        return "is a zip archive but not a readable PyTorch checkpoint (damaged or truncated, or another kind of zip)"
    if head[:1] == b"\x80":
        return "is a pickle but not a readable PyTorch checkpoint (damaged, truncated, or not written by torch.save)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text.strip() and all(c.isprintable() or c.isspace() for c in text):
        return f"is a text file, not a PyTorch checkpoint (it starts with {text.strip().splitlines()[0][:40]!r})"
    return f"is not a PyTorch checkpoint (it starts with the bytes {head[:8]!r})"


def _refused_global(err: BaseException) -> str:
    text = _ANSI.sub("", str(err))
    found = re.search(r"GLOBAL ([\w.]+)", text)
    return found.group(1) if found else text.strip().splitlines()[0][:120]


def read_checkpoint(path: str | os.PathLike) -> object:
    """The object stored at ``path``, read with ``torch.load(weights_only=True)`` plus :data:`SAFE_GLOBALS`.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointReadError` (one line naming the
    file and what it is) for an empty, damaged or foreign file or one holding other objects.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path!r}")
    if os.path.getsize(path) == 0:
        raise CheckpointReadError(f"checkpoint {path!r} is empty (0 bytes)")
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) and "GLOBAL" in str(err):
            raise CheckpointReadError(
                f"cannot read checkpoint {path!r} with torch.load(weights_only=True): it holds a "
                f"{_refused_global(err)}, which is not unpickled (only tensors, plain containers and "
                "argparse.Namespace are). Re-save it as a plain state dict (torch.save(model.state_dict(), path))."
            ) from None
        raise CheckpointReadError(f"checkpoint {path!r} {_what_it_is(path)}") from None
    except (PermissionError, IsADirectoryError):
        raise
    except (EOFError, IndexError, KeyError, ValueError, RuntimeError, UnicodeDecodeError, AttributeError,
            TypeError, OSError):  # torch's reader on a truncated archive: OSError EINVAL
        raise CheckpointReadError(f"checkpoint {path!r} {_what_it_is(path)}") from None


def authors_to_kdrepro(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The SLKD authors' ResNet keys renamed to kdrepro's: ``resK.`` -> ``layerK.``, ``.ds.`` -> ``.downsample.``.

    Applied only when some key starts with ``res1.`` (their layout); other state dicts pass unchanged.
    """
    if not any(k.startswith("res1.") for k in state):
        return dict(state)
    out = {}
    for key, value in state.items():
        key = _AUTHORS_STAGE.sub(r"layer\1.", key)
        out[key.replace(".ds.", ".downsample.")] = value
    return out


def _strip_wrappers(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    state = dict(state)
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                stripped = True
    return state


def state_dict_candidates(obj: object) -> list[tuple[str, dict[str, Tensor]]]:
    """``[(label, state dict)]``: every network ``obj`` (a loaded checkpoint) holds, normalised.

    The label is the entry (``"model"``, ``"snet"``, ...; ``""`` for a bare state dict), with
    ``"/student"`` or ``"/teacher"`` appended for the halves of a distiller's state dict.
    """
    if _is_state_dict(obj):
        raw = [("", obj)]
    elif isinstance(obj, Mapping):
        raw = [(k, obj[k]) for k in STATE_DICT_ENTRIES if k in obj and _is_state_dict(obj[k])]
    else:
        raw = []
    out = []
    for label, state in raw:
        state = _strip_wrappers(state)
        subs = [(f"{label}/{name}", {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")})
                for name in SUB_NETWORKS]
        subs = [(sub_label, _strip_wrappers(sub)) for sub_label, sub in subs if sub]
        for sub_label, sub in subs or [(label, state)]:
            out.append((sub_label, authors_to_kdrepro(sub)))
    return out


def _no_state_dict(path: str, obj: object) -> CheckpointReadError:
    found = sorted(map(str, obj))[:_SHOWN] if isinstance(obj, Mapping) else type(obj).__name__
    return CheckpointReadError(
        f"checkpoint {path!r} holds no state dict: expected a dict of tensors or a dict with one "
        f"under {list(STATE_DICT_ENTRIES)}, found {found}"
    )


def read_state_dict(path: str | os.PathLike, entry: str | None = None) -> dict[str, Tensor]:
    """The first state dict stored in ``path`` (or the one labelled ``entry``), normalised (module docstring)."""
    path = os.fspath(path)
    obj = read_checkpoint(path)
    candidates = _select(state_dict_candidates(obj), entry, path, obj)
    return candidates[0][1]


def _select(candidates, entry, path, obj):
    if not candidates:
        raise _no_state_dict(path, obj)
    if entry is None:
        return candidates
    chosen = [c for c in candidates if c[0] == entry]
    if not chosen:
        raise CheckpointReadError(f"checkpoint {path!r} has no network under entry={entry!r}; it has "
                                  f"{[label for label, _ in candidates]}")
    return chosen


def _describe(model: nn.Module) -> str:
    name = getattr(model, "arch", type(model).__name__)
    num_classes = getattr(model, "num_classes", None)
    return f"{name!r} (num_classes={num_classes})" if num_classes is not None else repr(name)


def _listing(keys: list[str]) -> str:
    more = f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def mismatches(model: nn.Module, state: Mapping[str, Tensor]) -> list[str]:
    """What keeps ``state`` from loading into ``model``: one line each for shapes, missing and unexpected
    keys (empty when it fits). ``*.num_batches_tracked`` counters missing from old files are tolerated."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k}: file {list(state[k].shape)} vs model {list(v.shape)}"
                   for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} shape mismatch(es): {_listing(wrong_shape)}")
    if missing:
        problems.append(f"{len(missing)} key(s) missing from the file: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} key(s) the model does not have: {_listing(unexpected)}")
    return problems


def load_weights(model: nn.Module, path: str | os.PathLike, entry: str | None = None) -> nn.Module:
    """Load the checkpoint at ``path`` into ``model`` in place and return ``model``.

    Of the networks the file holds (:func:`state_dict_candidates`), the first whose keys and shapes match
    the model exactly is loaded (only the one labelled ``entry`` if given). If none fits, raises
    :class:`CheckpointMismatchError` naming the model, the file and, in a few lines, the closest
    network's shape mismatches, missing and unexpected keys.
    """
    path = os.fspath(path)
    obj = read_checkpoint(path)
    every = state_dict_candidates(obj)
    reports = [(label, state, mismatches(model, state)) for label, state in _select(every, entry, path, obj)]
    fitting = next(((label, state) for label, state, problems in reports if not problems), None)
    if fitting is None:
        label, _, problems = min(reports, key=lambda r: sum(int(p.split(" ", 1)[0]) for p in r[2]))
        where = f" (entry {label!r} of {[lb for lb, _ in every]})" if len(every) > 1 else ""
        raise CheckpointMismatchError(
            f"checkpoint {path!r}{where} does not fit model {_describe(model)}:\n"
            + "\n".join(problems)
            + "\nCheck that the file was trained for this architecture and number of classes "
            "(and, for CIFAR ResNets, the same shortcut option)."
        )
    model.load_state_dict(fitting[1], strict=False)
    return model
