"""The local executor: worker processes on this machine, started in plan order as their dependencies
finish (``kdrepro reproduce --profile cpu --jobs 2``, before the notebooks read the runs).

On a CPU with few cores, single-threaded workers (the ``cpu`` profile sets ``num_threads: 1``) train more
runs per hour than one process using every core, because small CIFAR convolutions do not keep several
threads busy. On a GPU, small models leave it mostly idle between kernel launches, so several workers can
share one (``--device cuda --jobs 12``: each worker its own process and CUDA context).
"""
from __future__ import annotations

import contextlib
import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..rundir import RunFileError
from ..runs import diverged_in
from .base import DEFAULT_REQUEUES, Executor, RunsFailedError, Submission
from .job import require_submitit, train_run_for
from .planning import PlannedRun, cache_build_threads, cache_built
from .records import JobRecord, _now, _run_info
from .states import _pickled_outcome

#: a local worker that never finishes is not the scheduler's business: submitit's LocalExecutor kills a job
#: after ``timeout_min`` (2 min by default), so the local launcher sets it out of reach (30 days)
_LOCAL_TIMEOUT_MIN = 30 * 24 * 60


class _Worker:
    """A started run of the local executor."""

    job_id: str

    def poll(self) -> int | None:  # None while running, else 0 for success
        raise NotImplementedError

    def terminate(self) -> None:
        raise NotImplementedError

    def wait(self) -> None:
        raise NotImplementedError


def _train_argv(job: PlannedRun, tmp: Path, results: Path) -> list[str]:
    """``kdrepro train``'s arguments for ``job``, its config written to ``tmp`` (both launchers use them)."""
    cfg_file = tmp / f"{job.run_id}.json"
    cfg_file.write_text(json.dumps(job.config_dict()))
    return ["train", "--config", str(cfg_file), "--results", str(results)]


class _ProcessWorker(_Worker):
    """``python -m kdrepro train --config <cfg.json> --results <results>``, output to the run's log."""

    def __init__(self, job: PlannedRun, tmp: Path, results: Path):
        argv = _train_argv(job, tmp, results)
        with open(job.log, "a") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "kdrepro", *argv], stdout=fh, stderr=subprocess.STDOUT)
        self.job_id = str(self.proc.pid)
        self.stdout = self.stderr = self.result = None

    def poll(self) -> int | None:
        return self.proc.poll()

    def terminate(self) -> None:
        self.proc.terminate()

    def wait(self) -> None:
        self.proc.wait()


#: what the fork server imports once, before it forks a worker per run: torch, kdrepro's training path, and
#: torch._dynamo (which ``torch.optim`` imports when its first optimiser is built: about 1.3 s on a CPU)
_PRELOAD = ("torch", "kdrepro.cli", "kdrepro.engine", "kdrepro.runs", "torch._dynamo")


