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
  machine and returns when every run has finished (this is what :func:`kdrepro.pretrain.pretrain` was,
  with the same messages, logs and :class:`PretrainError`). Its workers are ``python -m kdrepro train``
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
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .cache import cache_group, cache_ready, group_marker
from .config import RunConfig
from .rundir import RunFileError, read_json, write_json
from .runs import WAIT, RunStore, _pid_alive, lock_owner

#: ``--executor`` choices
EXECUTORS = ("local", "slurm", "submitit-local")
#: submitit's requeue-on-timeout budget is 3 by default; a 300-epoch run at --time 240 can need more
DEFAULT_REQUEUES = 10
#: a local worker that never finishes is not the scheduler's business: submitit's LocalExecutor kills a job
#: after ``timeout_min`` (2 min by default), so the local launcher sets it out of reach (30 days)
_LOCAL_TIMEOUT_MIN = 30 * 24 * 60

_SLURM_PENDING = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "CONFIGURING",
                  "STOPPED"}
_SLURM_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}


class PretrainError(RuntimeError):
    """Some runs failed; the message names them and their logs."""


class ExecutorError(RuntimeError):
    """Bad executor options, or an executor that cannot run here; the message says what to do."""


# ---------------------------------------------------------------------------------------------- planning


def uses_logit_cache(cfg: RunConfig) -> bool:
    """Whether a run reads the cache of a teacher run of the store (:attr:`RunConfig.reads_logit_cache`)."""
    return cfg.has_teacher_run and cfg.reads_logit_cache


@dataclass(eq=False)
class PlannedRun:
    """One unfinished run of a plan: its config, the run ids it waits for, whether it builds a logit cache;
    and, while a local executor runs it, its worker."""

    cfg: RunConfig
    needs: set[str] = field(default_factory=set)
    builds_cache: bool = False
    worker: "_Worker | None" = None
    started: float = 0.0
    log: Path | None = None
    record: "JobRecord | None" = None
    #: ``cfg.run_id``, computed once: a run id resolves the config, and a feature-loss run's check builds its
    #: teacher's network (tens of milliseconds), which the scheduler would otherwise pay at every poll
    run_id: str = ""
    #: the run that builds the logit cache this run reads, while the file is not there yet; and the marker
    #: file (:func:`kdrepro.cache.group_marker`) whose appearance lets this run start before that run ends
    cache_builder: str | None = None
    cache_marker: Path | None = None

    def __post_init__(self):
        if not self.run_id:
            self.run_id = self.cfg.run_id

    @property
    def cost(self) -> float:
        """Relative training cost, for starting the longest runs first (a live teacher costs about double)."""
        live_teacher = self.cfg.method != "ce" and not uses_logit_cache(self.cfg)
        return self.cfg.epochs * (2.0 if live_teacher else 1.0)


def plan_jobs(configs: list[RunConfig], store: RunStore) -> list[PlannedRun]:
    """The unfinished runs of ``configs`` with the run ids each must wait for, in start order: teachers and
    the runs that build a logit cache first (a cache group whose file exists already has no builder; the
    local executor also starts a group's runs as soon as its builder has written the file,
    :func:`cache_built`), then the longest runs first (so that no long run is left to finish alone at the
    end), and among runs of equal length the lower seeds first, in ``configs`` order within a seed (so that
    a training stopped part way leaves whole paired comparisons, KD and SLKD of seed 0, rather than every
    seed of KD and no SLKD)."""
    pending = {}
    for c in configs:
        run_id = c.run_id
        if store.status(store.runs_dir / run_id) != "finished":
            pending[run_id] = c
    builders: dict[tuple, str] = {}
    jobs = []
    for run_id, cfg in pending.items():
        needs, builds = set(), False
        if cfg.has_teacher_run:
            teacher_id = cfg.teacher_config().run_id
            if teacher_id in pending:
                needs.add(teacher_id)
        builder, marker = None, None
        if uses_logit_cache(cfg):
            group = cache_group(cfg)
            marker = group_marker(store.cache_dir, group)
            if cache_ready(marker):  # the file is there: nothing to wait for
                pass
            elif group in builders:
                builder = builders[group]
                needs.add(builder)
            else:
                builders[group], builds = run_id, True
        jobs.append(PlannedRun(cfg, needs, builds_cache=builds, run_id=run_id, cache_builder=builder,
                               cache_marker=marker))
    teachers = {j.cfg.teacher_config().run_id for j in jobs if j.cfg.has_teacher_run}
    return sorted(jobs, key=lambda j: (j.run_id not in teachers, not j.builds_cache, -j.cost, j.cfg.seed))


