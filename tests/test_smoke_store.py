"""The stored notebooks' runs are committed, so that nbval compares tables computed from the same numbers on
every machine.

``make test`` replays the notebooks (smoke profile) with nbval, digit for digit. Training is bit-exact on
one CPU model only (results/superseded/cpu300-teacher-a/README.md), so if nbval trained the smoke runs, the
stored outputs would match only the machine they were made on. The smoke runs' records (config, summary,
metrics, curriculum, the teacher's scores; no weights) are committed instead (``git add -f``: run folders
are ignored by default), and the notebooks read them: this test fails when a smoke run is not committed
(for instance after a change that gives a smoke run a new id: train it with ``make notebooks``, then
``git add -f`` its record as the README says).
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from kdrepro.experiments import Experiment

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "results" / "runs"
RECORD = ("config.json", "summary.json", "metrics.jsonl")


def _tracked() -> set[str] | None:
    """Files under results/runs that git tracks (None outside a git checkout: then what is on disk counts)."""
    try:
        out = subprocess.run(["git", "ls-files", "results/runs"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return set(out.stdout.splitlines())


def test_every_run_the_stored_notebooks_read_is_committed_and_finished():
    exp = Experiment("smoke", results_dir=ROOT / "results")
    configs = exp.all_configs()
    assert len(configs) == 24  # kdrepro/profiles/smoke.yaml: 3 runs of 01, 7 of 02 and 03, 14 of 04-06
    tracked = _tracked()
    missing = []
    for cfg in configs:
        d = RUNS / cfg.run_id
        files = [f"results/runs/{cfg.run_id}/{name}" for name in RECORD]
        if tracked is not None and not set(files) <= tracked or not (d / "summary.json").exists():
            missing.append(cfg.run_id)
            continue
        summary = json.loads((d / "summary.json").read_text())
        assert summary["finished"] and summary["epochs"] == cfg.epochs == len(
            (d / "metrics.jsonl").read_text().splitlines()), cfg.run_id
        if cfg.curriculum is not None and any(phase.curriculum for phase in cfg.schedule):
            assert list((d / "curriculum").glob("phase*.pt")), f"{cfg.run_id}: curriculum records not committed"
    assert not missing, f"smoke runs not committed (git add -f their config, summary, metrics): {missing}"
    # notebook 06 reads the teacher's scores beside its run: committed too
    teachers = {c.teacher.run_id for c in configs if c.has_teacher_run}
    assert teachers
    for teacher_id in teachers:
        scores = f"results/runs/{teacher_id}/scores/max_logit.pt"
        assert (ROOT / scores).exists() and (tracked is None or scores in tracked), scores
