"""Shared test helpers."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest


def _weights_file_hash(path: Path) -> str:
    """The documented weights hash (``kdrepro.cache.state_dict_hash``) recomputed from a saved weights file:
    sha256 over the tensors in name order, each as its name, dtype and raw bytes; the first 16 hex digits."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(torch.load(path, map_location="cpu", weights_only=True).items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


@pytest.fixture
def weights_file_hash():
    return _weights_file_hash