def cache_build_threads(job: PlannedRun, waiting: list[PlannedRun], busy: int, workers: int) -> int | None:
    """The torch threads for ``job``'s teacher-logit cache build (``cache_threads``): every worker's core
    when ``job`` builds a cache, no other run is being trained (``busy``: runs running here or elsewhere) and
    every run still waiting needs that cache; otherwise None (the run's own ``num_threads``). The cache is a
    forward pass over every view of every image (40 minutes on one core for cifar10-5k), during which the
    other workers would sit idle; training itself keeps its ``num_threads``."""
    if not job.builds_cache or workers < 2 or busy or job.cfg.num_threads is None:
        return None
    if any(job.run_id not in other.needs for other in waiting):
        return None
    return workers * job.cfg.num_threads


def cache_built(job: PlannedRun) -> bool:
    """Drop ``job``'s wait for the run building its logit cache once the file is there (the builder writes
    its group marker when the cache is saved, minutes into a run of hours); True when it did."""
    if job.cache_builder in job.needs and job.cache_marker is not None and cache_ready(job.cache_marker):
        job.needs.discard(job.cache_builder)
        job.cache_builder = None
        return True
    return False


def _levels(plan: list[PlannedRun]) -> dict[str, int]:
    """How deep each run sits in the dependency graph of ``plan`` (0: waits for no run of the plan)."""
    ids = {j.run_id for j in plan}
    by_id = {j.run_id: j for j in plan}
    level: dict[str, int] = {}

    def depth(run_id: str, seen: frozenset = frozenset()) -> int:
        if run_id not in level:
            if run_id in seen:
                raise ValueError(f"dependency cycle through {run_id}")
            inner = [depth(n, seen | {run_id}) for n in by_id[run_id].needs if n in ids]
            level[run_id] = 1 + max(inner) if inner else 0
        return level[run_id]

    for j in plan:
        depth(j.run_id)
    return level


def submission_groups(plan: list[PlannedRun]) -> list[list[PlannedRun]]:
    """``plan`` cut into groups that can each be one job array: runs that wait for the same runs, groups in
    an order where every group comes after the groups it waits for, runs in plan order."""
    level = _levels(plan)
    groups: dict[tuple, list[PlannedRun]] = {}
    for j in plan:
        groups.setdefault((level[j.run_id], tuple(sorted(j.needs))), []).append(j)
    return [groups[k] for k in sorted(groups, key=lambda k: k[0])]


# ------------------------------------------------------------------------------------------- job records


@dataclass
class JobRecord:
    """``<results>/<profile>/jobs/<run id>.json``: one submitted run."""

    run_id: str
    executor: str
    job_id: str | None
    submitted: str
    host: str
    log: str
    needs: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    resources: dict = field(default_factory=dict)
    stdout: str | None = None
    stderr: str | None = None
    result: str | None = None
    scheduler_pid: int | None = None
    outcome: str | None = None
    note: str = ""
    run: dict = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> "JobRecord":
        data = read_json(path)
        if not isinstance(data, dict) or "run_id" not in data:
            raise RunFileError(path, "is not a job record (no run_id)")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def write(self, jobs_dir: Path) -> Path:
        path = Path(jobs_dir) / f"{self.run_id}.json"
        write_json(path, dataclasses.asdict(self))
        return path


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _run_info(cfg: RunConfig) -> dict:
    """What ``kdrepro runs`` shows of a run that has no folder yet."""
    return {"method": cfg.method, "dataset": cfg.dataset, "model": cfg.model, "seed": cfg.seed,
            "epochs": cfg.epochs, "label": cfg.label()}


def read_records(jobs_dir: str | Path | None) -> dict[str, JobRecord]:
    """The job records of one ``jobs/`` folder by run id (unreadable files are skipped)."""
    out: dict[str, JobRecord] = {}
    if jobs_dir is None or not Path(jobs_dir).is_dir():
        return out
    for path in sorted(Path(jobs_dir).glob("*.json")):
        with contextlib.suppress(RunFileError, TypeError):
            rec = JobRecord.read(path)
            out[rec.run_id] = rec
    return out


def all_records(results: str | Path) -> dict[str, JobRecord]:
    """Every profile's job records under ``results`` (``<results>/*/jobs/*.json``); the latest per run."""
    out: dict[str, JobRecord] = {}
    root = Path(results)
    for jobs_dir in sorted(root.glob("*/jobs")):
        for run_id, rec in read_records(jobs_dir).items():
            if run_id not in out or rec.submitted >= out[run_id].submitted:
                out[run_id] = rec
    return out


# ------------------------------------------------------------------------------------------------ states


