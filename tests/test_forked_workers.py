"""The local executor's forked workers (kdrepro.executors.local._ForkedWorker): each run in a process forked
from a fork server that imported torch and kdrepro once. A forked run must behave exactly as
``python -m kdrepro train`` started afresh: same metrics, the scheduler's current environment and working
directory, output in the run's log, the command's exit status."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

import kdrepro  # noqa: F401  (the torchvision guard)
from kdrepro.executors import LocalExecutor, launch
from kdrepro.executors.local import _ForkedWorker, _ProcessWorker, _forkserver, _train_in_child
from kdrepro.experiments import Experiment

pytestmark = pytest.mark.skipif(_forkserver() is None, reason="no fork server on this system (Windows)")


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_forked_run_equals_a_run_in_a_fresh_interpreter(tmp_path, monkeypatch):
    exp = Experiment("smoke", results_dir=tmp_path / "forked")
    pair = exp.profile.pairs[0]
    kd = exp.student_config("digits", pair, "kd", 0)
    slkd = exp.student_config("digits", pair, "slkd", 0)
    started = []
    for cls in (_ForkedWorker, _ProcessWorker):  # which worker class each executor starts
        monkeypatch.setattr(cls, "__init__", _recording(cls.__init__, started, cls.__name__))
    forked = LocalExecutor(2, poll=0.2)
    assert launch([kd.teacher, kd, slkd], tmp_path / "forked", forked) and set(started) == {"_ForkedWorker"}

    started.clear()
    fresh = tmp_path / "fresh"
    (fresh / "runs").mkdir(parents=True)
    teacher_dir = tmp_path / "forked" / "runs" / kd.teacher.run_id
    shutil.copytree(teacher_dir, fresh / "runs" / kd.teacher.run_id)  # the same teacher, not retrained
    assert launch([kd.teacher, kd, slkd], fresh, LocalExecutor(2, poll=0.2, preload=False)) == sorted(
        [kd.run_id, slkd.run_id])
    assert set(started) == {"_ProcessWorker"}
    for cfg in (kd, slkd):
        a = _metrics(tmp_path / "forked" / "runs" / cfg.run_id)
        b = _metrics(fresh / "runs" / cfg.run_id)
        assert [r["test_top1"] for r in a] == [r["test_top1"] for r in b], cfg.run_id
        assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b], cfg.run_id


def _recording(init, started, name):
    def wrapped(self, *args, **kwargs):
        started.append(name)
        return init(self, *args, **kwargs)
    return wrapped


def test_a_forked_worker_has_the_schedulers_environment_directory_output_and_status(tmp_path, monkeypatch):
    ctx = _forkserver()
    first = ctx.Process(target=_train_in_child, args=(["runs", "--results", str(tmp_path / "a")],
                                                      str(tmp_path / "first.log"), {}, str(tmp_path)))
    first.start()  # starts the fork server (if no other test has) with this process's environment
    first.join()
    assert first.exitcode == 0

    # set after the fork server started: a forked worker must still see them, as a fresh process would
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    monkeypatch.setenv("KDREPRO_RESULTS", "relative-store")
    import os

    log = tmp_path / "runs.log"
    log.write_text("before\n")
    child = ctx.Process(target=_train_in_child, args=(["runs"], str(log), dict(os.environ), os.getcwd()))
    child.start()
    child.join()
    assert child.exitcode == 0
    text = log.read_text()
    assert text.startswith("before\n")  # appended, as the run logs are
    assert "no runs in relative-store/runs" in text

    # a user error: the command's status and its one-line message, as `python -m kdrepro` gives them
    argv = ["show", "no-such-run", "--results", str(tmp_path / "a")]
    bad = ctx.Process(target=_train_in_child, args=(argv, str(tmp_path / "bad.log"), dict(os.environ),
                                                    os.getcwd()))
    bad.start()
    bad.join()
    fresh = subprocess.run([sys.executable, "-m", "kdrepro", *argv], capture_output=True, text=True)
    assert fresh.returncode != 0 and bad.exitcode == fresh.returncode
    assert (tmp_path / "bad.log").read_text().strip() == (fresh.stdout + fresh.stderr).strip()


def test_a_run_on_a_gpu_starts_a_fresh_interpreter(tmp_path, monkeypatch):
    """CUDA cannot be used in a process forked after it was initialised: a run whose device is (or resolves
    to) a GPU is not forked. Here CUDA only looks available to the scheduler; the fresh process trains on
    the CPU."""
    import torch

    exp = Experiment("smoke", results_dir=tmp_path)
    teacher = exp.student_config("digits", exp.profile.pairs[0], "kd", 0).teacher
    started = []
    for cls in (_ForkedWorker, _ProcessWorker):
        monkeypatch.setattr(cls, "__init__", _recording(cls.__init__, started, cls.__name__))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert launch([teacher], tmp_path, LocalExecutor(1, poll=0.2)) == [teacher.run_id]
    assert started == ["_ProcessWorker"]
