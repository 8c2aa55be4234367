"""Plugins (kdrepro.plugins): a tiny package made here, really pip-installed into a temporary folder, whose
``kdrepro.plugins`` entry point registers a loss term and a curriculum score; they train through
``kdrepro train``, ``kdrepro reproduce --jobs 2`` and the submitit local executor, each in processes the
stock command starts. Also: ``--plugin MODULE`` / ``$KDREPRO_PLUGINS`` and their one-line errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from kdrepro import plugins

try:
    import submitit
except ImportError:
    submitit = None

PLUGIN = '''
"""A kdrepro plugin: a logit-norm loss term and a low-loss curriculum score."""
import os

import torch

from kdrepro.sequencer import register_score
from kdrepro.terms import LossTerm, TermParams, register_term


class LogitNormParams(TermParams):
    weight: float = 0.01


@register_term
class LogitNorm(LossTerm):
    name = "demo_logit_norm"
    display = "logit norm"
    Params = LogitNormParams

    def forward(self, step):
        return {"demo_logit_norm": self.params.weight * step.student_logits.float().pow(2).mean()}


@register_score("demo_low_loss")
def demo_low_loss(logits, targets, teacher_logits):
    marks = os.environ.get("KDREPRO_DEMO_MARKS")
    if marks:  # which processes scored: the workers and jobs, not the test's own
        open(os.path.join(marks, f"score-{os.getpid()}"), "w").close()
    return -torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "kdrepro-demo-plugin"
version = "0.1"

[project.entry-points."kdrepro.plugins"]
demo = "kdrepro_demo_plugin"

[tool.setuptools]
py-modules = ["kdrepro_demo_plugin"]
'''

TINY = ["--set", "dataset=digits", "--set", "model=resnet8", "--set", "epochs=2", "--set", "num_threads=1",
        "--set", "progress=false", "--set", "teacher_cache=false", "--set", "curriculum.pacing=linear", "--set", "curriculum.pacing_options.num_phases=1",
        "--set", "curriculum.pacing_options.warmup=1"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The plugin package, built and installed by pip into a folder of its own; the environment that puts
    that folder on the path (and nothing else: no --plugin, no $KDREPRO_PLUGINS)."""
    root = tmp_path_factory.mktemp("plugin")
    src = root / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (src / "kdrepro_demo_plugin.py").write_text(textwrap.dedent(PLUGIN))
    site = root / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--target", str(site), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(site.glob("kdrepro_demo_plugin-0.1.dist-info/entry_points.txt"))
    marks = root / "marks"
    marks.mkdir()
    env = {k: v for k, v in os.environ.items() if k != plugins.ENV}
    env.update(PYTHONPATH=os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               KDREPRO_DEMO_MARKS=str(marks), PYTHONUNBUFFERED="1")
    return env, marks


def _kdrepro(env, *args, module="kdrepro"):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env)


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _check_plugin_runs(runs: Path, marks: Path, before: set[str]) -> None:
    """Every run with the plugin's term logged it each epoch; every run with its score used it; the score
    ran in processes other than this one."""
    term_runs = score_runs = 0
    for d in sorted(p for p in runs.iterdir() if p.is_dir()):
        cfg = json.loads((d / "config.json").read_text())
        assert (d / "summary.json").exists(), d.name
        if (cfg["losses"].get("demo_logit_norm") or {}).get("weight", 0) > 0:
            term_runs += 1
            assert all(m["train_demo_logit_norm"] > 0 for m in _metrics(d)), d.name
        if (cfg.get("curriculum") or {}).get("score") == "demo_low_loss":
            score_runs += 1
    assert term_runs and score_runs
    scored_by = {p.name for p in marks.iterdir()} - before
    assert scored_by and f"score-{os.getpid()}" not in scored_by