def _parse_states(text: str) -> dict[str, str]:
    """``JobID|State`` lines (sacct --parsable2, or squeue -o %i|%T) to ``{job id: state}``; a pending array
    ``123_[0-9%4]`` gives every element."""
    states: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0] or "." in parts[0]:
            continue
        jid, state = parts[0], (parts[1].split() or ["UNKNOWN"])[0].rstrip("+")
        m = re.fullmatch(r"(\d+)_\[([0-9,\-]+)(?:%\d+)?\]", jid)
        if m:
            for part in m.group(2).split(","):
                lo, _, hi = part.partition("-")
                for i in range(int(lo), int(hi or lo) + 1):
                    states[f"{m.group(1)}_{i}"] = state
        else:
            states[jid] = state
    return states


def _command(args: list[str]) -> str | None:
    if shutil.which(args[0]) is None:
        return None
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def slurm_states(job_ids: Iterable[str]) -> dict[str, str]:
    """Slurm's state (``PENDING``, ``RUNNING``, ``FAILED``, ...) of each job id, from one ``sacct`` call; where
    sacct does not work (accounting disabled), from ``squeue``, which lists queued and running jobs only
    (the others are ``NOT_QUEUED``); ``{}`` where neither works (not on the cluster)."""
    wanted = {str(j) for j in job_ids if j}
    mains = sorted({j.split("_")[0] for j in wanted})
    if not mains:
        return {}
    out = _command(["sacct", "-X", "--parsable2", "--noheader", "-o", "JobID,State", "-j", ",".join(mains)])
    found = {j: s for j, s in _parse_states(out).items() if j in wanted} if out is not None else {}
    if len(found) == len(wanted):
        return found
    # sacct lags a few seconds behind sbatch, and is off where accounting is: ask the queue
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or ""
    out = _command(["squeue", "--noheader", "-o", "%i|%T"] + (["-u", user] if user else []))
    if out is None:
        return found
    queued = _parse_states(out)
    return {j: found.get(j) or queued.get(j, "NOT_QUEUED") for j in wanted}


def _pickled_outcome(path: str | Path) -> str | None:
    """``success`` or ``error``: the first item of a submitit result file (a plain pickle of
    ``(outcome, value)``); None when it is missing or unreadable."""
    import pickle

    try:
        with open(path, "rb") as fh:
            return str(pickle.load(fh)[0])
    except Exception:  # noqa: BLE001 - a result we cannot read says nothing
        return None


def _result_outcome(rec: JobRecord) -> str | None:
    """``success`` or ``error`` from submitit's result file of the job, None when there is none."""
    return _pickled_outcome(rec.result) if rec.result else None


def job_state(rec: JobRecord | None, store_status: str, owner: tuple[str, int] | None,
              slurm: dict[str, str] | None = None) -> tuple[str, str]:
    """``(state, detail)`` of one run: ``finished`` when the store has it, ``running`` while a live process
    holds its lock, else its job's state (``pending``, ``running``, ``failed``, ``unknown``), else the
    store's ``new``/``partial`` (never submitted)."""
    if store_status == "finished":
        return "finished", ""
    if owner is not None:
        return "running", f"process {owner[1]} on {owner[0]}"
    if rec is None:
        return store_status, ""
    if rec.executor == "slurm":
        state = (slurm or {}).get(rec.job_id or "")
        if state is None:
            outcome = _result_outcome(rec)
            if outcome == "error":
                return "failed", "the job raised an error"
            if outcome == "success":
                return "failed", "the job ended but the run is not finished"
            return "unknown", "no state from sacct or squeue: not on the cluster, or submitted seconds ago"
        if state in _SLURM_PENDING:
            return "pending", state
        if state in _SLURM_RUNNING:
            return "running", state
        if state == "COMPLETED":
            return "failed", "the job completed but the run is not finished"
        if state == "NOT_QUEUED":
            return "failed", "no longer in the Slurm queue"
        return "failed", state
    # local executors: the scheduler process keeps the record up to date while it lives
    if rec.outcome in ("failed", "skipped", "interrupted"):
        return "failed", rec.note or rec.outcome
    if rec.scheduler_pid and rec.host == socket.gethostname() and not _pid_alive(int(rec.scheduler_pid)):
        return "failed", f"the process that queued it ({rec.scheduler_pid}) is gone"
    if rec.scheduler_pid and rec.host != socket.gethostname():
        return "unknown", f"queued by process {rec.scheduler_pid} on {rec.host}"
    if rec.job_id:
        return "running", f"worker {rec.job_id} starting"
    return "pending", "queued"


@dataclass
class RunState:
    cfg: RunConfig
    run_id: str
    state: str
    detail: str
    record: JobRecord | None


