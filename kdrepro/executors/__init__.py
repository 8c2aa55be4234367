"""Where a profile's runs are trained: on this machine (``local``) or on a Slurm cluster (``slurm``).

::

    kdrepro reproduce --profile cpu --jobs 2                      # local: 2 worker processes, then the notebooks
    kdrepro reproduce --profile paper --executor slurm --slurm-partition gpu --gpus-per-job 1 --time 240
    kdrepro reproduce --profile paper --executor slurm ... --dry-run   # what would be submitted, submit nothing
    kdrepro runs                                                  # every run, with its job's state and log

One code path plans and submits for every executor (:func:`launch`): :func:`plan_jobs` lists the runs
of a profile that are not finished in the run store, each with the runs it must wait for (its teacher;
for a student that reads the teacher-logit cache, the first such student of its cache group, which builds
the cache once); the executor then runs that plan with *afterok* semantics: a run starts once every run
it waits for has finished, and a run whose dependency failed is not started.

* :class:`LocalExecutor` (``--executor local``, the default) starts ``jobs`` worker processes on this
  machine and returns when every run has finished, raising :class:`RunsFailedError` naming the runs that
  did not finish. Its workers are ``python -m kdrepro train``
  processes; with ``launcher="submitit"`` (``--executor submitit-local``) they are jobs of submitit's
  ``LocalExecutor`` running :class:`TrainRun`, the very job a Slurm node runs, to try that path on a
  laptop. It needs no scheduler, so it waits for dependencies itself.
* :class:`SlurmExecutor` (``--executor slurm``) submits every run at once through submitit and returns.
  Runs that wait for the same runs go into one job array; the dependencies are Slurm job dependencies,
  ``--dependency=afterok:<job ids>`` (array elements ``<array id>_<index>``) with
  ``--kill-on-invalid-dep=yes``.

Why Slurm job dependencies rather than students that wait on the run store's locks: a job waiting on a
lock holds its GPU allocation while it waits, and the teacher of the paper profile trains for hours
before its ~20 students can start, so lock-waiting students would burn GPU-hours doing nothing (and a
student whose job starts before its teacher's would train the teacher itself, :meth:`RunStore.run`).
A dependent job holds no resources until its dependencies have succeeded, and when one fails Slurm
cancels its dependants (``kill-on-invalid-dep``), as the local executor skips them. The store's locks
still guard every run (two submissions of the same run, a run trained on a workstation at the same
time): a job that finds its run locked waits for it and reuses it.

Preemption and time limits: submitit asks Slurm for ``--signal=USR2@90`` and requeues a job that gets
it (``scontrol requeue``) after calling :meth:`TrainRun.checkpoint`, which resubmits the same
:class:`TrainRun`; the requeued job resumes from its run's ``checkpoints/latest.pt`` (the engine writes
it after every epoch and resumes exactly, :mod:`kdrepro.engine`), so it ends with the metrics of an
uninterrupted run. A job that reaches ``--time`` is requeued up to ``--requeues`` times (submitit's
``max_num_timeout``; preemptions do not count). A job killed outright (``SIGKILL``, a node failure)
leaves its lock behind: the next job for that run takes it over once its heartbeat is older than the
store's stale timeout (:mod:`kdrepro.runs`), and resumes from the same checkpoint.

Job records: every submitted run gets ``<results>/<profile>/jobs/<run id>.json`` (executor, job id,
dependencies, resources, submission time, the run's log and submitit's stdout/stderr). A later call,
``kdrepro runs`` (:func:`annotate_run_rows`) and ``--dry-run`` (:func:`describe_plan`) read them to
say which runs are pending, running, finished or failed (Slurm's states come from ``sacct``), and a
later ``--executor slurm`` call submits only the runs that are neither finished nor pending/running
in a job, with dependencies on the jobs still in the queue.

The package, one module per job: :mod:`.planning` (the plan and ``kdrepro train``'s printed plan),
:mod:`.records` (job records), :mod:`.states` (run and Slurm job states), :mod:`.job` (the job body,
:class:`TrainRun`), :mod:`.local` and :mod:`.slurm` (the executors); this module plans and hands the plan
to an executor (:func:`launch`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..config import RunConfig
from ..resolution import ResolvedRun, resolve
from ..runs import RunStore
from .base import DEFAULT_REQUEUES, EXECUTORS, Executor, ExecutorError, RunsFailedError, Submission
from .job import TrainRun, require_submitit, train_run_for
from .local import LocalExecutor, _terminate_as_interrupt  # noqa: F401  (kdrepro train stops on SIGTERM with it)
from .planning import (PlannedRun, cache_build_threads, cache_built, plan_jobs, plan_lines, submission_groups,
                       uses_logit_cache)
from .records import JobRecord, all_records, read_records
from .slurm import SlurmExecutor, SlurmOptions
from .states import RunState, _in_queue, annotate_run_rows, job_state, run_states, slurm_states, summarize_states

__all__ = ["DEFAULT_REQUEUES", "EXECUTORS", "Executor", "ExecutorError", "JobRecord", "LocalExecutor", "PlannedRun",
           "RunState", "RunsFailedError", "SlurmExecutor", "SlurmOptions", "Submission", "TrainRun",
           "all_records", "annotate_run_rows", "cache_build_threads", "cache_built", "describe_plan", "job_state",
           "launch", "make_executor", "plan_jobs", "plan_lines", "read_records", "require_submitit", "run_states",
           "slurm_states", "submission_groups", "summarize_states", "train_run_for", "uses_logit_cache"]


def make_executor(name: str, jobs: int = 0, slurm: SlurmOptions | None = None) -> Executor:
    """The executor of ``--executor name`` (``--jobs``: workers, or for Slurm the array parallelism)."""
    if name == "local":
        return LocalExecutor(max(1, jobs))
    if name == "submitit-local":
        return LocalExecutor(max(1, jobs), launcher="submitit")
    if name == "slurm":
        if slurm is None:
            raise ExecutorError("--executor slurm needs --slurm-partition P (the Slurm partition to submit to)")
        return SlurmExecutor(slurm)
    raise ExecutorError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}")


def launch(configs: list[ResolvedRun | RunConfig], results: str | Path, executor: Executor, logs_dir: str | Path | None = None,
           jobs_dir: str | Path | None = None, log: Callable[[str], None] = print) -> list[str]:
    """Plan the unfinished runs of ``configs`` (:func:`plan_jobs`) and hand them to ``executor``: the run ids
    trained (a blocking executor) or submitted."""
    store = RunStore(results)
    results = Path(results)
    logs = Path(logs_dir) if logs_dir else results / "logs"
    plan = plan_jobs(configs, store)
    sub = Submission(store, results, logs, Path(jobs_dir) if jobs_dir else None, log, len(configs))
    return executor.execute(plan, sub)


def describe_plan(configs: list[ResolvedRun | RunConfig], store: RunStore, executor: Executor | None,
                  jobs_dir: str | Path | None) -> list[str]:
    """``--dry-run``: every run with its state and the runs it waits for, then what would be submitted and
    with which resources."""
    configs = [resolve(c) for c in configs]
    plan = plan_jobs(configs, store)
    states = run_states(configs, store, jobs_dir)
    needs = {j.run_id: j.needs for j in plan}
    lines = []
    if executor is not None:
        lines.append(f"executor {executor.name}: {executor.describe()}")
    lines.append(f"  {'state':<9} {'run id':<44} {'epochs':>6}  after")
    for s in states:
        after = ", ".join(sorted(needs.get(s.run_id, ()))) or "-"
        label = s.cfg.label()
        lines.append(f"  {s.state:<9} {s.run_id:<44} {s.cfg.epochs:>6}  after {after}"
                     + (f"  [{label}]" if label else "") + (f"  ({s.detail})" if s.detail else ""))
    lines.append(f"  {summarize_states(states)}")
    if executor is None:
        return lines
    active = {s.run_id for s in states if _in_queue(s)} if not executor.blocking else set()
    todo = [j for j in plan if j.run_id not in active]
    if not todo:
        lines.append("nothing would be submitted")
    elif executor.blocking:
        lines.append(f"would train {len(todo)} run(s) with {executor.describe()}")
    else:
        groups = submission_groups(todo)
        lines.append(f"would submit {len(todo)} run(s) as {len(groups)} Slurm job(s) or job array(s):")
        for i, group in enumerate(groups, 1):
            after = sorted(group[0].needs)
            lines.append(f"  {i}. {len(group)} run(s), " + (f"after {', '.join(after)}" if after else "no dependency"))
    return lines
