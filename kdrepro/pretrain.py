"""Train every run of a profile in parallel worker processes before the notebooks read them.

``python -m kdrepro.reproduce --profile cpu --jobs 2`` calls :func:`pretrain` first: each run of every
study (:meth:`kdrepro.experiments.Experiment.all_configs`) that is not finished in the run store is
trained by ``python -m kdrepro train --config <its config> --results <results>`` in one of ``jobs``
worker processes, and the notebooks then find every run in the store. On a CPU with few cores, two
single-threaded workers (the ``cpu`` profile sets ``num_threads: 1``) train about a quarter more runs per
hour than one process using both cores, because small CIFAR convolutions do not keep two threads busy.
On a GPU, use one job.

Order and dependencies: a student starts after its teacher has finished. Students that read the
teacher-logit cache (:mod:`kdrepro.cache`) wait until the first of them, which builds the cache, has
finished, so that the cache is built once, not by every worker at the same time. Runs locked by another
process (:class:`kdrepro.runs.RunLockedError`) are waited for, and count toward the ``jobs`` limit. A worker's output goes to
``<results>/<profile>/logs/<run id>.log``. A failed run is reported with its log and its dependants are
skipped; the other runs go on. Interrupting (Ctrl-C) stops the workers; every run resumes from its last
finished epoch next time.
"""
from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .config import RunConfig
from .runs import RunStore, lock_owner


class PretrainError(RuntimeError):
    """Some runs failed; the message names them and their logs."""


def uses_logit_cache(cfg: RunConfig) -> bool:
    """Whether a run reads the cache of a teacher run of the store (:attr:`RunConfig.reads_logit_cache`)."""
    return cfg.has_teacher_run and cfg.reads_logit_cache


def _cache_group(cfg: RunConfig) -> tuple:
    """Runs with equal groups share one cache file (same teacher, data and augmentation)."""
    return (cfg.teacher_config().run_id, cfg.dataset, json.dumps(cfg.dataset_options, sort_keys=True),
            cfg.augment, cfg.crop_padding, cfg.hflip)


@dataclass
class _Job:
    cfg: RunConfig
    needs: set[str] = field(default_factory=set)
    proc: subprocess.Popen | None = None
    started: float = 0.0
    log: Path | None = None
    builds_cache: bool = False

    @property
    def cost(self) -> float:
        """Relative training cost, for starting the longest runs first (a live teacher costs about double)."""
        live_teacher = self.cfg.method != "ce" and not uses_logit_cache(self.cfg)
        return self.cfg.epochs * (2.0 if live_teacher else 1.0)


def plan_jobs(configs: list[RunConfig], store: RunStore) -> list[_Job]:
    """The unfinished runs of ``configs`` with the run ids each must wait for, in start order: teachers and
    the runs that build a logit cache first, then the longest runs first (so that no long run is left
    to finish alone at the end)."""
    pending = {c.run_id: c for c in configs if store.status(c) != "finished"}
    builders: dict[tuple, str] = {}
    jobs = []
    for run_id, cfg in pending.items():
        needs, builds = set(), False
        if cfg.has_teacher_run:
            teacher_id = cfg.teacher_config().run_id
            if teacher_id in pending:
                needs.add(teacher_id)
        if uses_logit_cache(cfg):
            group = _cache_group(cfg)
            if group in builders:
                needs.add(builders[group])
            else:
                builders[group], builds = run_id, True
        jobs.append(_Job(cfg, needs, builds_cache=builds))
    teachers = {j.cfg.teacher_config().run_id for j in jobs if j.cfg.has_teacher_run}
    return sorted(jobs, key=lambda j: (j.cfg.run_id not in teachers, not j.builds_cache, -j.cost))