def run_states(configs: list[RunConfig], store: RunStore, jobs_dir: str | Path | None,
               run_ids: list[str] | None = None) -> list[RunState]:
    """The state of every run of ``configs`` (:func:`job_state`), reading the records of ``jobs_dir``
    (``run_ids``: the configs' run ids, when known)."""
    records = read_records(jobs_dir)
    ids = run_ids or [c.run_id for c in configs]
    wanted = [records[r].job_id for r in ids if r in records and records[r].executor == "slurm"]
    slurm = slurm_states(j for j in wanted if j) if wanted else {}
    out = []
    for cfg, run_id in zip(configs, ids):
        status = store.status(store.runs_dir / run_id)
        owner = lock_owner(store.runs_dir / f"{run_id}.lock", store.stale_after) if status != "finished" else None
        rec = records.get(run_id)
        state, detail = job_state(rec, status, owner, slurm)
        out.append(RunState(cfg, run_id, state, detail, rec))
    return out


def annotate_run_rows(rows: list[dict], results: str | Path) -> list[dict]:
    """``kdrepro runs``: add each run's job (``job``: executor and id, ``log``: its log) from the job
    records under ``results``, let the job's state replace the store's for unfinished runs (``pending``,
    ``failed``, ``unknown``; a live lock already says ``running``), and add a row for every submitted run
    that has no folder yet."""
    records = all_records(results)
    if not records:
        return rows
    slurm = slurm_states(r.job_id for r in records.values() if r.executor == "slurm" and r.job_id)
    store = RunStore(results)
    seen = set()
    for row in rows:
        rec = records.get(row["run_id"])
        if rec is None:
            continue
        seen.add(row["run_id"])
        row["job"] = f"{rec.executor} {rec.job_id or '-'}"
        row["log"] = rec.log
        if row["status"] in ("finished", "bad"):
            continue
        owner = lock_owner(store.runs_dir / f"{row['run_id']}.lock", store.stale_after)
        state, detail = job_state(rec, row["status"], owner, slurm)
        row["status"] = state
        if detail and state in ("pending", "failed", "unknown"):
            row["job"] += f" ({detail})"
    for run_id, rec in sorted(records.items()):
        if run_id in seen or (store.runs_dir / run_id).is_dir():
            continue
        state, detail = job_state(rec, "new", None, slurm)
        info = rec.run or {}
        rows.append({"run_id": run_id, "status": state, "method": info.get("method"), "dataset": info.get("dataset"),
                     "model": info.get("model"), "seed": info.get("seed"), "label": info.get("label", ""),
                     "epochs": f"0/{info.get('epochs', '?')}", "last_top1": None, "best_top1": None, "flags": [],
                     "problem": None, "job": f"{rec.executor} {rec.job_id or '-'}" + (f" ({detail})" if detail else ""),
                     "log": rec.log})
    return rows


def _in_queue(s: RunState) -> bool:
    """A run with a Slurm job that is pending or running (or whose state Slurm does not say yet): it is not
    submitted again, and its dependants wait for its job."""
    return (s.state in ("pending", "running", "unknown") and s.record is not None and s.record.executor == "slurm"
            and bool(s.record.job_id))


def summarize_states(states: list[RunState]) -> str:
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    order = ["finished", "running", "pending", "failed", "unknown", "partial", "new"]
    return ", ".join(f"{counts[k]} {k}" for k in order if k in counts)


# ------------------------------------------------------------------------------------------- the job body


class TrainRun:
    """One run as a submitit job (on a Slurm node, or in submitit's ``LocalExecutor``): trains it through
    the run store (:meth:`RunStore.run`: a finished run is reused, a partial one resumes, a locked one is
    waited for) with every line of output appended to the run's log ``log_file``.

    Checkpointable in submitit's sense: when the job is preempted or reaches its time limit, submitit calls
    :meth:`checkpoint` and requeues what it returns, the same :class:`TrainRun`; the requeued job resumes
    from the run's last epoch checkpoint.
    """

    def __init__(self, config: dict, results: str, log_file: str, wait: float = WAIT):
        self.config = dict(config)
        self.results = str(results)
        self.log_file = str(log_file)
        self.wait = wait

    def __repr__(self) -> str:
        return f"TrainRun({self.config.get('method')}-{self.config.get('dataset')}, results={self.results!r})"

    def __call__(self) -> dict:
        from .cli import plan_lines

        cfg = RunConfig.from_dict(self.config).resolved()
        job = os.environ.get("SLURM_ARRAY_JOB_ID") and (f"{os.environ['SLURM_ARRAY_JOB_ID']}_"
                                                         f"{os.environ.get('SLURM_ARRAY_TASK_ID', '')}")
        job = job or os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or "?"
        with _output_to(Path(self.log_file)):
            print(f"== {_now()} job {job} on {socket.gethostname()} (pid {os.getpid()}): run {cfg.run_id}",
                  file=sys.stderr, flush=True)
            store = RunStore(self.results)
            before = store.status(cfg)
            for line in plan_lines(store, cfg, {}):
                print(line, file=sys.stderr, flush=True)
            try:
                result = store.run(cfg, wait=self.wait, log=lambda m: print(m, file=sys.stderr, flush=True))
            except Exception:
                traceback.print_exc()  # into the run's log (submitit keeps it in its result file too)
                raise
            s = result.summary
            verb = "found finished" if before == "finished" else (
                "resumed and finished" if before == "partial" else "trained")
            print(f"{verb} {result.run_id} in {result.run_dir}", flush=True)
            print(f"  test top-1: last {s['last_top1']:.2f}  best {s['best_top1']:.2f} (epoch {s['best_epoch']})  "
                  f"epochs {s['epochs']}  iterations {s['iterations']}  wall {s['wall_seconds']:.1f}s", flush=True)
        return {"run_id": result.run_id, "last_top1": s["last_top1"], "best_top1": s["best_top1"],
                "iterations": s["iterations"]}

    def checkpoint(self, *args, **kwargs):
        """submitit's hook on preemption and timeout: requeue this same run (it resumes from its checkpoint)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


@contextlib.contextmanager
def _output_to(path: Path):
    """Send this process's stdout and stderr (file descriptors 1 and 2, so C extensions' output too) to the
    end of ``path`` for the duration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(path, "a") as fh:
            os.dup2(fh.fileno(), 1)
            os.dup2(fh.fileno(), 2)
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])


