"""``kdrepro --help`` and every subcommand's ``--help`` build the parser without importing torch, pandas or
papermill (their start-up time is measured by ``benchmarks/bench_cli_help.py``), and ``import kdrepro``
still makes a later ``import torchvision`` work."""
from __future__ import annotations

import subprocess
import sys

import pytest

SUBCOMMANDS = ["train", "runs", "show", "download", "migrate", "export", "reproduce"]

PROBE = """
import contextlib, io, sys
from kdrepro.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        main({argv!r})
    except SystemExit as e:
        assert e.code == 0, e.code
assert "usage: kdrepro" in out.getvalue()
heavy = sorted(m for m in ("torch", "torchvision", "pandas", "papermill", "matplotlib") if m in sys.modules)
print(",".join(heavy) or "none")
"""


@pytest.mark.parametrize("argv", [["--help"]] + [[c, "--help"] for c in SUBCOMMANDS], ids=" ".join)
def test_help_imports_no_heavy_module(argv):
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "none", f"kdrepro {' '.join(argv)} imported {out.stdout.strip()}"


def test_every_subcommand_is_probed():
    from kdrepro.cli import make_parser

    sub = next(a for a in make_parser()._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(SUBCOMMANDS)


def test_reproduce_arguments_name_the_registered_executors():
    from kdrepro import executors, reproduce_args

    assert reproduce_args.EXECUTORS == tuple(executors.EXECUTORS)


def test_import_kdrepro_then_torchvision_works_without_importing_torch_first():
    code = ("import sys, kdrepro; assert 'torch' not in sys.modules; "
            "import torchvision.transforms; assert 'torch' in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
