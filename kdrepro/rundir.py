"""The run folder layout, in one place, and the one way to write its files (atomically).

::

    <runs>/<run id>/config.json       the resolved RunConfig (schema, every field explicit)
                    metrics.jsonl     one JSON line per finished epoch
                    summary.json      last and best top-1, epochs, iterations, wall time, environment, flags
                    curriculum/       phase<k>.pt: snapshot scores, selected pool, snapshot accuracy
                    scores/           <score>.pt: a teacher's scores of the training images (notebook 06)
                    weights.pt        final weights (not in git)
                    checkpoints/      latest.pt for resuming (not in git)
                    snapshots/        phase<k>.pt, the snapshot at each phase start (not in git)
    <runs>/<run id>.lock              while a process trains the run (not in git)

Every file is written through :func:`atomic_write`: into a temporary file beside the target, flushed and
synced, then renamed over it; the temporary file is removed on every failure path, so a crash or a full
disk never leaves a partial file or a stray ``*.tmp``. Reading a file that is corrupt raises
:class:`RunFileError`, which names the file and the problem.
"""
from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path
from typing import Any, Callable

from .values import short


class RunFileError(RuntimeError):
    """A run file that cannot be read or written; the message names the file and what to do."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def _fs_problem(err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return "no space left on the device; free some space and run again (the run resumes)"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "not writable (permission denied or read-only file system); choose another --results folder"
    if err.errno == errno.ENOTDIR:
        return "a path component is a file, not a folder"
    if err.errno == errno.EISDIR:
        return "is a folder, not a file"
    return f"{err.strerror or type(err).__name__}"


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[Any], None],
                 fence: Callable[[], None] | None = None) -> None:
    """Write ``data`` (bytes, text, or a function writing to a binary file object) to ``path`` atomically.

    ``fence``, when given, is called after the temporary file is complete and immediately before it is
    renamed over ``path``; an exception from it (the writer no longer owns the run) removes the temporary
    file and leaves ``path`` as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        if fence is not None:
            fence()
        os.replace(tmp, path)
    except OSError as err:
        _unlink(tmp)
        raise RunFileError(path, f"cannot write: {_fs_problem(err)}") from None
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def atomic_save(obj: Any, path: str | os.PathLike, fence: Callable[[], None] | None = None) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue(), fence)


