"""examples/own_loop.py: SLKD in a plain PyTorch loop through the public API (kdrepro.curriculum, kdrepro.losses)."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_own_loop_example_trains_with_the_authors_pools():
    from sklearn.datasets import load_digits

    out = subprocess.run([sys.executable, str(ROOT / "examples" / "own_loop.py"), "--quick"], capture_output=True,
                         text=True, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    pools = [int(p) for p in re.findall(r"pool (\d+)/1437", out.stdout)]
    # the authors' pacing at 8 epochs: warm-up 1 epoch, then 20/40/60/80 % for one epoch each, 100 % for three
    labels = load_digits().target[:1437].tolist()
    counts = [labels.count(c) for c in range(10)]
    want = [sum(math.ceil(round(f * n, 9)) for n in counts) for f in (1.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0)]
    assert pools == want
    student = float(re.search(r"student: test top-1 ([\d.]+)", out.stdout).group(1))
    assert student > 30.0, out.stdout  # chance is 10 %
