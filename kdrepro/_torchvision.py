"""The one place kdrepro imports torchvision.

The pinned ``torchvision==0.28.0`` wheel is a CUDA build. On a CPU-only ``torch==2.13.0`` its compiled
extension (``torchvision/_C*.so``) cannot load, and ``import torchvision`` then fails while registering
fake kernels for ``torchvision::nms`` with ``RuntimeError: operator torchvision::nms does not exist``.

:func:`ensure_torchvision_importable` first tries to load the real extension. Only when that fails does
it define the two operator schemas that torchvision's ``_meta_registrations`` expects (``nms`` and
``qnms``) so that the pure-Python parts (datasets, transforms) import. Those two operators then have no
kernel: calling ``torchvision.ops.nms`` raises, which kdrepro never does.

Every kdrepro module imports torchvision through :func:`import_torchvision` (or after importing
``kdrepro``, whose ``__init__`` installs :func:`install_import_hook`: the guard then runs when torchvision
is first imported, so that ``import kdrepro`` itself does not import torch), never directly.
"""
from __future__ import annotations

import glob
import importlib.abc
import importlib.util
import os
import sys

_FALLBACK_LIBRARY = None  # keeps the torch.library.Library alive for the life of the process
_EXTENSION_LOADED: bool | None = None


def ensure_torchvision_importable() -> bool:
    """Make ``import torchvision`` work. Returns True when its compiled extension loaded.

    Idempotent; does nothing when torchvision is already imported.
    """
    global _FALLBACK_LIBRARY, _EXTENSION_LOADED
    import torch

    if _EXTENSION_LOADED is not None:
        return _EXTENSION_LOADED
    if "torchvision" in sys.modules:
        _EXTENSION_LOADED = hasattr(torch.ops.torchvision, "nms")
        return _EXTENSION_LOADED
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        raise ImportError("torchvision is not installed: run `make setup` (it installs torchvision==0.28.0)")
    package_dir = os.path.dirname(spec.origin)
    loaded = False
    for lib in sorted(glob.glob(os.path.join(package_dir, "_C*.so")) + glob.glob(os.path.join(package_dir, "_C*.pyd"))):
        try:
            torch.ops.load_library(lib)
            loaded = True
            break
        except (OSError, RuntimeError):
            continue
    if not loaded and not _schema_exists("torchvision::nms"):
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
        _FALLBACK_LIBRARY = lib
    _EXTENSION_LOADED = loaded
    return loaded


def _schema_exists(qualname: str) -> bool:
    import torch

    namespace, name = qualname.split("::")
    return hasattr(getattr(torch.ops, namespace), name)


def import_torchvision():
    """Import torchvision behind the guard and return the module."""
    ensure_torchvision_importable()
    import torchvision

    return torchvision


class _GuardFinder(importlib.abc.MetaPathFinder):
    """Runs :func:`ensure_torchvision_importable` just before the first ``import torchvision``, then steps
    aside (it finds nothing itself: the ordinary finders import torchvision)."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            uninstall_import_hook()
            ensure_torchvision_importable()
        return None


_HOOK = _GuardFinder()


def install_import_hook() -> None:
    """Make a later ``import torchvision`` safe without importing torch now (run at once if it is imported)."""
    if "torchvision" in sys.modules:
        ensure_torchvision_importable()
    elif _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)


def uninstall_import_hook() -> None:
    if _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)