def write_json(path: str | os.PathLike, obj: Any, fence: Callable[[], None] | None = None) -> None:
    atomic_write(path, json.dumps(obj, indent=2) + "\n", fence)


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file, or :class:`RunFileError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFileError(path, "missing") from None
    except json.JSONDecodeError as err:
        raise RunFileError(path, f"not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); the file is "
                                 "corrupt: delete the run folder to train it again") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RunFileError(path, f"cannot read ({err})") from None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete ``.*.tmp`` files left in ``folder`` (and its subfolders) by a process that was killed while
    writing; return how many. Only call it while holding the run's lock."""
    count = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for tmp in list(folder.rglob("*.tmp")):
        _unlink(tmp)
        count += 1
    return count


class RunDir:
    """Every path of one run folder, and reading and writing its files.

    ``fence`` (optional) guards every write made through this object: it is called immediately before each
    file is renamed into place and raises when the writer may no longer write the run (the run store's
    lock check, :meth:`kdrepro.runs.RunStore.fence`)."""

    def __init__(self, path: str | os.PathLike, fence: Callable[[], None] | None = None):
        self.path = Path(path)
        self.fence = fence

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    # ------------------------------------------------------------------ paths
    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def weights(self) -> Path:
        return self.path / "weights.pt"

    @property
    def latest(self) -> Path:
        return self.path / "checkpoints" / "latest.pt"

    @property
    def lock(self) -> Path:
        return self.path.with_name(f"{self.path.name}.lock")

    def curriculum_record(self, phase: int) -> Path:
        return self.path / "curriculum" / f"phase{phase}.pt"

    def curriculum_records(self) -> list[Path]:
        return sorted((self.path / "curriculum").glob("phase*.pt"), key=lambda p: int(p.stem[5:]))

    def snapshot(self, phase: int) -> Path:
        return self.path / "snapshots" / f"phase{phase}.pt"

    def scores(self, score: str) -> Path:
        return self.path / "scores" / f"{score}.pt"

    # ------------------------------------------------------------------ state
    def exists(self) -> bool:
        return self.path.is_dir()

    def status(self) -> str:
        """``finished`` (a summary), ``partial`` (a checkpoint) or ``new``."""
        if self.summary.exists():
            return "finished"
        if self.latest.exists():
            return "partial"
        return "new"

    # ------------------------------------------------------------------ reading and writing
    def write_config(self, config: dict) -> None:
        write_json(self.config, config, self.fence)

    def read_config(self) -> dict:
        data = read_json(self.config)
        if not isinstance(data, dict):
            raise RunFileError(self.config, "does not hold a mapping of configuration keys")
        return data

    def write_summary(self, summary: dict) -> None:
        write_json(self.summary, summary, self.fence)

    def read_summary(self) -> dict:
        """The summary, or ``{}`` when the run is not finished."""
        if not self.summary.exists():
            return {}
        data = read_json(self.summary)
        if not isinstance(data, dict):
            raise RunFileError(self.summary, "does not hold a mapping")
        return data

    def write_metrics(self, rows: list[dict]) -> None:
        atomic_write(self.metrics, "".join(json.dumps(m) + "\n" for m in rows), self.fence)

    def read_metrics(self) -> list[dict]:
        if not self.metrics.exists():
            return []
        rows = []
        for i, line in enumerate(self.metrics.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise RunFileError(self.metrics, f"line {i} is not valid JSON ({err.msg}); the file is corrupt") from None
            rows.append(row)
        return rows

    def check(self, run_id: str, epochs: int) -> None:
        """Check that this run folder is what it says, else :class:`RunFileError` naming the mismatch: its
        name is ``run_id`` (the id its config computes) and, once finished, its summary names the same run,
        ``metrics.jsonl`` has one row per epoch (1..``epochs``, the config's), and the summary's epochs, last
        and best top-1 are those rows'. A mismatch means a renamed or swapped folder, or a file lost or
        damaged after the run finished."""
        if self.name != run_id:
            raise RunFileError(self.path, f"the folder's name is not the run id its config.json computes "
                                          f"({run_id}): the folder was renamed or swapped with another. Move it "
                                          f"back to {run_id}, or delete it to train that run again")
        if self.summary.exists():
            self._check_finished(run_id, epochs)

    def _check_finished(self, run_id: str, epochs: int) -> None:
        summary = self.read_summary()
        named = summary.get("run_id")
        if named is not None and named != run_id:
            raise RunFileError(self.summary, f"names run {short(named)}, not {run_id}: the file belongs to "
                                             "another run. Delete the run folder to train it again")
        rows = self.read_metrics()
        if not all(isinstance(r, dict) and _number(r.get("test_top1")) for r in rows):
            raise RunFileError(self.metrics, "a row is not an epoch record with a numeric test_top1; the file "
                                             "is corrupt: delete the run folder to train it again")
        diverged = summary.get("diverged")
        if diverged is not None:
            self._check_diverged(summary, diverged, rows, epochs)
            return
        if [r.get("epoch") for r in rows] != list(range(1, epochs + 1)):
            raise RunFileError(self.metrics, f"holds {len(rows)} epoch rows, not epochs 1..{epochs} as the run's "
                                             "config and summary say; the file is damaged: delete the run folder "
                                             "to train it again")
        for key in ("last_top1", "best_top1"):
            if not _number(summary.get(key)):
                raise RunFileError(self.summary, f"{key}={short(summary.get(key))} is not a number; the file is "
                                                 "damaged: delete the run folder to train it again")
        expected = {"epochs": epochs, "last_top1": rows[-1]["test_top1"] if rows else None,
                    "best_top1": max((r["test_top1"] for r in rows), default=None)}
        for key, value in expected.items():
            if summary.get(key) != value:
                raise RunFileError(self.summary, f"{key}={short(summary.get(key))} disagrees with metrics.jsonl "
                                                 f"({short(value)}); one of the files is damaged: delete the run "
                                                 "folder to train it again")

    def _check_diverged(self, summary: dict, diverged: Any, rows: list[dict], epochs: int) -> None:
        """A diverged run (:func:`kdrepro.engine.diverged_summary`): one metrics row for each epoch before the
        one that diverged, that many ``epochs`` in the summary, and no accuracy."""
        epoch = diverged.get("epoch") if isinstance(diverged, dict) else None
        if not (isinstance(epoch, int) and not isinstance(epoch, bool) and 0 <= epoch <= epochs):
            raise RunFileError(self.summary, f"diverged={short(diverged)} does not name the epoch (0..{epochs}) the "
                                             "run diverged in; the file is damaged: delete the run folder to train "
                                             "it again")
        done = max(epoch - 1, 0)
        if [r.get("epoch") for r in rows] != list(range(1, done + 1)) or summary.get("epochs") != done:
            raise RunFileError(self.metrics, f"holds {len(rows)} epoch rows, not epochs 1..{done} as the summary of "
                                             f"a run that diverged in epoch {epoch} says; one of the files is "
                                             "damaged: delete the run folder to train it again")
        if any(summary.get(key) is not None for key in ("last_top1", "best_top1")):
            raise RunFileError(self.summary, "gives an accuracy for a run that diverged; the file is damaged: "
                                             "delete the run folder to train it again")

    def save(self, obj: Any, path: Path) -> None:
        """``torch.save`` ``obj`` to ``path`` (inside this run folder), atomically."""
        atomic_save(obj, path, self.fence)

    def load(self, path: Path, map_location=None) -> Any:
        """``torch.load(weights_only=True)`` of a run file, or :class:`RunFileError` naming it (never the
        advice to load with ``weights_only=False``, which would execute code from the file)."""
        import torch

        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except FileNotFoundError:
            raise RunFileError(path, "missing") from None
        except Exception as err:  # torch raises many kinds for a damaged file
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            if "weights_only" in first or "Weights only load failed" in first:
                first = "it holds objects other than tensors and plain containers"
            raise RunFileError(path, f"cannot be read as a checkpoint ({type(err).__name__}: {first[:160]}); it is "
                                     "corrupt or was written by something else: delete it to start this part "
                                     "again") from None