def require_submitit(what: str):
    try:
        import submitit
    except ImportError:
        raise ExecutorError(f"{what} needs submitit, which is not installed: pip install 'kdrepro[cluster]' "
                            "(or pip install 'submitit>=1.5')") from None
    return submitit


def train_run_for(cfg: RunConfig, results: Path, log_file: Path) -> TrainRun:
    """The job of one run, with the paths made absolute (a job may start in another folder)."""
    data = cfg.to_dict()
    if data.get("data_root"):
        data["data_root"] = str(Path(data["data_root"]).absolute())
    return TrainRun(data, str(Path(results).absolute()), str(Path(log_file).absolute()))


# ------------------------------------------------------------------------------------------------ workers


def _lock(store: RunStore, job: PlannedRun) -> Path:
    return store.runs_dir / f"{job.run_id}.lock"


class _Worker:
    """A started run of the local executor."""

    job_id: str

    def poll(self) -> int | None:  # None while running, else 0 for success
        raise NotImplementedError

    def terminate(self) -> None:
        raise NotImplementedError

    def wait(self) -> None:
        raise NotImplementedError


class _ProcessWorker(_Worker):
    """``python -m kdrepro train --config <cfg.json> --results <results>``, output to the run's log."""

    def __init__(self, job: PlannedRun, tmp: Path, results: Path):
        cfg_file = tmp / f"{job.run_id}.json"
        cfg_file.write_text(json.dumps(job.cfg.to_dict()))
        with open(job.log, "a") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "kdrepro", "train", "--config", str(cfg_file),
                                          "--results", str(results)], stdout=fh, stderr=subprocess.STDOUT)
        self.job_id = str(self.proc.pid)
        self.stdout = self.stderr = self.result = None

    def poll(self) -> int | None:
        return self.proc.poll()

    def terminate(self) -> None:
        self.proc.terminate()

    def wait(self) -> None:
        self.proc.wait()


class _SubmititWorker(_Worker):
    """A :class:`TrainRun` job of submitit's ``LocalExecutor`` (a controller process and the job's process)."""

    def __init__(self, executor, job: PlannedRun, results: Path):
        self.job = executor.submit(train_run_for(job.cfg, results, job.log))
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


# ---------------------------------------------------------------------------------------------- executors


@dataclass
class Submission:
    """What :func:`launch` hands an executor besides the plan."""

    store: RunStore
    results: Path
    logs: Path
    jobs_dir: Path | None
    log: Callable[[str], None]
    total_runs: int


class Executor:
    """Trains (``blocking``) or submits the runs of a plan."""

    name = "?"
    #: True: :meth:`execute` returns when every run has finished; False: once they are submitted
    blocking = True

    def describe(self) -> str:
        raise NotImplementedError

    def execute(self, plan: list[PlannedRun], sub: Submission) -> list[str]:
        raise NotImplementedError


