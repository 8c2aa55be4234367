"""Packaging: ranges in pyproject, exact pins in constraints.txt, setup/CI/conda installing from them, the
license, the torchvision import guard."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", line), f"constraints.txt: not an exact pin: {line!r}"
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_constraints_pin_torch_and_torchvision_exactly():
    pins = _constraints()
    assert pins["torch"] == "2.13.0" and pins["torchvision"] == "0.28.0"


def test_pyproject_states_ranges_that_hold_the_pinned_versions():
    from packaging.requirements import Requirement

    pins = _constraints()
    project = _project()
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    for req in reqs:
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{req.name} (pyproject.toml) has no exact version in constraints.txt"
        assert req.specifier.contains(pins[name]), f"constraints.txt's {name}=={pins[name]} is outside {req}"
        assert not any(s.operator in ("==", "===") for s in req.specifier), f"pyproject.toml pins {req} exactly"


def test_core_dependencies_leave_out_the_notebook_and_test_tools():
    core = {re.split(r"[=<>!~\[ ]", r, maxsplit=1)[0].lower() for r in _project()["dependencies"]}
    assert not core & {"jupyterlab", "ipykernel", "papermill", "nbval", "pytest", "submitit", "tensorboard"}
    extras = _project()["optional-dependencies"]
    assert {"notebooks", "test", "cluster", "tensorboard"} <= set(extras)


def test_setup_ci_and_conda_install_every_extra_from_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    extras = re.search(r"^EXTRAS := (.+)$", makefile, re.M).group(1).strip()
    assert set(extras.split(",")) == set(_project()["optional-dependencies"])
    assert '-c constraints.txt -e ".[$(EXTRAS)]"' in makefile
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert pip == ["-c constraints.txt", f'-e ".[{extras}]"']
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_license_file_is_the_mit_license_pyproject_names():
    assert _project()["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


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
