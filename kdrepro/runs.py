"""The run store: every run lives in ``<results>/runs/<run id>/`` next to the configuration that made it.

The folder layout and the atomic writes are :class:`kdrepro.rundir.RunDir`'s. :func:`run` returns a
finished run's stored result without training, resumes an unfinished one, and trains a new one. A
student's teacher is itself a run (a CE run), trained once per (data, architecture, seed, recipe, ...)
and reused by every student that names it.

Locks. While a process trains a run it holds ``<run id>.lock``: a file created exclusively (``O_EXCL``)
that names its host, process and a random token, and whose modification time a background thread
renews every :data:`HEARTBEAT` seconds. A lock is *stale*, and is taken over, when its process is dead
(same host) or its heartbeat is older than ``stale_after`` seconds (any host: a killed job on another
machine of a cluster). A process that finds a run (or the run's teacher) locked by a live process
waits for it, with a message, up to ``wait`` seconds, and then reuses the finished run instead of
training it again; :class:`RunLockedError` after the timeout.

Fencing. Every file a training process writes into its run folder (checkpoint, metrics, snapshots,
curriculum records, weights, summary) goes through a :class:`~kdrepro.rundir.RunDir` whose fence
(:meth:`RunStore.fence`) re-reads the lock immediately before the file is renamed into place: a holder
whose token is gone from the lock (another process took it over after this one stalled past the stale
timeout) or whose run has a summary (finished, by whoever) raises :class:`LockLostError` and writes
nothing; its temporary file is removed. A finished run is never written again. What the
file system must support (a local disk, NFSv3 or later, Lustre, GPFS do): exclusive create, atomic
rename, and modification times that other machines see; clocks of the machines within a minute.

The results folder is ``results/`` in the current directory unless ``KDREPRO_RESULTS`` or an explicit
``root`` says otherwise.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import socket
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .config import ConfigError, RunConfig
from .resolution import ResolvedRun, resolve
from .rundir import RunDir, RunFileError, read_json

#: seconds between two renewals of a held lock
HEARTBEAT = 30.0
#: a lock whose heartbeat is older than this is stale (default; ``RunStore(stale_after=...)``,
#: ``$KDREPRO_LOCK_STALE``)
STALE_AFTER = 300.0
#: how long a process waits for a run (or its teacher) that another process is training (default)
WAIT = 7 * 24 * 3600.0


def default_results_root() -> Path:
    """``$KDREPRO_RESULTS``, else ``results``; an empty ``KDREPRO_RESULTS`` is refused (never ``.``)."""
    value = os.environ.get("KDREPRO_RESULTS")
    if value is None:
        return Path("results")
    if not value.strip():
        raise ConfigError("KDREPRO_RESULTS is set but empty; unset it (results/) or give a folder")
    return Path(value)


class RunLockedError(RuntimeError):
    """The run is being trained by another live process (and waiting was not asked for, or timed out)."""


class LockLostError(RuntimeError):
    """This process's lock was taken over by another one; it stops without writing further."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_lock(lock: Path) -> dict | None:
    """The lock's content (``host``, ``pid``, ``token``), ``{}`` when unreadable, None when absent."""
    try:
        text = lock.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            return data
    except json.JSONDecodeError:
        pass
    parts = text.split()  # kdrepro 0.1: "host pid"
    if len(parts) >= 2 and parts[1].isdigit():
        return {"host": parts[0], "pid": int(parts[1])}
    return {}


def lock_owner(lock: Path, stale_after: float | None = None) -> tuple[str, int] | None:
    """``(host, pid)`` of the live holder of ``lock``; None when it is free or stale (a dead process on this
    host, or no heartbeat for ``stale_after`` seconds)."""
    info = _read_lock(lock)
    if info is None:
        return None
    stale_after = _stale_after(stale_after)
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return None
    host, pid = str(info.get("host", "?")), int(info.get("pid", -1) or -1)
    if host == socket.gethostname() and pid > 0 and not _pid_alive(pid):
        return None
    if age > stale_after:
        return None
    return host, pid


def _stale_after(value: float | None) -> float:
    """The stale timeout: ``value``, else ``$KDREPRO_LOCK_STALE``, else :data:`STALE_AFTER`; a positive,
    finite number of seconds, else a one-line :class:`~kdrepro.config.ConfigError`."""
    source = "stale_after"
    if value is None:
        env = os.environ.get("KDREPRO_LOCK_STALE")
        if not env:
            return STALE_AFTER
        value, source = env, "KDREPRO_LOCK_STALE"
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if not (math.isfinite(out) and out > 0):
        raise ConfigError(f"{source}={value!r}: must be a positive number of seconds (default {STALE_AFTER:.0f})")
    return out


