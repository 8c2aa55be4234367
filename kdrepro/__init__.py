"""kdrepro: a reproducible replication of *Knowledge Distillation via Instance-level Sequence Learning*
(Zhao, Sun, Dong, Dong, Li; arXiv 2106.10885, 2021), called SLKD in the authors' code
(github.com/HaoranZhao1988/kd).

Importing kdrepro makes ``import torchvision`` safe on CPU-only torch (see :mod:`kdrepro._torchvision`).

It also sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it, when torch is not imported yet:
OpenMP threads that spin while they wait make a multi-threaded run many times slower as soon as another
process uses the same cores (measured on 2 cores with other training jobs running: a 5-epoch digits run
took 123 s with spinning threads, 21 s with passive ones; two such runs side by side 306 s against 39 s).
That was the cause of "two runs side by side take 94 s each against 6 s alone".
"""
import os as _os
import sys as _sys

if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._torchvision import ensure_torchvision_importable  # noqa: E402

ensure_torchvision_importable()

__version__ = "0.2.0"