class LocalExecutor(Executor):
    """``jobs`` worker processes on this machine, started in plan order as their dependencies finish.

    Runs locked by another process (:class:`kdrepro.runs.RunLockedError`) are waited for, and count toward
    the ``jobs`` limit. A worker's output goes to ``<logs>/<run id>.log``. A failed run is reported with its
    log and its dependants are skipped; the other runs go on, and :class:`PretrainError` names the failed
    runs at the end. Interrupting (Ctrl-C, SIGTERM, SIGHUP) stops the workers; every run resumes from its
    last finished epoch next time.

    ``launcher``: ``"process"`` (``python -m kdrepro train``; needs nothing beyond kdrepro) or ``"submitit"``
    (a :class:`TrainRun` job of submitit's ``LocalExecutor``: the job body of the Slurm executor).
    """

    def __init__(self, jobs: int = 1, launcher: str = "process", poll: float = 2.0):
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, got {jobs}")
        if launcher not in ("process", "submitit"):
            raise ValueError(f"launcher must be 'process' or 'submitit', got {launcher!r}")
        self.jobs, self.launcher, self.poll = jobs, launcher, poll
        self.name = "local" if launcher == "process" else "submitit-local"

    def describe(self) -> str:
        how = "python -m kdrepro train" if self.launcher == "process" else "submitit LocalExecutor jobs"
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
        log(f"pretrain: {sub.total_runs} runs, {finished_before} already in the store, {total} to train with "
            f"{self.jobs} worker(s); logs in {logs}")
        if not waiting:
            return []
        logs.mkdir(parents=True, exist_ok=True)
        for job in waiting:
            self._record(sub, job)
        running: list[PlannedRun] = []
        done: set[str] = set()
        failed: dict[str, str] = {}
        t0 = time.time()
        with tempfile.TemporaryDirectory(prefix="kdrepro-pretrain-") as tmp, _terminate_as_interrupt():
            try:
                while waiting or running:
                    for job in list(running):
                        if job.worker.poll() is None:
                            continue
                        running.remove(job)
                        run_id = job.run_id
                        minutes = (time.time() - job.started) / 60
                        if job.worker.poll() == 0 and store.status(store.runs_dir / run_id) == "finished":
                            done.add(run_id)
                            self._record(sub, job, outcome="finished")
                            s = store.load(run_id).summary
                            log(f"[{len(done) + len(failed)}/{total}] {run_id}: last {s['last_top1']:.2f}, "
                                f"best {s['best_top1']:.2f} ({minutes:.1f} min; {(time.time() - t0) / 60:.0f} min so far)")
                        elif lock_owner(_lock(store, job)) is not None:
                            waiting.append(job)  # another process holds it: wait for that, then start again
                        else:
                            failed[run_id] = str(job.log)
                            self._record(sub, job, outcome="failed", note=f"exit {job.worker.poll()}; see {job.log}")
                            log(f"[{len(done) + len(failed)}/{total}] {run_id} FAILED (exit {job.worker.poll()}); "
                                f"see {job.log}")
                    for job in waiting:  # a group's cache file is there: its runs need not wait for its builder
                        if cache_built(job):
                            self._record(sub, job, needs=sorted(job.needs))
                    for job in list(waiting):  # dependants of failed runs cannot run
                        lost = job.needs & set(failed)
                        if lost:
                            waiting.remove(job)
                            failed[job.run_id] = f"not started: needs {', '.join(sorted(lost))}"
                            self._record(sub, job, outcome="skipped", note=f"not started: {', '.join(sorted(lost))} failed")
                            log(f"[{len(done) + len(failed)}/{total}] {job.run_id} skipped: "
                                f"{', '.join(sorted(lost))} failed")
                    # runs that another process is training count toward the limit: the machine is busy with them
                    elsewhere = sum(1 for job in waiting if lock_owner(_lock(store, job)) is not None)
                    for job in list(waiting):
                        if len(running) + elsewhere >= self.jobs:
                            break
                        if not job.needs <= done:
                            continue
                        if store.status(store.runs_dir / job.run_id) == "finished":  # trained elsewhere meanwhile
                            waiting.remove(job)
                            done.add(job.run_id)
                            continue
                        if lock_owner(_lock(store, job)) is not None:
                            continue
                        waiting.remove(job)
                        threads = cache_build_threads(job, waiting, len(running) + elsewhere, self.jobs)
                        if threads:
                            job.cfg = job.cfg.with_overrides(cache_threads=threads)
                            log(f"  {job.run_id} builds the teacher-logit cache with {threads} threads "
                                "(every other run waits for it)")
                        running.append(self._start(job, Path(tmp), results, logs, executor))
                        self._record(sub, job, job_id=job.worker.job_id, stdout=job.worker.stdout,
                                     stderr=job.worker.stderr, result=job.worker.result)
                        log(f"  start {job.run_id} ({job.cfg.epochs} epochs)")
                    time.sleep(self.poll)
            except BaseException:
                for job in running:
                    job.worker.terminate()
                for job in running:
                    job.worker.wait()
                for job in [*running, *waiting]:
                    self._record(sub, job, outcome="interrupted", note="interrupted before it finished")
                raise
        log(f"pretrain: {len(done)} trained, {len(failed)} failed in {(time.time() - t0) / 60:.1f} min")
        if failed:
            raise PretrainError("runs that did not finish:\n" + "\n".join(f"  {k}: {v}" for k, v in failed.items()))
        return sorted(done)

    def _start(self, job: PlannedRun, tmp: Path, results: Path, logs: Path, executor) -> PlannedRun:
        job.log = logs / f"{job.run_id}.log"
        job.worker = (_ProcessWorker(job, tmp, results) if executor is None
                      else _SubmititWorker(executor, job, results))
        job.started = time.time()
        return job