def _forkserver():
    """The ``forkserver`` multiprocessing context with :data:`_PRELOAD`, or None where there is none
    (Windows)."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(_PRELOAD))
    return ctx


def _train_in_child(argv: list[str], log: str, env: dict[str, str], cwd: str) -> None:
    """A forked worker's body: ``kdrepro train`` with ``argv`` in the scheduler's working directory and
    environment (the fork server's are those of its own start), output appended to ``log``, and the
    command's status as the process's exit status."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    # the command itself, as `python -m kdrepro <argv>` runs it (its SystemExit carries the status); the
    # fork server has imported it already
    sys.argv = ["kdrepro", *argv]
    try:
        runpy.run_module("kdrepro", run_name="__main__", alter_sys=True)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


class _ForkedWorker(_Worker):
    """``kdrepro train --config <cfg.json> --results <results>`` in a process forked from a fork server that
    has imported torch and kdrepro once (:data:`_PRELOAD`), so that a run does not pay the interpreter's
    start and torch's import (about 3.5 s per run on a CPU: half a small run's time). Each run is still its
    own process: a crash, a leak or a signal stays in it. Same output, status and results as
    :class:`_ProcessWorker`."""

    def __init__(self, ctx, job: PlannedRun, tmp: Path, results: Path):
        argv = _train_argv(job, tmp, results)
        self.proc = ctx.Process(target=_train_in_child, args=(argv, str(job.log), dict(os.environ), os.getcwd()),
                                name=f"kdrepro-{job.run_id}")
        self.proc.start()
        self.job_id = str(self.proc.pid)
        self.sentinel = self.proc.sentinel
        self.stdout = self.stderr = self.result = None

    def poll(self) -> int | None:
        return self.proc.exitcode

    def terminate(self) -> None:
        self.proc.terminate()

    def wait(self) -> None:
        self.proc.join()


def _on_cpu(cfg) -> bool:
    """Whether a run trains on the CPU. Only those are forked: CUDA cannot be used in a process forked
    after CUDA was initialised, and nothing guarantees that importing torch and kdrepro in the fork server
    leaves it uninitialised on every system, so a run on a GPU starts a fresh interpreter."""
    import torch

    return cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())


def _wait_for_workers(running: list[PlannedRun], timeout: float) -> None:
    """Sleep ``timeout`` seconds, or less: until one of the running workers exits, where every one of them
    can say so (a forked worker's sentinel)."""
    sentinels = [getattr(job.worker, "sentinel", None) for job in running]
    if running and None not in sentinels:
        from multiprocessing.connection import wait

        wait(sentinels, timeout)
    else:
        time.sleep(timeout)


class _SubmititWorker(_Worker):
    """A :class:`TrainRun` job of submitit's ``LocalExecutor`` (a controller process and the job's process)."""

    def __init__(self, executor, job: PlannedRun, results: Path):
        self.job = executor.submit(train_run_for(job.cfg, results, job.log, job.runtime))
        self.job_id = str(self.job.job_id)
        self.stdout, self.stderr = str(self.job.paths.stdout), str(self.job.paths.stderr)
        self.result = str(self.job.paths.result_pickle)
        self._code: int | None = None

    def poll(self) -> int | None:
        if self._code is None and self.job.done():
            # the job's process writes its result file before it exits; none: it was killed
            path = self.job.paths.result_pickle
            self._code = 0 if path.exists() and _pickled_outcome(path) == "success" else 1
        return self._code

    def terminate(self) -> None:
        self.job.cancel(check=False)

    def wait(self) -> None:
        proc = getattr(self.job, "_process", None)
        if proc is not None:
            proc.wait()