@pytest.mark.slow
def test_an_installed_plugin_trains_through_kdrepro_train(installed, tmp_path):
    env, marks = installed
    before = {p.name for p in marks.iterdir()}
    proc = _kdrepro(env, "train", *TINY, "--set", "method=slkd", "--set", "teacher.model=resnet8",
                    "--set", "teacher.epochs=1", "--set", "losses.demo_logit_norm.weight=0.01",
                    "--set", "curriculum.score=demo_low_loss", "--results", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_plugin_runs(tmp_path / "runs", marks, before)
    # without the package on the path the stock command refuses the term, in one line
    bare = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    proc = _kdrepro(bare, "train", *TINY, "--set", "losses.demo_logit_norm.weight=0.01", "--dry-run",
                    "--results", str(tmp_path))
    assert proc.returncode == 2 and "losses.demo_logit_norm: unknown loss term" in proc.stderr


def _profile(tmp_path) -> Path:
    path = tmp_path / "plugged.yaml"
    path.write_text(yaml.safe_dump({
        "name": "plugged", "datasets": ["digits"], "seeds": [0],
        "base": {"epochs": 2, "num_threads": 1, "progress": False, "teacher_cache": False,
                 "curriculum": {"score": "demo_low_loss", "pacing": "linear",
                                "pacing_options": {"num_phases": 1, "warmup": 1}}},
        "pairs": [{"teacher": {"model": "resnet8", "epochs": 1}, "student": "resnet8"}],
        "kd_baselines": {"demo": {"losses": {"demo_logit_norm": {"weight": 0.01}}}},
    }))
    return path


@pytest.mark.slow
def test_an_installed_plugin_trains_through_reproduce_workers_and_the_submitit_local_executor(installed, tmp_path):
    env, marks = installed
    profile = _profile(tmp_path)
    before = {p.name for p in marks.iterdir()}
    proc = _kdrepro(env, "reproduce", "--profile", str(profile), "--results", str(tmp_path / "workers"),
                    "--jobs", "2", "--train-only")
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    runs = tmp_path / "workers" / "runs"
    assert len([d for d in runs.iterdir() if d.is_dir()]) == 5  # teacher, vanilla, KD, demo, SLKD
    _check_plugin_runs(runs, marks, before)
    if submitit is None:
        pytest.skip("the submitit local executor needs the cluster extra")
    # the same store without the two plugin runs: the submitit jobs train them again
    shutil.copytree(tmp_path / "workers", tmp_path / "jobs", ignore=shutil.ignore_patterns("plugged"))
    plugged = [d for d in (tmp_path / "jobs" / "runs").iterdir() if d.is_dir() and (
        d.name.startswith("slkd-") or "demo_logit_norm" in (d / "config.json").read_text()
        and '"weight": 0.01' in (d / "config.json").read_text())]
    assert len(plugged) == 2
    for d in plugged:
        shutil.rmtree(d)
    before = {p.name for p in marks.iterdir()}
    proc = _kdrepro(env, "reproduce", "--profile", str(profile), "--results", str(tmp_path / "jobs"),
                    "--executor", "submitit-local", "--jobs", "1", "--train-only")
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "jobs" / "plugged" / "jobs").glob("*.json")]
    assert sorted(r["run_id"] for r in records) == sorted(d.name for d in plugged)
    assert all(r["executor"] == "submitit-local" and r["outcome"] == "finished" for r in records)
    _check_plugin_runs(tmp_path / "jobs" / "runs", marks, before)


def test_a_plugin_named_by_option_or_environment_loads_once_and_a_bad_one_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "kdrepro_env_plugin.py").write_text("import kdrepro.sequencer as s\n"
                                                   "s.register_score('env_plugin_score')(lambda l, t, tl: -l.max(1).values)\n")
    (tmp_path / "kdrepro_broken_plugin.py").write_text("raise RuntimeError('half installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.ENV, "kdrepro_env_plugin")
    from kdrepro.sequencer import SCORES

    try:
        assert "kdrepro_env_plugin" in plugins.load_plugins() and "env_plugin_score" in SCORES
        plugins.load_plugins()  # once: a second registration of the same name would raise
        from kdrepro.cli import main

        assert main(["--plugin", "kdrepro_broken_plugin", "runs", "--results", str(tmp_path)]) == 1
        err = capsys.readouterr().err.strip()
        assert err == ("kdrepro: error: plugin 'kdrepro_broken_plugin' (--plugin) failed to load: "
                       "RuntimeError: half installed")
        assert os.environ[plugins.ENV] == "kdrepro_env_plugin,kdrepro_broken_plugin"  # what workers inherit
    finally:
        SCORES.unregister("env_plugin_score")
        plugins._loaded.pop("kdrepro_env_plugin", None)
