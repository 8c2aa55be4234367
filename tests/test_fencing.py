"""Fencing: a lock holder that stalls past the stale timeout never writes into the run again.

A process training a run is paused (SIGSTOP) long enough for its lock to go stale; a second process takes
the lock over, resumes the run from the first one's checkpoint and finishes it; then the first process is
resumed. It must stop with exit 1 and leave every file of the finished run byte-identical.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdrepro.rundir import RunDir, atomic_write

ARGS = ["train", "--set", "method=ce", "--set", "dataset=digits", "--set", "num_threads=1", "--set", "progress=false",
        "--set", "crop_padding=1", "--set", "hflip=false"]


def _files(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
def test_a_stalled_holder_resumed_after_a_takeover_leaves_the_finished_run_untouched(tmp_path):
    env = dict(os.environ, KDREPRO_LOCK_STALE="1.5", PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "kdrepro", *ARGS, "--set", "epochs=30", "--results", str(tmp_path)]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    runs = tmp_path / "runs"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:  # paused after its second checkpoint
        metrics = list(runs.glob("*/metrics.jsonl"))
        if metrics and len(metrics[0].read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert first.poll() is None, first.communicate()
    first.send_signal(signal.SIGSTOP)
    try:
        time.sleep(3.0)  # twice the stale timeout: the lock's heartbeat is old
        second = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
        assert second.returncode == 0 and "resumed and finished" in second.stdout, second.stderr
        run, = [d for d in runs.iterdir() if d.is_dir()]
        finished = _files(run)
        assert "summary.json" in finished
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 1, err
    assert "taken over by another process" in err or "finished by another process" in err, err
    assert _files(run) == finished  # not one byte of the finished run changed
    assert not list(runs.glob("*.lock*")) and not list(tmp_path.rglob("*.tmp"))
    assert RunDir(run).status() == "finished"


def test_a_fence_that_refuses_leaves_the_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.jsonl"
    target.write_text("old\n")

    def refuse():
        raise RuntimeError("not yours")

    with pytest.raises(RuntimeError, match="not yours"):
        atomic_write(target, "new\n", fence=refuse)
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]
    calls = []
    atomic_write(target, "new\n", fence=lambda: calls.append(target.read_text()))
    assert calls == ["old\n"] and target.read_text() == "new\n"  # called once, just before the rename


def test_a_finished_run_refuses_a_write_through_the_stores_fence(tmp_path):
    """The fence refuses a holder whose token is still in the lock once the run has a summary (finished by
    another process that took the lock and gave it back)."""
    from kdrepro.runs import LockLostError, RunStore, _Heartbeat

    store = RunStore(tmp_path)
    run = store.runs_dir / "x"
    run.mkdir(parents=True)
    lock = store.runs_dir / "x.lock"
    lock.write_text('{"host": "h", "pid": 1, "token": "mine"}')
    beat = _Heartbeat(lock, "mine", 60)
    try:
        fenced = RunDir(run, fence=RunStore.fence(beat, run))
        fenced.write_metrics([{"epoch": 1}])
        (run / "summary.json").write_text("{}")
        with pytest.raises(LockLostError, match="finished by another process"):
            fenced.write_metrics([{"epoch": 1}, {"epoch": 2}])
        (run / "summary.json").unlink()
        lock.write_text('{"host": "h", "pid": 2, "token": "theirs"}')
        with pytest.raises(LockLostError, match="taken over"):
            fenced.write_metrics([{"epoch": 1}, {"epoch": 2}])
        assert (run / "metrics.jsonl").read_text() == '{"epoch": 1}\n'
    finally:
        beat.stop()
