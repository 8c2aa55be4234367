"""The Slurm executor: every run of a plan submitted at once through submitit, as job arrays with afterok
dependencies."""
from __future__ import annotations

import socket
from dataclasses import dataclass, field

from .base import DEFAULT_REQUEUES, Executor, ExecutorError, Submission
from .job import require_submitit, train_run_for
from .planning import PlannedRun, submission_groups
from .records import JobRecord, _now, _run_info
from .states import _in_queue, run_states, summarize_states


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
        states = {s.run_id: s for s in run_states([j.cfg for j in plan], sub.store, jobs_dir)}
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
        busy = {j.run_id for j in todo if sub.store.owner(j.run_id) is not None}
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

