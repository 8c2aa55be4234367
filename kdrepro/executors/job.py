"""The job body: one run trained through the run store, as a submitit job (on a Slurm node, or in submitit's
``LocalExecutor``)."""
from __future__ import annotations

import contextlib
import os
import socket
import sys
import traceback
from pathlib import Path

from ..config import RunConfig
from ..resolution import ResolvedRun, resolve
from ..plugins import named_plugins, use_plugins
from ..runs import WAIT, RunStore, summary_line
from .base import ExecutorError
from .planning import plan_lines
from .records import _now


class TrainRun:
    """One run as a submitit job (on a Slurm node, or in submitit's ``LocalExecutor``): trains it through
    the run store (:meth:`RunStore.run`: a finished run is reused, a partial one resumes, a locked one is
    waited for) with every line of output appended to the run's log ``log_file``.

    Checkpointable in submitit's sense: when the job is preempted or reaches its time limit, submitit calls
    :meth:`checkpoint` and requeues what it returns, the same :class:`TrainRun`; the requeued job resumes
    from the run's last epoch checkpoint.
    """

    def __init__(self, config: dict, results: str, log_file: str, wait: float = WAIT, plugins: list[str] = ()):
        self.config = dict(config)
        self.results = str(results)
        self.log_file = str(log_file)
        self.wait = wait
        #: the plugin modules named where the job was submitted (:mod:`kdrepro.plugins`), loaded first
        self.plugins = list(plugins)

    def __repr__(self) -> str:
        return f"TrainRun({self.config.get('method')}-{self.config.get('dataset')}, results={self.results!r})"

    def __call__(self) -> dict:
        use_plugins(getattr(self, "plugins", []))
        cfg = resolve(RunConfig.from_dict(self.config))
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
            print(f"  {summary_line(s)}", flush=True)
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


def train_run_for(cfg: ResolvedRun, results: Path, log_file: Path, runtime: dict | None = None) -> TrainRun:
    """The job of one run, with the paths made absolute (a job may start in another folder); ``runtime``:
    runtime fields set on top of the run's config."""
    data = {**cfg.to_dict(), **(runtime or {})}
    if data.get("data_root"):
        data["data_root"] = str(Path(data["data_root"]).absolute())
    return TrainRun(data, str(Path(results).absolute()), str(Path(log_file).absolute()), plugins=named_plugins())

