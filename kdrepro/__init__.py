"""kdrepro: a reproducible replication of *Knowledge Distillation via Instance-level Sequence Learning*
(Zhao, Sun, Dong, Dong, Li; arXiv 2106.10885, 2021), called SLKD in the authors' code
(github.com/HaoranZhao1988/kd).

Importing kdrepro makes ``import torchvision`` safe on CPU-only torch (see :mod:`kdrepro._torchvision`).
"""
from ._torchvision import ensure_torchvision_importable

ensure_torchvision_importable()

__version__ = "0.1.0"
