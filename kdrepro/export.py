"""Publish finished runs from a working run store into another one (``kdrepro export``).

Training happens in a scratch store (``--results /scratch/...``: checkpoints, snapshots, caches, gigabytes);
what a paper repository keeps is each finished run's record: ``config.json``, ``summary.json``,
``metrics.jsonl``, ``curriculum/`` and ``scores/``. Weights stay behind, except, on request, the weights of
a teacher run that an exported student was distilled from: a student's record is only reproducible with the
exact teacher bits (CPU training is bit-exact on one machine, not across CPU models;
``results/superseded/cpu300-teacher-a/README.md``), so losing them means training every student again.

Safe by construction: each run is copied into a hidden folder beside its destination and renamed into place
(an interrupted export leaves no half-copied run); a destination run of the same id whose record differs is
never overwritten unless asked (``replace=True``), since the same id with another record is another result.
"""
from __future__ import annotations

import filecmp
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .rundir import RunDir, RunFileError
from .runs import diverged_in

#: what a run's record is: everything else (checkpoints, snapshots, weights, locks, temporaries) stays
RECORD_FILES = ("config.json", "summary.json", "metrics.jsonl")
RECORD_DIRS = ("curriculum", "scores")


@dataclass(frozen=True)
class Exported:
    run_id: str
    action: str  # exported, replaced, unchanged, refused, skipped
    note: str = ""


def _teacher_ids(run_dirs: list[Path]) -> set[str]:
    """Run ids of the teacher runs that the given runs were distilled from (from their configs)."""
    from .config import ConfigError, RunConfig
    from .resolution import resolve

    ids = set()
    for d in run_dirs:
        try:
            cfg = RunConfig.from_dict(RunDir(d).read_config())
        except (RunFileError, ConfigError):
            continue
        if cfg.method != "ce" and cfg.teacher is not None and cfg.teacher_weights is None:
            ids.add(resolve(cfg).teacher.run_id)
    return ids


def _same_record(a: Path, b: Path, weights: bool) -> bool:
    names = [*RECORD_FILES, *(["weights.pt"] if weights else [])]
    if any((a / n).exists() != (b / n).exists() for n in names):
        return False
    if not all(filecmp.cmp(a / n, b / n, shallow=False) for n in names if (a / n).exists()):
        return False
    for sub in RECORD_DIRS:  # the target may hold more (a teacher's scores, written there by notebook 06)
        left = sorted(p.name for p in (a / sub).glob("*")) if (a / sub).is_dir() else []
        if not all((b / sub / n).is_file() and filecmp.cmp(a / sub / n, b / sub / n, shallow=False) for n in left):
            return False
    return True


def _copy_record(src: Path, dst: Path, weights: bool) -> None:
    dst.mkdir(parents=True)
    for name in RECORD_FILES:
        shutil.copy2(src / name, dst / name)
    for sub in RECORD_DIRS:
        if (src / sub).is_dir():
            shutil.copytree(src / sub, dst / sub, ignore=shutil.ignore_patterns("*.tmp"))
    if weights:
        shutil.copy2(src / "weights.pt", dst / "weights.pt")


def _describe(d: Path) -> str:
    try:
        s = json.loads((d / "summary.json").read_text())
        result = diverged_in(s) or f"last top-1 {s['last_top1']:.2f}"
        return f"{result}, weights {s.get('weights_hash', 'not recorded')}"
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable summary"


def _recover(runs_dir: Path) -> None:
    """Finish what an interrupted export left: a half-copied run is removed; a record moved aside to be
    replaced goes back when its replacement never arrived, and is removed when it did."""
    if not runs_dir.is_dir():
        return
    for p in runs_dir.glob(".*.export"):
        shutil.rmtree(p, ignore_errors=True)
    for p in runs_dir.glob(".*.replaced"):
        final = runs_dir / p.name[1:-len(".replaced")]
        if final.exists():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.rename(final)


def export_runs(source: str | Path, target: str | Path, runs: list[str] | None = None,
                teacher_weights: bool = False, replace: bool = False, weights: bool = False) -> list[Exported]:
    """Copy the records of the finished runs of store ``source`` (all, or the ids in ``runs``) into store
    ``target``; with ``teacher_weights`` also the ``weights.pt`` of every exported run that a run of either
    store (finished or not) is distilled from; with ``weights`` the ``weights.pt`` of every exported run.
    Returns one :class:`Exported` per run considered, in id order."""
    from .runs import RunStore

    src, dst = RunStore(source), RunStore(target)
    if src.runs_dir.resolve() == dst.runs_dir.resolve():
        raise ValueError(f"source and target are the same run store ({src.runs_dir}): export copies between two")
    if not src.runs_dir.is_dir():
        raise FileNotFoundError(f"no run store at {src.root} (no runs/ folder): give the store you trained in")
    chosen = [src.resolve(r) for r in runs] if runs else src.run_dirs()
    _recover(dst.runs_dir)
    teachers = _teacher_ids(src.run_dirs() + dst.run_dirs()) if teacher_weights else set()
    out = []
    for d in chosen:
        run_id = d.name
        status = RunDir(d).status()
        if status != "finished":
            out.append(Exported(run_id, "skipped", f"{status}, not finished"))
            continue
        with_weights = weights or run_id in teachers
        has_weights = (d / "weights.pt").exists()
        final = dst.runs_dir / run_id
        if final.exists() and _same_record(d, final, with_weights and has_weights):
            lacking = with_weights and not has_weights and not (final / "weights.pt").exists()
            out.append(Exported(run_id, "unchanged", "its weights are in neither store" if lacking else ""))
            continue
        if with_weights and not has_weights:
            why = "its weights were asked for" if weights else "a run of either store is distilled from it"
            out.append(Exported(run_id, "refused", f"{why}, but {d / 'weights.pt'} is missing"))
            continue
        action = "exported"
        if final.exists():
            if not replace:
                out.append(Exported(run_id, "refused", f"{final} holds another record of this id ({_describe(final)}; "
                                                       f"here: {_describe(d)}); pass --replace to overwrite it"))
                continue
            action = "replaced"
        tmp, old = dst.runs_dir / f".{run_id}.export", dst.runs_dir / f".{run_id}.replaced"
        try:
            _copy_record(d, tmp, with_weights)
            if final.exists():
                final.rename(old)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if old.exists() and not final.exists():
                old.rename(final)  # put the previous record back
            raise
        shutil.rmtree(old, ignore_errors=True)
        out.append(Exported(run_id, action, "with weights" if with_weights else ""))
    return out
