"""Train every run of a profile in parallel worker processes before the notebooks read them.

``python -m kdrepro.reproduce --profile cpu --jobs 2`` calls :func:`pretrain` first: each run of every
study (:meth:`kdrepro.experiments.Experiment.all_configs`) that is not finished in the run store is
trained by ``python -m kdrepro train --config <its config> --results <results>`` in one of ``jobs``
worker processes, and the notebooks then find every run in the store. On a CPU with few cores, two
single-threaded workers (the ``cpu`` profile sets ``num_threads: 1``) train about a quarter more runs per
hour than one process using both cores, because small CIFAR convolutions do not keep two threads busy.
On a GPU, small models leave it mostly idle between kernel launches, so several workers can share one
(``--device cuda --jobs 12``: each worker its own process and CUDA context). Measured on one H200 with 16
CPU cores: 35 resnet8 runs of the ``cpu300`` profile (3,130 epochs) in 6.3 minutes with 12 workers.

Order and dependencies: a student starts after its teacher has finished. Students that read the
teacher-logit cache (:mod:`kdrepro.cache`) wait until the first of them, which builds the cache, has
finished, so that the cache is built once, not by every worker at the same time. Runs locked by another
process (:class:`kdrepro.runs.RunLockedError`) are waited for, and count toward the ``jobs`` limit. A worker's output goes to
``<results>/<profile>/logs/<run id>.log``. A failed run is reported with its log and its dependants are
skipped; the other runs go on. Interrupting (Ctrl-C) stops the workers; every run resumes from its last
finished epoch next time.

The planning and the scheduler live in :mod:`kdrepro.executors`, shared with the Slurm executor: this
is :func:`kdrepro.executors.launch` with a :class:`kdrepro.executors.LocalExecutor`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .config import RunConfig
from .executors import (LocalExecutor, PlannedRun, PretrainError, _terminate_as_interrupt,  # noqa: F401
                        launch, plan_jobs, uses_logit_cache)

#: the planned run of a worker (the name of kdrepro 0.1)
_Job = PlannedRun

__all__ = ["PretrainError", "plan_jobs", "pretrain", "uses_logit_cache"]


def pretrain(configs: list[RunConfig], results: str | Path, jobs: int = 1, logs_dir: str | Path | None = None,
             log: Callable[[str], None] = print, poll: float = 2.0, jobs_dir: str | Path | None = None,
             launcher: str = "process") -> list[str]:
    """Train every unfinished run of ``configs`` with ``jobs`` parallel workers; return the run ids trained.

    Raises :class:`PretrainError` naming the failed runs (and their logs) after the others have finished.
    ``jobs_dir``: where to keep a job record per run (:class:`kdrepro.executors.JobRecord`), so that
    ``kdrepro runs`` shows the queued ones; ``launcher``: ``process`` or ``submitit``
    (:class:`kdrepro.executors.LocalExecutor`).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    return launch(configs, results, LocalExecutor(jobs, launcher=launcher, poll=poll), logs_dir=logs_dir,
                  jobs_dir=jobs_dir, log=log)