class _Heartbeat:
    """Renews a held lock's modification time; notices when the lock no longer holds this token."""

    def __init__(self, lock: Path, token: str, every: float):
        self.lock, self.token, self.every = lock, token, every
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"kdrepro-lock-{lock.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            info = _read_lock(self.lock)
            if info is None or info.get("token") != self.token:
                self.lost.set()
                return
            try:
                os.utime(self.lock)
            except OSError:
                pass

    def check(self) -> None:
        """Raise :class:`LockLostError` when the heartbeat has seen the lock taken over."""
        if self.lost.is_set():
            raise LockLostError(_lost_message(self.lock))

    def holds(self) -> bool:
        """Whether the lock file holds this token now (read from the file, not from the heartbeat)."""
        info = _read_lock(self.lock)
        return info is not None and info.get("token") == self.token

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _lost_message(lock: Path) -> str:
    return (f"the lock {lock} was taken over by another process (this one stalled for longer than the stale "
            "timeout); stopping without writing further. The run is the other process's now: run the same "
            "command again to get its result")


@dataclass
class RunResult:
    config: RunConfig
    run_dir: Path
    summary: dict

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    def metrics(self) -> list[dict]:
        return RunDir(self.run_dir).read_metrics()

    def curriculum(self) -> list[dict]:
        """The per-phase curriculum records (scores, pool, snapshot accuracy), in phase order."""
        rd = RunDir(self.run_dir)
        return [rd.load(f) for f in rd.curriculum_records()]


def read_metrics(run_dir: Path) -> list[dict]:
    return RunDir(run_dir).read_metrics()


