"""The run store: every run lives in ``<results>/runs/<run id>/`` next to the configuration that made it.

::

    results/runs/<id>/config.json       the resolved RunConfig (every field explicit)
                      metrics.jsonl     one JSON line per finished epoch
                      summary.json      last and best top-1, epochs, iterations, wall time, environment
                      curriculum/       phase<k>.pt: snapshot scores, selected pool, snapshot accuracy
                      weights.pt        final weights (not in git)
                      checkpoints/      latest.pt for resuming (not in git)
                      snapshots/        the snapshot at each phase start (not in git)
    results/runs/<id>.lock              while a process trains the run: its host and pid (not in git)

:func:`run` returns a finished run's stored result without training, resumes an unfinished one, and
trains a new one. Two processes never train the same run: the one that finds the run locked by a live
process gets :class:`RunLockedError` (``python -m kdrepro.reproduce --jobs N`` waits for such runs
instead). A lock left by a killed process is taken over. A student's teacher is itself a run (a CE run), trained once per (data set,
architecture, seed, recipe, ...) and reused by every student that names it.

The results folder is ``results/`` in the current directory unless ``KDREPRO_RESULTS`` or an explicit
``root`` says otherwise.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .config import RunConfig


def default_results_root() -> Path:
    return Path(os.environ.get("KDREPRO_RESULTS", "results"))


class RunLockedError(RuntimeError):
    """The run is being trained by another live process."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_owner(lock: Path) -> tuple[str, int] | None:
    """``(host, pid)`` of the live holder of ``lock``; None when it is free or stale (a dead pid on this host)."""
    try:
        host, pid = lock.read_text().split()[:2]
        pid = int(pid)
    except (FileNotFoundError, ValueError):
        return None
    if host == socket.gethostname() and not _pid_alive(pid):
        return None
    return host, pid