@dataclass
class SlurmOptions:
    """Resources of every Slurm job (one run each); ``--slurm-partition``, ``--gpus-per-job``, ...

    Defaults and where they come from: one GPU, as the ``paper`` profile's ``hardware`` says ("one GPU");
    4 CPU cores, because the engine keeps each data set on the device as a tensor and uses no DataLoader
    workers (:mod:`kdrepro.engine`), so a run needs one core for its loop plus a few for loading the data
    set at start; 240 minutes, the example of issue 14 (a longer run is requeued and resumes, so the limit
    only sets how often); :data:`DEFAULT_REQUEUES` requeues at the time limit. ``array_parallelism``
    (``--jobs``) caps the running elements of each job array; ``extra`` is passed to sbatch as
    ``--KEY=VALUE`` (account, qos, constraint, ...)."""

    partition: str
    gpus_per_job: int = 1
    cpus_per_job: int = 4
    time_min: int = 240
    mem_gb: float | None = None
    requeues: int = DEFAULT_REQUEUES
    array_parallelism: int | None = None
    extra: dict = field(default_factory=dict)
    job_name: str = "kdrepro"

    def check(self) -> "SlurmOptions":
        if not self.partition or not str(self.partition).strip():
            raise ExecutorError("--executor slurm needs --slurm-partition P (the Slurm partition to submit to)")
        for name, value, low in (("--gpus-per-job", self.gpus_per_job, 0), ("--cpus-per-job", self.cpus_per_job, 1),
                                 ("--time", self.time_min, 1), ("--requeues", self.requeues, 0)):
            if not isinstance(value, int) or value < low:
                raise ExecutorError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.mem_gb is not None and not self.mem_gb > 0:
            raise ExecutorError(f"--mem-gb must be positive, got {self.mem_gb!r}")
        if self.array_parallelism is not None and self.array_parallelism < 1:
            raise ExecutorError(f"--jobs must be at least 1 with --executor slurm, got {self.array_parallelism}")
        return self

    def resources(self) -> dict:
        return {"partition": self.partition, "gpus": self.gpus_per_job, "cpus": self.cpus_per_job,
                "time_min": self.time_min, "mem_gb": self.mem_gb, "requeues": self.requeues,
                "array_parallelism": self.array_parallelism, "extra": dict(self.extra)}

    def parameters(self, after: list[str]) -> dict:
        """submitit ``SlurmExecutor.update_parameters`` keywords for a job (array) that waits for ``after``."""
        extra = dict(self.extra)
        if after:
            extra["dependency"] = "afterok:" + ":".join(after)
            extra["kill-on-invalid-dep"] = "yes"
        params = {"partition": self.partition, "time": self.time_min, "cpus_per_task": self.cpus_per_job,
                  "job_name": self.job_name, "additional_parameters": extra}
        if self.gpus_per_job:
            params["gpus_per_node"] = self.gpus_per_job
        if self.mem_gb is not None:
            params["mem"] = f"{int(self.mem_gb)}GB" if self.mem_gb == int(self.mem_gb) else f"{int(self.mem_gb * 1024)}MB"
        if self.array_parallelism:
            params["array_parallelism"] = self.array_parallelism
        return params


