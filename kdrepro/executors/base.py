"""What every executor shares: the errors, the :class:`Submission` an executor gets with a plan, and the
:class:`Executor` interface."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..runs import RunStore
from .planning import PlannedRun

#: ``--executor`` choices
EXECUTORS = ("local", "slurm", "submitit-local")
#: submitit's requeue-on-timeout budget is 3 by default; a 300-epoch run at --time 240 can need more
DEFAULT_REQUEUES = 10


class RunsFailedError(RuntimeError):
    """Some runs of a plan did not finish (they failed, or a run they wait for did); the message names each
    with its log."""


class ExecutorError(RuntimeError):
    """Bad executor options, or an executor that cannot run here; the message says what to do."""


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

