"""The lean install: the built wheel in a fresh virtual environment, core dependencies only (at the versions of
constraints.txt, so torch is the pinned 2.13.0), imports kdrepro, trains a demo run with ``kdrepro train``, runs
the own-loop example, and ``kdrepro reproduce`` says in one line where the notebooks are."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: distributions of the extras that the core install must not pull in
EXTRA_ONLY = ("jupyterlab", "ipykernel", "papermill", "nbval", "pytest", "submitit", "tensorboard")


def _run(cmd, cwd, timeout=900, env=None):
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert out.returncode == 0, f"{cmd} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.mark.slow
def test_the_wheel_installs_lean_and_trains_in_a_fresh_environment(tmp_path):
    src = tmp_path / "src"  # a copy, so that the build leaves no build/ folder in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "kdrepro", src / "kdrepro", ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist",
          src], cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("kdrepro-*.whl"))

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    py, pip = venv / "bin" / "python", [venv / "bin" / "python", "-m", "pip"]
    _run([*pip, "install", "--quiet", "-c", ROOT / "constraints.txt", wheel], cwd=tmp_path)
    installed = {line.split("==")[0].lower() for line in _run([*pip, "freeze"], cwd=tmp_path).stdout.split()}
    assert "torch" in installed and "kdrepro" in installed
    assert not installed & set(EXTRA_ONLY), f"the core install pulled in extras: {installed & set(EXTRA_ONLY)}"
    versions = _run([py, "-c", "import kdrepro, torch, torchvision; print(torch.__version__, torchvision.__version__)"],
                    cwd=tmp_path).stdout.split()
    assert versions[0].split("+")[0] == "2.13.0" and versions[1].split("+")[0] == "0.28.0"

    work = tmp_path / "work"  # outside any checkout
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KDREPRO_")}
    out = _run([venv / "bin" / "kdrepro", "train", "--set", "method=ce", "--set", "dataset=digits", "--set", "epochs=1",
                "--set", "model=resnet8", "--set", "num_threads=1", "--set", "progress=false"], cwd=work, env=env)
    assert "test top-1" in out.stdout
    assert len(list((work / "results" / "runs").glob("*/summary.json"))) == 1

    example = ROOT / "examples" / "own_loop.py"
    if example.exists():
        out = _run([py, example, "--quick"], cwd=work, env=env)
        assert "test top-1" in out.stdout

    res = subprocess.run([venv / "bin" / "kdrepro", "reproduce"], cwd=work, capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "notebooks/ folder of the kdrepro source repository" in lines[0], res.stderr