class SlurmExecutor(Executor):
    """Submits every unfinished run of a plan to Slurm through submitit (job arrays, afterok dependencies)
    and returns; see the module docstring."""

    name = "slurm"
    blocking = False

    def __init__(self, options: SlurmOptions):
        self.options = options.check()

    def describe(self) -> str:
        o = self.options
        gpus = f"{o.gpus_per_job} GPU{'s' if o.gpus_per_job != 1 else ''}"
        mem = f", {o.mem_gb:g} GB" if o.mem_gb else ""
        arrays = f", at most {o.array_parallelism} running per array" if o.array_parallelism else ""
        extra = "".join(f", --{k}={v}" for k, v in o.extra.items())
        return (f"Slurm partition {o.partition}: per run one job of {gpus}, {o.cpus_per_job} CPUs{mem}, "
                f"{o.time_min} min{arrays}{extra}; requeued at the time limit up to {o.requeues} times (resuming "
                f"from its checkpoint); dependencies: afterok, kill-on-invalid-dep")

    def execute(self, plan: list[PlannedRun], sub: Submission) -> list[str]:
        submitit = require_submitit("--executor slurm")
        log, jobs_dir = sub.log, sub.jobs_dir or sub.logs.parent / "jobs"
        # runs already in the queue from an earlier call: not submitted again, waited for by their job ids
        states = {s.run_id: s for s in run_states([j.cfg for j in plan], sub.store, jobs_dir,
                                                  [j.run_id for j in plan])}
        active = {rid: s.record.job_id for rid, s in states.items() if _in_queue(s)}
        if any(s.record is not None for s in states.values()):
            log(f"slurm: of the {len(plan)} unfinished runs: {summarize_states(list(states.values()))}")
        for s in states.values():
            if s.state == "failed":
                log(f"  failed: {s.run_id} ({s.detail}); log {s.record.log if s.record else '-'}: submitted again")
            elif s.state == "unknown" and s.run_id in active:
                log(f"  unknown: {s.run_id} (job {s.record.job_id}: {s.detail}): not submitted again; delete "
                    f"{jobs_dir / (s.run_id + '.json')} to submit it again")
        todo = [j for j in plan if j.run_id not in active]
        busy = {j.run_id for j in todo if lock_owner(_lock(sub.store, j), sub.store.stale_after) is not None}
        if not todo:
            log(f"slurm: nothing to submit; {len(active)} run(s) pending or running in Slurm")
            return []
        try:
            ex = submitit.SlurmExecutor(folder=jobs_dir / "submitit" / "%j", max_num_timeout=self.options.requeues)
        except RuntimeError as err:
            raise ExecutorError(f"--executor slurm: {err} (srun is not on PATH: submit from a node of the cluster)") from None
        sub.logs.mkdir(parents=True, exist_ok=True)
        job_ids = dict(active)
        submitted: list[str] = []
        for group in submission_groups(todo):
            after = sorted({job_ids[n] for n in group[0].needs if n in job_ids})
            unresolved = sorted(n for n in group[0].needs if n not in job_ids)
            for n in unresolved:
                log(f"  note: {n} is not in the Slurm queue ({'being trained elsewhere' if n in busy else 'not submitted'}); "
                    "its dependants wait for it through the run store's lock")
            ex.update_parameters(**self.options.parameters(after))
            runs = [train_run_for(j.cfg, sub.results, sub.logs / f"{j.run_id}.log") for j in group]
            try:
                with ex.batch():
                    jobs = [ex.submit(r) for r in runs]
            except Exception as err:  # sbatch refused: say so in one line; what was submitted is recorded
                first = (str(err).strip().splitlines() or [type(err).__name__])[-1]
                raise ExecutorError(f"sbatch refused the submission ({first}); {len(submitted)} run(s) were "
                                    f"submitted before (recorded in {jobs_dir})") from None
            for j, job in zip(group, jobs):
                job_ids[j.run_id] = str(job.job_id)
                JobRecord(j.run_id, "slurm", str(job.job_id), _now(), socket.gethostname(),
                          str((sub.logs / f"{j.run_id}.log").absolute()), needs=sorted(j.needs), after=after,
                          resources=self.options.resources(), stdout=str(job.paths.stdout),
                          stderr=str(job.paths.stderr), result=str(job.paths.result_pickle),
                          run=_run_info(j.cfg)).write(jobs_dir)
                submitted.append(j.run_id)
            first_id = str(jobs[0].job_id).split("_")[0]
            kind = f"job array {first_id}" if len(jobs) > 1 else f"job {jobs[0].job_id}"
            log(f"  submitted {kind}: {len(jobs)} run(s), "
                + (f"after {', '.join(after)}" if after else "no dependency"))
        log(f"slurm: submitted {len(submitted)} run(s); records in {jobs_dir}, logs in {sub.logs}. "
            "`kdrepro runs` or this command again shows their state")
        return submitted


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


def launch(configs: list[RunConfig], results: str | Path, executor: Executor, logs_dir: str | Path | None = None,
           jobs_dir: str | Path | None = None, log: Callable[[str], None] = print) -> list[str]:
    """Plan the unfinished runs of ``configs`` (:func:`plan_jobs`) and hand them to ``executor``: the run ids
    trained (a blocking executor) or submitted."""
    store = RunStore(results)
    results = Path(results)
    logs = Path(logs_dir) if logs_dir else results / "logs"
    plan = plan_jobs(configs, store)
    sub = Submission(store, results, logs, Path(jobs_dir) if jobs_dir else None, log, len(configs))
    return executor.execute(plan, sub)


def describe_plan(configs: list[RunConfig], store: RunStore, executor: Executor | None,
                  jobs_dir: str | Path | None) -> list[str]:
    """``--dry-run``: every run with its state and the runs it waits for, then what would be submitted and
    with which resources."""
    plan = plan_jobs(configs, store)
    ids = {id(j.cfg): j.run_id for j in plan}
    states = run_states(configs, store, jobs_dir, [ids.get(id(c)) or c.run_id for c in configs])
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