class LocalExecutor(Executor):
    """``jobs`` worker processes on this machine, started in plan order as their dependencies finish.

    Runs locked by another process (:class:`kdrepro.runs.RunLockedError`) are waited for, and count toward
    the ``jobs`` limit. A worker's output goes to ``<logs>/<run id>.log``. A failed run is reported with its
    log and its dependants are skipped; the other runs go on, and :class:`RunsFailedError` names the failed
    runs at the end. Interrupting (Ctrl-C, SIGTERM, SIGHUP) stops the workers; every run resumes from its
    last finished epoch next time.

    ``launcher``: ``"process"`` (``kdrepro train`` in a process of its own; needs nothing beyond kdrepro) or
    ``"submitit"`` (a :class:`TrainRun` job of submitit's ``LocalExecutor``: the job body of the Slurm
    executor). With ``"process"`` each run's process is forked from a fork server that has imported torch and
    kdrepro once (:class:`_ForkedWorker`); ``preload=False``, a system without ``fork``, or a run on a GPU
    starts ``python -m kdrepro train`` afresh for every run (:class:`_ProcessWorker`). The scheduler wakes when a
    forked worker exits, else every ``poll`` seconds.
    """

    def __init__(self, jobs: int = 1, launcher: str = "process", poll: float = 2.0, preload: bool = True):
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, got {jobs}")
        if launcher not in ("process", "submitit"):
            raise ValueError(f"launcher must be 'process' or 'submitit', got {launcher!r}")
        self.jobs, self.launcher, self.poll = jobs, launcher, poll
        # "process": fork each run's process from a fork server that has imported torch and kdrepro
        # (_ForkedWorker), or start a fresh interpreter per run with preload=False or where there is none
        self._fork = _forkserver() if launcher == "process" and preload else None
        self.name = "local" if launcher == "process" else "submitit-local"

    def describe(self) -> str:
        how = {"process": "python -m kdrepro train", "submitit": "submitit LocalExecutor jobs"}[self.launcher]
        if self._fork is not None:
            how = "kdrepro train, each run forked from a process that has imported torch and kdrepro"
        return f"{self.jobs} worker(s) on this machine ({how}); each run starts after the runs it waits for"

    def _record(self, sub: Submission, job: PlannedRun, **changes) -> None:
        if sub.jobs_dir is None:
            return
        rec = job.record
        if rec is None:
            rec = job.record = JobRecord(job.run_id, self.name, None, _now(), socket.gethostname(),
                                         str((sub.logs / f"{job.run_id}.log").absolute()), needs=sorted(job.needs),
                                         resources={"workers": self.jobs}, scheduler_pid=os.getpid(),
                                         run=_run_info(job.cfg))
        for k, v in changes.items():
            setattr(rec, k, v)
        with contextlib.suppress(RunFileError):
            rec.write(sub.jobs_dir)

    def execute(self, plan: list[PlannedRun], sub: Submission) -> list[str]:
        store, results, logs, log = sub.store, sub.results, sub.logs, sub.log
        waiting = list(plan)
        total, finished_before = len(waiting), sub.total_runs - len(waiting)
        executor = None
        if self.launcher == "submitit":
            submitit = require_submitit("--executor submitit-local")
            folder = (sub.jobs_dir or logs.parent / "jobs") / "submitit" / "%j"
            executor = submitit.LocalExecutor(folder=folder, max_num_timeout=DEFAULT_REQUEUES)
            executor.update_parameters(timeout_min=_LOCAL_TIMEOUT_MIN)
        log(f"train: {sub.total_runs} runs, {finished_before} already in the store, {total} to train with "
            f"{self.jobs} worker(s); logs in {logs}")
        if not waiting:
            return []
        logs.mkdir(parents=True, exist_ok=True)
        for job in waiting:
            self._record(sub, job)
        running: list[PlannedRun] = []
        done: set[str] = set()
        diverged: set[str] = set()  # finished runs that diverged (their dependants are skipped)
        failed: dict[str, str] = {}
        t0 = time.time()
        with tempfile.TemporaryDirectory(prefix="kdrepro-workers-") as tmp, _terminate_as_interrupt():
            try:
                while waiting or running:
                    for job in list(running):
                        if job.worker.poll() is None:
                            continue
                        running.remove(job)
                        run_id = job.run_id
                        minutes = (time.time() - job.started) / 60
                        if job.worker.poll() in FINISHED_EXITS and store.status(run_id) == "finished":
                            done.add(run_id)
                            self._record(sub, job, outcome="finished")
                            s = store.load(run_id).summary
                            if s.get("diverged"):  # finished, but nothing can be distilled from it
                                diverged.add(run_id)
                            result = diverged_in(s) or f"last {s['last_top1']:.2f}, best {s['best_top1']:.2f}"
                            log(f"[{len(done) + len(failed)}/{total}] {run_id}: {result} ({minutes:.1f} min; "
                                f"{(time.time() - t0) / 60:.0f} min so far)")
                        elif store.owner(job.run_id) is not None:
                            waiting.append(job)  # another process holds it: wait for that, then start again
                        else:
                            failed[run_id] = str(job.log)
                            self._record(sub, job, outcome="failed", note=f"exit {job.worker.poll()}; see {job.log}")
                            log(f"[{len(done) + len(failed)}/{total}] {run_id} FAILED (exit {job.worker.poll()}); "
                                f"see {job.log}")
                    for job in waiting:  # a group's cache file is there: its runs need not wait for its builder
                        if cache_built(job):
                            self._record(sub, job, needs=sorted(job.needs))
                    for job in list(waiting):  # dependants of failed or diverged runs cannot run
                        lost = job.needs & (set(failed) | diverged)
                        if lost:
                            waiting.remove(job)
                            why = ", ".join(f"{r} {'diverged' if r in diverged else 'failed'}" for r in sorted(lost))
                            failed[job.run_id] = f"not started: needs {', '.join(sorted(lost))} ({why})"
                            self._record(sub, job, outcome="skipped", note=f"not started: {why}")
                            log(f"[{len(done) + len(failed)}/{total}] {job.run_id} skipped: {why}")
                    # runs that another process is training count toward the limit: the machine is busy with them
                    elsewhere = sum(1 for job in waiting if store.owner(job.run_id) is not None)
                    for job in list(waiting):
                        if len(running) + elsewhere >= self.jobs:
                            break
                        if not job.needs <= done:
                            continue
                        if store.status(job.run_id) == "finished":  # trained elsewhere meanwhile
                            waiting.remove(job)
                            done.add(job.run_id)
                            continue
                        if store.owner(job.run_id) is not None:
                            continue
                        waiting.remove(job)
                        threads = cache_build_threads(job, waiting, len(running) + elsewhere, self.jobs)
                        if threads:
                            job.runtime["cache_threads"] = threads
                            log(f"  {job.run_id} builds the teacher-logit cache with {threads} threads "
                                "(every other run waits for it)")
                        running.append(self._start(job, Path(tmp), results, logs, executor))
                        self._record(sub, job, job_id=job.worker.job_id, stdout=job.worker.stdout,
                                     stderr=job.worker.stderr, result=job.worker.result)
                        log(f"  start {job.run_id} ({job.cfg.epochs} epochs)")
                    _wait_for_workers(running, self.poll)
            except BaseException:
                for job in running:
                    job.worker.terminate()
                for job in running:
                    job.worker.wait()
                for job in [*running, *waiting]:
                    self._record(sub, job, outcome="interrupted", note="interrupted before it finished")
                raise
        log(f"train: {len(done)} trained, {len(failed)} failed in {(time.time() - t0) / 60:.1f} min")
        if failed:
            raise RunsFailedError("runs that did not finish:\n" + "\n".join(f"  {k}: {v}" for k, v in failed.items()))
        return sorted(done)

    def _start(self, job: PlannedRun, tmp: Path, results: Path, logs: Path, executor) -> PlannedRun:
        job.log = logs / f"{job.run_id}.log"
        if executor is not None:
            job.worker = _SubmititWorker(executor, job, results)
        elif self._fork is not None and _on_cpu(job.cfg):
            job.worker = _ForkedWorker(self._fork, job, tmp, results)
        else:
            job.worker = _ProcessWorker(job, tmp, results)
        job.started = time.time()
        return job



#: a worker's exit statuses for a run it finished: 0, or ``kdrepro train``'s status for a run that diverged
#: (recorded as finished with the flag ``diverged``; docs/errors.md)
FINISHED_EXITS = (0, 4)


@contextlib.contextmanager
def _terminate_as_interrupt():
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt while the workers run, so that ``kill`` stops them too
    (a background job in a non-interactive shell ignores SIGINT). Only the first signal interrupts: later
    ones (``kill`` of a process group reaches a worker, and then its scheduler stops it again) are ignored
    until the block ends, so that the cleanup they would cut short (releasing a run's lock, stopping the
    workers) finishes."""
    def handler(signum, _frame):
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave the signals alone
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
