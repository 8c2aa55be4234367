"""Trainer callbacks: the epoch's metrics, phase changes and pool sizes, for loggers.

A callback is any object with some of these methods (:class:`TrainerCallback` has them all, doing nothing):

* ``on_phase(trainer, phase, pool_size)``: a phase starts (after the snapshot scored the training set in a
  curriculum phase); ``phase`` is a :class:`kdrepro.sequencer.Phase`;
* ``on_epoch(trainer, row)``: an epoch has finished and its checkpoint is saved; ``row`` is the epoch's
  line of ``metrics.jsonl`` (epoch, phase, curriculum, pool_size, lr, train_<loss part>, train_loss,
  train_top1, test_top1, test_top5, iterations, images_seen, train_seconds, wall_seconds);
* ``on_end(trainer, summary)``: the run has finished; ``summary`` is its ``summary.json``.

Pass callbacks to :class:`kdrepro.engine.Trainer` (``callbacks=[...]``). The writers named in a run config's
``metrics_writers`` (:data:`METRICS_WRITERS`: ``csv``, ``tensorboard``) are built for every run into its
folder; :class:`ProgressLines` prints a plain line every few epochs when no progress bar is shown.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import math
from pathlib import Path
from typing import Any, Callable

from .registry import Registry
from .rundir import atomic_write

__all__ = ["TrainerCallback", "CSVWriter", "TensorBoardWriter", "ProgressLines", "METRICS_WRITERS",
           "metrics_writers_for", "CSV_FILE", "TENSORBOARD_DIR"]

#: the CSV writer's file and the TensorBoard writer's folder, in the run folder
CSV_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"


class TrainerCallback:
    """A callback that does nothing; subclass it and override what you need."""

    def on_phase(self, trainer: Any, phase: Any, pool_size: int) -> None:
        pass

    def on_epoch(self, trainer: Any, row: dict) -> None:
        pass

    def on_end(self, trainer: Any, summary: dict) -> None:
        pass


class CSVWriter(TrainerCallback):
    """``metrics.csv``: one row per finished epoch, one column per metric (the union over the epochs: loss
    parts that exist only in curriculum phases are empty elsewhere). Rewritten atomically after every
    epoch from the run's metrics, so a resumed run's file has each epoch once."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_epoch(self, trainer: Any, row: dict) -> None:
        rows = list(getattr(trainer, "metrics", None) or [row])
        columns: list[str] = []
        for r in rows:
            columns += [k for k in r if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        # fenced like the run's own files: a process that no longer owns the run writes nothing
        atomic_write(self.path, buf.getvalue(), getattr(getattr(trainer, "run", None), "fence", None))


class TensorBoardWriter(TrainerCallback):
    """TensorBoard event files in ``log_dir``: every numeric metric of an epoch as a scalar at step = epoch
    (``test_top1``, ``train_loss``, ``pool_size``, ``phase``, ``lr``, ...), and ``phase_start`` (the phase's index)
    at the first epoch of each phase. Needs the
    ``tensorboard`` package (``pip install 'kdrepro[tensorboard]'``); :func:`metrics_writers_for` skips it
    with one line when it is missing."""

    def __init__(self, log_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def on_phase(self, trainer: Any, phase: Any, pool_size: int) -> None:
        self.writer.add_scalar("phase_start", phase.index, phase.start + 1)

    def on_epoch(self, trainer: Any, row: dict) -> None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()

    def on_end(self, trainer: Any, summary: dict) -> None:
        self.writer.close()


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


#: metrics writers by name: ``factory(run_dir) -> callback``, with ``available() -> bool``
METRICS_WRITERS: Registry[Callable[[Path], TrainerCallback]] = Registry("metrics writer")
METRICS_WRITERS.register("csv", lambda run_dir: CSVWriter(Path(run_dir) / CSV_FILE))
METRICS_WRITERS.register("tensorboard", lambda run_dir: TensorBoardWriter(Path(run_dir) / TENSORBOARD_DIR))
_AVAILABLE = {"tensorboard": tensorboard_available}
_MISSING = {"tensorboard": "tensorboard is not installed (pip install 'kdrepro[tensorboard]')"}


def metrics_writers_for(names: tuple[str, ...] | list[str], run_dir: str | Path,
                        log: Callable[[str], None]) -> list[TrainerCallback]:
    """The writers ``names`` for a run in ``run_dir``; one that cannot run here is skipped with one line."""
    out = []
    for name in names:
        factory = METRICS_WRITERS.get(name)
        available = _AVAILABLE.get(name)
        if available is not None and not available():
            log(f"metrics writer {name!r} skipped: {_MISSING[name]}")
            continue
        out.append(factory(run_dir))
    return out


class ProgressLines(TrainerCallback):
    """A plain line every ``every`` epochs and at the last (no carriage returns, for logs that are not a
    terminal): epoch, phase, pool, loss parts, test top-1, seconds so far. ``every=None``: about 20 lines a
    run (every ``ceil(epochs / 20)`` epochs)."""

    def __init__(self, epochs: int, every: int | None, log: Callable[[str], None], name: str = ""):
        self.epochs, self.log, self.name = epochs, log, name
        self.every = every if every else max(1, math.ceil(epochs / 20))

    def on_epoch(self, trainer: Any, row: dict) -> None:
        epoch = row["epoch"]
        if epoch % self.every and epoch != self.epochs:
            return
        losses = " ".join(f"{k[len('train_'):]} {v:.4f}" for k, v in row.items()
                          if k.startswith("train_") and k not in ("train_top1", "train_seconds"))
        self.log(f"{self.name + ': ' if self.name else ''}epoch {epoch}/{self.epochs}  phase {row['phase']}  "
                 f"pool {row['pool_size']}  {losses}  test top-1 {row['test_top1']:.2f}  "
                 f"{row['wall_seconds']:.0f}s")