@dataclass
class RunResult:
    config: RunConfig
    run_dir: Path
    summary: dict

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    def metrics(self) -> list[dict]:
        return read_metrics(self.run_dir)

    def curriculum(self) -> list[dict]:
        """The per-phase curriculum records (scores, pool, snapshot accuracy), in phase order."""
        import torch

        files = sorted((self.run_dir / "curriculum").glob("phase*.pt"), key=lambda p: int(p.stem[5:]))
        return [torch.load(f, weights_only=True) for f in files]


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RunStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_results_root()

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def run_dir(self, cfg: RunConfig) -> Path:
        return self.runs_dir / cfg.run_id

    def lock_path(self, cfg: RunConfig) -> Path:
        return self.runs_dir / f"{cfg.run_id}.lock"

    @contextlib.contextmanager
    def _locked(self, cfg: RunConfig):
        """Hold ``<run id>.lock`` while training; raise :class:`RunLockedError` if a live process holds it."""
        lock = self.lock_path(cfg)
        lock.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                owner = lock_owner(lock)
                if owner is not None:
                    raise RunLockedError(
                        f"run {cfg.run_id} is being trained by process {owner[1]} on {owner[0]} (lock {lock}); "
                        "wait for it to finish, or delete the lock file if that process is gone") from None
                lock.unlink(missing_ok=True)  # stale: its process died
        else:
            raise RunLockedError(f"could not take the lock {lock}")
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{socket.gethostname()} {os.getpid()}\n")
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)

    def status(self, cfg_or_dir: RunConfig | Path) -> str:
        d = self.run_dir(cfg_or_dir) if isinstance(cfg_or_dir, RunConfig) else Path(cfg_or_dir)
        if (d / "summary.json").exists():
            return "finished"
        if (d / "checkpoints" / "latest.pt").exists():
            return "partial"
        return "new"

    def load(self, run: str | Path) -> RunResult:
        """A stored run by id, id prefix or path."""
        d = Path(run)
        if not d.is_dir():
            d = self.runs_dir / str(run)
        if not d.is_dir():
            matches = sorted(self.runs_dir.glob(f"{run}*")) if self.runs_dir.is_dir() else []
            if len(matches) != 1:
                where = f"in {self.runs_dir}" if self.runs_dir.is_dir() else f"({self.runs_dir} does not exist)"
                raise FileNotFoundError(f"no run {run!r} {where}" if not matches else
                                        f"run {run!r} is ambiguous: {', '.join(m.name for m in matches)}")
            d = matches[0]
        cfg = RunConfig.from_dict(json.loads((d / "config.json").read_text()))
        summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
        return RunResult(cfg, d, summary)

    def list(self) -> list[dict]:
        rows = []
        for d in sorted(self.runs_dir.glob("*")) if self.runs_dir.is_dir() else []:
            if not (d / "config.json").exists():
                continue
            metrics = read_metrics(d)
            cfg = json.loads((d / "config.json").read_text())
            summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
            rows.append({"run_id": d.name, "status": self.status(d), "method": cfg["method"],
                         "dataset": cfg["dataset"], "model": cfg["model"], "seed": cfg["seed"],
                         "epochs": f"{len(metrics)}/{cfg['epochs']}",
                         "last_top1": summary.get("last_top1", metrics[-1]["test_top1"] if metrics else None),
                         "best_top1": summary.get("best_top1")})
        return rows

    # ------------------------------------------------------------------ running
    def run(self, cfg: RunConfig, train: bool = True, log=None) -> RunResult:
        """The finished result of ``cfg``: stored if finished, else resumed or trained (``train=True``)."""
        cfg = cfg.resolved()  # validates before anything is written
        d = self.run_dir(cfg)
        if self.status(d) == "finished":
            return self.load(d)
        if not train:
            raise FileNotFoundError(f"run {d.name} is {self.status(d)} in {self.runs_dir} and train=False")
        teacher = self._teacher_model(cfg, log)
        with self._locked(cfg):
            if self.status(d) == "finished":  # finished by another process while this one waited
                return self.load(d)
            return self._train(cfg, d, teacher, log)

    def _train(self, cfg: RunConfig, d: Path, teacher, log) -> RunResult:
        from .engine import Trainer

        fresh = not d.exists()
        try:
            trainer = Trainer(cfg, d, teacher=teacher, cache_dir=self.cache_dir, log=log)
        except BaseException:
            if fresh and d.exists():
                shutil.rmtree(d)
            raise
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        trainer.fit()
        return self.load(d)

    def _teacher_model(self, cfg: RunConfig, log):
        from .models import create_model

        if cfg.method == "ce" or (cfg.teacher is None and cfg.teacher_weights is None):
            return None
        from .data import load_dataset

        train = load_dataset(cfg.dataset, root=cfg.data_root, train=True, **cfg.dataset_options)
        if cfg.teacher_weights is not None:
            name = (cfg.teacher or {}).get("model")
            if name is None:
                raise ValueError("teacher_weights needs the teacher's architecture: set teacher.model too")
            return create_model(name, train.num_classes, in_channels=train.image_shape[0],
                                weights=cfg.teacher_weights)
        tcfg = cfg.teacher_config()
        result = self.run(tcfg, log=log)
        weights = result.run_dir / "weights.pt"
        if not weights.exists():
            raise FileNotFoundError(
                f"teacher run {result.run_id} is finished but its weights ({weights}) are not here (weights "
                "are kept out of git). Delete that run folder to retrain the teacher, or give teacher_weights.")
        return create_model(tcfg.model, train.num_classes, in_channels=train.image_shape[0],
                            weights=str(weights), **tcfg.model_options)


def run(cfg: RunConfig, root: str | os.PathLike | None = None, **kwargs) -> RunResult:
    return RunStore(root).run(cfg, **kwargs)


# ---------------------------------------------------------------------- summaries across seeds
def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (n-1; 0 for one value) and count."""
    vals = [float(v) for v in values]
    if not vals:
        return math.nan, math.nan, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def summarize_seeds(results: list[RunResult]) -> dict:
    """Mean ± std over seeds of last-epoch and best-epoch test top-1 (both named as such)."""
    last = mean_std(r.summary["last_top1"] for r in results)
    best = mean_std(r.summary["best_top1"] for r in results)
    return {"last_top1_mean": last[0], "last_top1_std": last[1], "best_top1_mean": best[0],
            "best_top1_std": best[1], "seeds": last[2]}
