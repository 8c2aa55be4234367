"""Job records: ``<results>/<profile>/jobs/<run id>.json``, one per submitted run."""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..resolution import ResolvedRun
from ..rundir import RunFileError, read_json, write_json


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


def _run_info(cfg: ResolvedRun) -> dict:
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

