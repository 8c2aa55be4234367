"""The state of a submitted run (``pending``, ``running``, ``finished``, ``failed``, ``unknown``): from the run
store, the run's lock, its job record and Slurm's ``sacct``/``squeue``."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..resolution import ResolvedRun
from ..runs import RunStore, _pid_alive
from .records import JobRecord, all_records, read_records

_SLURM_PENDING = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "CONFIGURING",
                  "STOPPED"}
_SLURM_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}


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
    cfg: ResolvedRun
    run_id: str
    state: str
    detail: str
    record: JobRecord | None


def run_states(configs: list[ResolvedRun], store: RunStore, jobs_dir: str | Path | None) -> list[RunState]:
    """The state of every run of ``configs`` (:func:`job_state`), reading the records of ``jobs_dir``."""
    records = read_records(jobs_dir)
    ids = [c.run_id for c in configs]
    wanted = [records[r].job_id for r in ids if r in records and records[r].executor == "slurm"]
    slurm = slurm_states(j for j in wanted if j) if wanted else {}
    out = []
    for cfg, run_id in zip(configs, ids):
        status = store.status(run_id)
        owner = store.owner(run_id) if status != "finished" else None
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
        owner = store.owner(row['run_id'])
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