class RunStore:
    def __init__(self, root: str | os.PathLike | None = None, stale_after: float | None = None,
                 heartbeat: float = HEARTBEAT):
        if root is not None and not str(root).strip():
            raise ConfigError("--results '': empty path; give a results folder (default: results/)")
        self.root = Path(root) if root is not None else default_results_root()
        self.stale_after = _stale_after(stale_after)
        # renew a held lock well within the stale timeout, however short that is set
        self.heartbeat = min(heartbeat, self.stale_after / 3)
        if self.root.exists() and not self.root.is_dir():
            raise RunFileError(self.root, "is a file, not a results folder; give --results a folder")

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def run_dir(self, run: ResolvedRun | RunConfig | str) -> Path:
        """The folder of a run given by its resolved run, its config or its run id."""
        return self.runs_dir / (run if isinstance(run, str) else run.run_id)

    def lock_path(self, run: ResolvedRun | RunConfig | str) -> Path:
        """``<runs>/<run id>.lock`` of a run given by its resolved run, its config or its run id."""
        return self.runs_dir / f"{run if isinstance(run, str) else run.run_id}.lock"

    def owner(self, run: ResolvedRun | RunConfig | str) -> tuple[str, int] | None:
        """``(host, pid)`` of the live holder of a run's lock (config or run id), None when it is free or stale
        under this store's ``stale_after``; every caller asks here, so ``KDREPRO_LOCK_STALE`` holds everywhere."""
        return lock_owner(self.lock_path(run), self.stale_after)

    # ------------------------------------------------------------------ locks
    def _try_lock(self, lock: Path) -> str | None:
        """Take ``lock`` (taking over a stale one); return its token, or None when a live process holds it."""
        lock.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            token = secrets.token_hex(8)
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if lock_owner(lock, self.stale_after) is not None:
                    return None
                # stale: move it aside under a unique name (atomic), so that two processes that both saw
                # it stale cannot both remove a fresh lock
                aside = lock.with_name(f"{lock.name}.stale-{socket.gethostname()}-{os.getpid()}")
                try:
                    os.replace(lock, aside)
                except FileNotFoundError:
                    continue
                if lock_owner(aside, self.stale_after) is not None:
                    # what was moved is not the stale lock: another process took that over between the
                    # check and the move, and this is its fresh lock. Put it back (link: only if no other
                    # lock appeared meanwhile) and leave the run to it.
                    with contextlib.suppress(OSError):
                        os.link(aside, lock)
                    aside.unlink(missing_ok=True)
                    return None
                aside.unlink(missing_ok=True)
                continue
            except OSError as err:
                raise RunFileError(lock, f"cannot create the lock file ({err.strerror})") from None
            with os.fdopen(fd, "w") as fh:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "token": token,
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S")}, fh)
            return token
        return None

    @contextlib.contextmanager
    def _locked(self, cfg: ResolvedRun, wait: float = 0.0, log: Callable[[str], None] | None = None):
        """Hold ``<run id>.lock``; wait up to ``wait`` seconds for a live holder, then :class:`RunLockedError`."""
        lock = self.lock_path(cfg)
        if math.isnan(wait) or wait < 0:
            raise ConfigError(f"wait={wait!r}: must be a number of seconds >= 0 (or inf)")
        deadline = time.monotonic() + wait
        said = False
        while True:
            token = self._try_lock(lock)
            if token is not None:
                break
            owner = lock_owner(lock, self.stale_after)
            if time.monotonic() >= deadline:
                who = f"process {owner[1]} on {owner[0]}" if owner else "another process"
                raise RunLockedError(
                    f"run {cfg.run_id} is being trained by {who} (lock {lock}); "
                    + (f"waited {wait:.0f} s. " if wait else "")
                    + "Wait for it to finish, or delete the lock file if that process is gone")
            if not said and log is not None and owner is not None:
                log(f"run {cfg.run_id} is being trained by process {owner[1]} on {owner[0]}: waiting for it "
                    f"(up to {wait / 3600:.1f} h; the finished run is then reused)")
                said = True
            time.sleep(min(5.0, max(0.05, deadline - time.monotonic())))
        beat = _Heartbeat(lock, token, self.heartbeat)
        try:
            yield beat
        finally:
            beat.stop()
            info = _read_lock(lock)
            if info is not None and info.get("token") == token:
                lock.unlink(missing_ok=True)

    @staticmethod
    def fence(beat: _Heartbeat, run_dir: Path) -> Callable[[], None]:
        """The write fence of a run held through ``beat``: raises :class:`LockLostError` unless the lock
        file still holds this process's token and the run has no summary yet."""
        summary = RunDir(run_dir).summary

        def check() -> None:
            if not beat.holds():
                beat.lost.set()
                raise LockLostError(_lost_message(beat.lock))
            if summary.exists():
                raise LockLostError(f"run {run_dir.name} was finished by another process while this one "
                                    "trained it; its files are left as they are. Run the same command again "
                                    "to get its result")

        return check

    # ------------------------------------------------------------------ reading
    def status(self, run: ResolvedRun | RunConfig | str | Path) -> str:
        """``new``, ``partial`` or ``finished`` of a run given by its resolved run, config, run id or folder."""
        d = self.run_dir(run) if isinstance(run, (ResolvedRun, RunConfig, str)) else Path(run)
        return RunDir(d).status()

    def resolve(self, run: str | Path) -> Path:
        """The folder of a run given by id, unique id prefix, a former id (``kdrepro migrate``) or path."""
        text = str(run)
        if not text.strip():
            raise FileNotFoundError("no run given: name a run id, a unique id prefix or a run folder "
                                    "(`kdrepro runs` lists them)")
        d = Path(run)
        if d.is_dir() and (d / "config.json").exists():
            return d
        if os.sep in text or text.startswith("."):
            raise FileNotFoundError(f"{text} is not a run folder (no config.json in it); name a run id, a unique "
                                    "id prefix or a run folder (`kdrepro runs` lists them)")
        d = self.runs_dir / text
        if d.is_dir():
            return d
        if not self.runs_dir.is_dir():
            raise FileNotFoundError(f"no run {text!r}: {self.runs_dir} does not exist")
        moved = self.migrated_ids().get(text)
        if moved and (self.runs_dir / moved).is_dir():
            return self.runs_dir / moved
        matches = sorted(p for p in self.runs_dir.glob(f"{text}*") if p.is_dir())
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise FileNotFoundError(f"no run {text!r} in {self.runs_dir} (`kdrepro runs` lists them)")
        shown = "\n  ".join(self._describe(m) for m in matches[:20])
        more = f"\n  ... and {len(matches) - 20} more" if len(matches) > 20 else ""
        raise FileNotFoundError(f"run {text!r} is ambiguous: {len(matches)} runs start with it; give more of the "
                                f"id:\n  {shown}{more}")

    def _describe(self, d: Path) -> str:
        try:
            cfg = RunConfig.from_dict(RunDir(d).read_config())
            label = cfg.label()
            return f"{d.name}  {label}" if label else d.name
        except (RunFileError, ConfigError):
            return d.name

    def load(self, run: str | Path, resolved: ResolvedRun | None = None) -> RunResult:
        """A stored run by id, id prefix or path. ``resolved``: the run as this process already resolved it;
        a stored config that computes the same run is then not resolved again to check the folder."""
        d = self.resolve(run)
        rd = RunDir(d)
        cfg = self._checked_config(rd, resolved)
        summary = rd.read_summary()
        changed = self._teacher_changed(resolved if resolved is not None else resolve(cfg), summary)
        if changed:
            summary = {**summary, "flags": [*summary.get("flags", []), "teacher_changed"]}
        return RunResult(cfg, d, summary)

    @staticmethod
    def _checked_config(rd: RunDir, resolved: ResolvedRun | None = None) -> RunConfig:
        """The config of a run folder, after checking that the folder is what it says
        (:meth:`~kdrepro.rundir.RunDir.check`); else :class:`RunFileError` naming the file and the mismatch.
        A stored config that computes ``resolved`` (:meth:`ResolvedRun.computes_the_same`) has its id."""
        try:
            stored = rd.read_config()
            cfg = RunConfig.from_dict(stored, where=str(rd.config))
            same = resolved is not None and isinstance(stored, dict) and resolved.computes_the_same(stored)
            run_id = resolved.run_id if same else cfg.run_id
        except ConfigError as err:
            raise RunFileError(rd.config, f"{err}") from None
        rd.check(run_id, cfg.epochs)
        return cfg

    def _teacher_changed(self, run: ResolvedRun, summary: dict) -> bool:
        """Whether a finished student was taught by other weights than its teacher run in this store now
        holds: both summaries record the hashes (``teacher_weights_hash``, ``weights_hash``) and they differ.
        That happens when a teacher run is trained again (its weights were lost, or the store was merged
        from another machine, where the same config gives other bits). Runs stored before summaries kept
        the hashes are not judged."""
        taught = summary.get("teacher_weights_hash")
        if not taught or not run.has_teacher_run:
            return False
        path = self.runs_dir / run.teacher.run_id / "summary.json"
        try:
            teacher = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        return bool(teacher.get("weights_hash")) and teacher["weights_hash"] != taught

    def migrated_ids(self) -> dict[str, str]:
        """``{old id: new id}`` from ``runs/migrations.jsonl`` (written by ``kdrepro migrate``)."""
        path = self.runs_dir / "migrations.jsonl"
        out = {}
        if path.exists():
            for line in path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError):
                    row = json.loads(line)
                    out[row["old"]] = row["new"]
        return out

    def run_dirs(self) -> list[Path]:
        """The run folders of this store, by id; not dot-folders (an export in progress, kdrepro.export)."""
        if not self.runs_dir.is_dir():
            return []
        return sorted(p for p in self.runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def list(self) -> list[dict]:
        """One row per run folder; a run whose files are damaged is listed with ``status`` ``bad`` and the
        problem (naming the file), never hiding the others."""
        rows = []
        for d in self.run_dirs():
            rd = RunDir(d)
            if not rd.config.exists() and lock_owner(rd.lock, self.stale_after) is not None:
                continue  # a run being started: its config is written next
            try:
                cfg = self._checked_config(rd)
                metrics = rd.read_metrics()
                summary = rd.read_summary()
                last = summary.get("last_top1", metrics[-1]["test_top1"] if metrics else None)
                owner = self.owner(d.name)
                status = rd.status() if owner is None or rd.status() == "finished" else "running"
                rows.append({"run_id": d.name, "status": status, "method": cfg.method, "dataset": cfg.dataset,
                             "model": cfg.model, "seed": cfg.seed, "label": cfg.label(),
                             "epochs": f"{len(metrics)}/{cfg.epochs}", "last_top1": last,
                             "best_top1": summary.get("best_top1"), "flags": summary.get("flags", []),
                             "problem": None})
            except (RunFileError, ConfigError, KeyError, TypeError) as err:
                rows.append({"run_id": d.name, "status": "bad", "method": None, "dataset": None, "model": None,
                             "seed": None, "label": "", "epochs": "?", "last_top1": None, "best_top1": None,
                             "flags": [], "problem": str(err)})
        return rows

    # ------------------------------------------------------------------ running
    def run(self, cfg: ResolvedRun | RunConfig, train: bool = True, log=None, wait: float | None = WAIT,
            callbacks: list | None = None) -> RunResult:
        """The finished result of ``cfg``: stored if finished, else resumed or trained (``train=True``). A run
        (or teacher) that another process is training is waited for up to ``wait`` seconds. ``callbacks``
        (:mod:`kdrepro.callbacks`) follow this run's training (not its teacher's)."""
        cfg = resolve(cfg)  # validates before anything is written
        d = self.run_dir(cfg)
        if self.status(d) == "finished":
            return self.load(d, cfg)
        if not train:
            raise FileNotFoundError(f"run {d.name} is {self.status(d)} in {self.runs_dir} and train=False")
        teacher = self._teacher_spec(cfg, log, wait)
        with self._locked(cfg, wait=wait or 0.0, log=log) as beat:
            if self.status(d) == "finished":  # finished by another process while this one waited
                return self.load(d, cfg)
            return self._train(cfg, d, teacher, log, beat, callbacks)

    def _train(self, cfg: ResolvedRun, d: Path, teacher, log, beat: _Heartbeat, callbacks=None) -> RunResult:
        from .engine import Trainer

        fresh = not d.exists()
        rd = RunDir(d, fence=self.fence(beat, d))
        try:
            trainer = Trainer(cfg, rd, teacher=teacher, cache_dir=self.cache_dir, log=log, callbacks=callbacks)
            d.mkdir(parents=True, exist_ok=True)
            if not rd.config.exists():
                rd.write_config(cfg.to_dict())
        except BaseException:
            if fresh and d.exists():
                shutil.rmtree(d, ignore_errors=True)
            raise
        trainer.epoch_hook = beat.check
        try:
            trainer.fit()
        except BaseException:
            if fresh and rd.status() == "new" and beat.holds():
                shutil.rmtree(d, ignore_errors=True)  # failed before its first epoch: leave no folder behind
            raise
        return self.load(d, cfg)

    def _teacher_spec(self, cfg: ResolvedRun, log, wait):
        """What the trainer builds the teacher from: a published checkpoint, or the teacher run's weights
        (trained first, or waited for, when not in the store). Loads no data."""
        from .engine import TeacherSpec

        if not cfg.needs_teacher:
            return None
        if cfg.checkpoint is not None:
            ck = cfg.checkpoint
            return TeacherSpec(ck.model, ck.path, dict(ck.model_options))
        tcfg = cfg.teacher
        result = self.run(tcfg, log=log, wait=wait)
        if result.summary.get("diverged"):
            from .engine import TrainingDiverged

            raise TrainingDiverged(f"the teacher run {result.run_id} {diverged_in(result.summary)} (recorded with the "
                                   f"flag 'diverged'), so its student {cfg.run_id} cannot be distilled from it; "
                                   "change the teacher's recipe (teacher.lr, ...) to get a teacher that trains")
        weights = result.run_dir / "weights.pt"
        if not weights.exists():
            raise FileNotFoundError(
                f"teacher run {result.run_id} is finished but its weights ({weights}) are not here (weights "
                "are kept out of git). Restore the file, give teacher_weights, or delete that run folder to "
                "train the teacher again: on another machine that gives other weights, so students it already "
                "taught would be flagged teacher_changed")
        return TeacherSpec(tcfg.model, str(weights), dict(tcfg.model_options))


def run(cfg: ResolvedRun | RunConfig, root: str | os.PathLike | None = None, **kwargs) -> RunResult:
    return RunStore(root).run(cfg, **kwargs)


def diverged_in(summary: dict) -> str | None:
    """"diverged in epoch 12" (or "... in the initialisation stage of 'fsp' (its epoch 3)") for a diverged
    run's summary (:func:`kdrepro.engine.diverged_summary`), else None."""
    info = summary.get("diverged")
    if not info:
        return None
    return f"diverged in {info.get('where') or 'epoch ' + str(info.get('epoch'))}"


def summary_line(s: dict) -> str:
    """A finished run's summary in one line: last and best test top-1, epochs, iterations and wall time; a
    diverged run says where it diverged instead of an accuracy."""
    if s.get("diverged"):
        head = f"{diverged_in(s)}, no accuracy  epochs completed {s['epochs']}"
    else:
        head = (f"test top-1: last {s['last_top1']:.2f}  best {s['best_top1']:.2f} (epoch {s['best_epoch']})  "
                f"epochs {s['epochs']}")
    return f"{head}  iterations {s['iterations']}  wall {s['wall_seconds']:.1f}s"


# ---------------------------------------------------------------------- summaries across seeds
def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (n-1; 0 for one value) and count."""
    vals = [float(v) for v in values]
    if not vals:
        return math.nan, math.nan, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def summarize_seeds(results: list[RunResult]) -> dict:
    """Mean ± std over seeds of last-epoch and best-epoch test top-1 (both named as such) of the runs that
    finished training; ``seeds`` counts those, ``diverged`` the runs that diverged (no accuracy)."""
    finished = [r for r in results if not r.summary.get("diverged")]
    last = mean_std(r.summary["last_top1"] for r in finished)
    best = mean_std(r.summary["best_top1"] for r in finished)
    return {"last_top1_mean": last[0], "last_top1_std": last[1], "best_top1_mean": best[0],
            "best_top1_std": best[1], "seeds": last[2], "diverged": len(results) - len(finished)}
