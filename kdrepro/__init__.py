"""kdrepro: a reproducible replication of *Knowledge Distillation via Instance-level Sequence Learning*
(Zhao, Sun, Dong, Dong, Li; arXiv 2106.10885, 2021), called SLKD in the authors' code
(github.com/HaoranZhao1988/kd).

Importing kdrepro makes a later ``import torchvision`` safe on CPU-only torch (see :mod:`kdrepro._torchvision`);
it does not import torch itself, so the command line's ``--help`` starts fast.

It also sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it, when torch is not imported yet:
OpenMP threads that spin while they wait make a multi-threaded run many times slower as soon as another
process uses the same cores (docs/speed.md, Threads).
"""
import os as _os
import sys as _sys

if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._torchvision import install_import_hook  # noqa: E402

install_import_hook()

__version__ = "0.2.0"