def pretrain(configs: list[RunConfig], results: str | Path, jobs: int = 1, logs_dir: str | Path | None = None,
             log: Callable[[str], None] = print, poll: float = 2.0) -> list[str]:
    """Train every unfinished run of ``configs`` with ``jobs`` parallel workers; return the run ids trained.

    Raises :class:`PretrainError` naming the failed runs (and their logs) after the others have finished.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    store = RunStore(results)
    results = Path(results)
    logs = Path(logs_dir) if logs_dir else results / "logs"
    waiting = plan_jobs(configs, store)
    total, finished_before = len(waiting), len(configs) - len(waiting)
    log(f"pretrain: {len(configs)} runs, {finished_before} already in the store, {total} to train with "
        f"{jobs} worker(s); logs in {logs}")
    if not waiting:
        return []
    logs.mkdir(parents=True, exist_ok=True)
    running: list[_Job] = []
    done: set[str] = set()
    failed: dict[str, str] = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="kdrepro-pretrain-") as tmp, _terminate_as_interrupt():
        try:
            while waiting or running:
                for job in list(running):
                    if job.proc.poll() is None:
                        continue
                    running.remove(job)
                    run_id = job.cfg.run_id
                    minutes = (time.time() - job.started) / 60
                    if job.proc.returncode == 0 and store.status(job.cfg) == "finished":
                        done.add(run_id)
                        s = store.load(run_id).summary
                        log(f"[{len(done) + len(failed)}/{total}] {run_id}: last {s['last_top1']:.2f}, "
                            f"best {s['best_top1']:.2f} ({minutes:.1f} min; {(time.time() - t0) / 60:.0f} min so far)")
                    elif lock_owner(store.lock_path(job.cfg)) is not None:
                        waiting.append(job)  # another process holds it: wait for that, then start again
                    else:
                        failed[run_id] = str(job.log)
                        log(f"[{len(done) + len(failed)}/{total}] {run_id} FAILED (exit {job.proc.returncode}); "
                            f"see {job.log}")
                for job in list(waiting):  # dependants of failed runs cannot run
                    lost = job.needs & set(failed)
                    if lost:
                        waiting.remove(job)
                        failed[job.cfg.run_id] = f"not started: needs {', '.join(sorted(lost))}"
                        log(f"[{len(done) + len(failed)}/{total}] {job.cfg.run_id} skipped: "
                            f"{', '.join(sorted(lost))} failed")
                # runs that another process is training count toward the limit: the machine is busy with them
                elsewhere = sum(1 for job in waiting if lock_owner(store.lock_path(job.cfg)) is not None)
                for job in list(waiting):
                    if len(running) + elsewhere >= jobs:
                        break
                    if not job.needs <= done:
                        continue
                    if store.status(job.cfg) == "finished":  # trained elsewhere meanwhile
                        waiting.remove(job)
                        done.add(job.cfg.run_id)
                        continue
                    if lock_owner(store.lock_path(job.cfg)) is not None:
                        continue
                    waiting.remove(job)
                    running.append(_start(job, Path(tmp), results, logs))
                    log(f"  start {job.cfg.run_id} ({job.cfg.epochs} epochs)")
                time.sleep(poll)
        except BaseException:
            for job in running:
                job.proc.terminate()
            for job in running:
                job.proc.wait()
            raise
    log(f"pretrain: {len(done)} trained, {len(failed)} failed in {(time.time() - t0) / 60:.1f} min")
    if failed:
        raise PretrainError("runs that did not finish:\n" + "\n".join(f"  {k}: {v}" for k, v in failed.items()))
    return sorted(done)


@contextlib.contextmanager
def _terminate_as_interrupt():
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt while the workers run, so that ``kill`` stops them too
    (a background job in a non-interactive shell ignores SIGINT)."""
    def handler(signum, _frame):
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


def _start(job: _Job, tmp: Path, results: Path, logs: Path) -> _Job:
    cfg_file = tmp / f"{job.cfg.run_id}.json"
    cfg_file.write_text(json.dumps(job.cfg.to_dict()))
    job.log = logs / f"{job.cfg.run_id}.log"
    with open(job.log, "a") as fh:
        job.proc = subprocess.Popen([sys.executable, "-m", "kdrepro", "train", "--config", str(cfg_file),
                                     "--results", str(results)], stdout=fh, stderr=subprocess.STDOUT)
    job.started = time.time()
    return job
