"""Packaging: the pins, environment.yml agreeing with pyproject, the torchvision import guard."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[=<>!~\[ ]", req, maxsplit=1)[0].lower()


def test_environment_yml_agrees_with_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pip = [p for p in pip if not p.startswith("-e")]
    assert sorted(pip) == sorted(deps), "environment.yml's pip section must list exactly pyproject's dependencies"
    assert '-e ".[cluster]"' in next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)


def test_torch_and_torchvision_are_pinned_exactly():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in deps and "torchvision==0.28.0" in deps
    names = [_name(d) for d in deps]
    assert names.count("torch") == 1 and names.count("torchvision") == 1


def test_torchvision_imports_through_the_package_in_a_fresh_process():
    code = ("import kdrepro, torch; import torchvision.datasets, torchvision.transforms.v2 as T; "
            "print(hasattr(torch.ops.torchvision, 'nms'), hasattr(torch.ops.torchvision, 'qnms'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]


def test_the_guard_runs_first_in_the_package_init():
    """kdrepro/__init__ installs the guard before anything else, so every kdrepro module may import torchvision."""
    import ast

    body = ast.parse((ROOT / "kdrepro" / "__init__.py").read_text()).body
    body = [n for n in body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    # only the standard library and the OMP_WAIT_POLICY default come before it (no kdrepro or torch import)
    while isinstance(body[0], (ast.Import, ast.If)):
        assert all(a.name in ("os", "sys") for a in getattr(body[0], "names", [])), ast.dump(body[0])
        body = body[1:]
    assert isinstance(body[0], ast.ImportFrom) and body[0].module == "_torchvision"
    assert isinstance(body[1], ast.Expr) and body[1].value.func.id == "install_import_hook"


def test_omp_threads_wait_passively_unless_the_user_says_otherwise():
    import os

    code = "import kdrepro, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.stdout.strip() == "PASSIVE", out.stderr
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**env, "OMP_WAIT_POLICY": "ACTIVE"})
    assert out.stdout.strip() == "ACTIVE", out.stderr
