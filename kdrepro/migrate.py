"""``kdrepro migrate``: upgrade a run store to the current config schema and run ids, without retraining.

kdrepro 0.1 (schema 1) stored flat configs (``kd_weight``, ``temperature``, ``score``, ...) and hashed every
field into the run id, without the data's content. Schema 2 (:mod:`kdrepro.config`) has typed ``losses``
and ``curriculum`` sections and hashes what a run computes, the data's fingerprint included. For each run
folder this module

1. reads its ``config.json`` and *verifies* the folder: the schema-1 id recomputed from the stored config
   with the schema-1 rule (:func:`v1_run_id`, frozen here) must equal the folder's name;
2. converts the config (:func:`v1_to_v2`), resolves it (which fingerprints the data: the files when they
   are here, else the known fingerprint of a fixed data set such as ``cifar10-5k``) and *checks the
   conversion*: the run's semantics read from the old config (:func:`semantics_v1`) must equal those read
   from the new one (:func:`semantics_v2`), two independent readings of what the run computes;
3. appends ``{"old", "new"}`` to ``runs/migrations.jsonl`` (so the old id still finds the run:
   ``kdrepro show <old id>``), moves the folder to its new id (one atomic rename), rewrites the summary's
   ``run_id`` and, last, ``config.json`` (each atomically).

A run locked by a live process is skipped (migrate it when it is done); a folder that fails a check is
reported and left alone. Interrupted at any point, the migration can be run again: until its config is
rewritten a folder still reads as schema 1 (renamed or not), so it is planned again and finished, and its
log row, keyed by the schema-1 id recomputed from that config, is written once.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .config import SCHEMA, ConfigError, RunConfig
from .resolution import ResolvedRun, resolve
from .rundir import RunDir, RunFileError, atomic_write

# ---------------------------------------------------------------------------------------------- schema 1

V1_RUNTIME = frozenset({"device", "teacher_cache", "compile", "channels_last", "progress", "data_root",
                        "num_threads"})
V1_LOCATION = frozenset({"path", "root"})


def v1_identity(d: dict) -> dict:
    """kdrepro 0.1's ``RunConfig.identity()`` of a stored (resolved) schema-1 config."""
    data = {k: v for k, v in d.items() if k not in V1_RUNTIME}
    data["dataset_options"] = {k: v for k, v in sorted(d.get("dataset_options", {}).items()) if k not in V1_LOCATION}
    if isinstance(data.get("teacher"), dict):
        data["teacher"] = v1_identity(data["teacher"])
    return data


def v1_run_id(d: dict) -> str:
    """kdrepro 0.1's run id of a stored schema-1 config."""
    blob = json.dumps(v1_identity(d), sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    return f"{d['method']}-{d['dataset']}-{d['model']}-s{d['seed']}-{digest}"


_V1_KEPT = ("method", "dataset", "dataset_options", "model", "model_options", "seed", "recipe", "epochs",
            "batch_size", "lr", "momentum", "nesterov", "weight_decay", "milestones", "gamma", "augment",
            "crop_padding", "hflip", "bf16", "teacher_weights", *sorted(V1_RUNTIME))


def v1_to_v2(d: dict) -> dict:
    """A schema-1 config as a schema-2 config (unresolved: the data fingerprint is filled by resolution)."""
    out = {k: d[k] for k in _V1_KEPT if k in d}
    method = d["method"]
    losses: dict[str, dict] = {"ce": {"weight": d["ce_weight"]}}
    if method != "ce":
        losses["kd"] = {"weight": d["kd_weight"], "T": d["temperature"]}
    if method == "slkd":
        losses["mse"] = {"weight": d["mse_weight"],
                         "target": "snapshot" if d.get("quirk_mse_to_snapshot") else "teacher"}
    if d.get("fitnet_weight", 0) > 0:
        losses["fitnet"] = {"weight": d["fitnet_weight"], "stage": d["fitnet_stage"]}
    if d.get("at_weight", 0) > 0:
        losses["at"] = {"weight": d["at_weight"], "p": d["at_p"]}
    out["losses"] = losses
    if method == "slkd":
        pacing = d["pacing"]
        if pacing == "authors":
            options = {}
        elif pacing == "custom":
            options = {"phase_ends": d["phase_ends"], "fractions": d["fractions"], "warmup": d["warmup"] or 0}
        else:
            options = {"num_phases": d["num_phases"], "start_fraction": d["start_fraction"], "warmup": d["warmup"]}
        out["curriculum"] = {"score": d["score"], "order": d["order"], "pacing": pacing, "pacing_options": options,
                             "quirk_no_warmup_augment": bool(d.get("quirk_no_warmup_augment", False))}
    if isinstance(d.get("teacher"), dict):
        out["teacher"] = v1_to_v2(d["teacher"])
    return out


# ------------------------------------------------------------------------------- semantics, read twice

_OPTIM = ("epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay", "gamma")
_RAMP_PACINGS = ("linear", "root", "step")


def _common(d: dict) -> dict:
    return {"dataset": d["dataset"], "model": d["model"], "model_options": d.get("model_options", {}),
            "options": {k: v for k, v in d.get("dataset_options", {}).items() if k not in V1_LOCATION},
            "seed": d["seed"], "optim": {k: d[k] for k in _OPTIM}, "milestones": list(d["milestones"]),
            "augment": [d["crop_padding"], d["hflip"]] if d["augment"] else None, "bf16": bool(d.get("bf16"))}


def semantics_v1(d: dict) -> dict:
    """What a schema-1 config computes: active loss terms with their parameters, the curriculum, the
    teacher, the recipe and the data, read from the flat schema-1 fields."""
    out = _common(d)
    terms = {}
    if d["ce_weight"] > 0:
        terms["ce"] = [d["ce_weight"]]
    if d["method"] != "ce" and d["kd_weight"] > 0:
        terms["kd"] = [d["kd_weight"], d["temperature"]]
    if d["method"] == "slkd" and d["mse_weight"] > 0:
        terms["mse"] = [d["mse_weight"], "snapshot" if d.get("quirk_mse_to_snapshot") else "teacher"]
    if d["method"] != "ce" and d.get("fitnet_weight", 0) > 0:
        terms["fitnet"] = [d["fitnet_weight"], d["fitnet_stage"]]
    if d["method"] != "ce" and d.get("at_weight", 0) > 0:
        terms["at"] = [d["at_weight"], d["at_p"]]
    out["terms"] = terms
    out["curriculum"] = None
    if d["method"] == "slkd":
        p = d["pacing"]
        params = ([] if p == "authors" else [list(d["phase_ends"]), list(d["fractions"]), d["warmup"] or 0]
                  if p == "custom" else [d["num_phases"], d["start_fraction"], d["warmup"]])
        out["curriculum"] = [d["score"], d["order"], p, params, bool(d.get("quirk_no_warmup_augment"))]
    out["teacher"] = semantics_v1(d["teacher"]) if isinstance(d.get("teacher"), dict) and d["method"] != "ce" \
        else (d.get("teacher_weights") if d["method"] != "ce" else None)
    return out


def semantics_v2(cfg: RunConfig) -> dict:
    """The same reading of a resolved schema-2 config, from its ``losses`` and ``curriculum`` sections."""
    d = cfg.model_dump(mode="json")
    out = _common(d)
    terms = {}
    for name, p in (d["losses"] or {}).items():
        if p["weight"] <= 0:
            continue
        extra = {"kd": ["T"], "mse": ["target"], "fitnet": ["stage"], "at": ["p"]}.get(name, [])
        terms[name] = [p["weight"], *(p[k] for k in extra)]
    out["terms"] = terms
    out["curriculum"] = None
    c = d["curriculum"]
    if c is not None:
        o = c["pacing_options"]
        params = ([] if c["pacing"] == "authors" else [list(o["phase_ends"]), list(o["fractions"]), o["warmup"]]
                  if c["pacing"] == "custom" else [o["num_phases"], o["start_fraction"], o["warmup"]])
        out["curriculum"] = [c["score"], c["order"], c["pacing"], params, bool(c["quirk_no_warmup_augment"])]
    if d["teacher_weights"] is not None:
        out["teacher"] = d["teacher_weights"]
    else:
        out["teacher"] = semantics_v2(RunConfig.from_dict(d["teacher"])) if d["teacher"] else None
    return out


# ------------------------------------------------------------------------------------------- migration


@dataclass
class Migration:
    old: str
    new: str | None
    action: str          # migrated | current | skipped
    reason: str = ""


def _is_v1(data: dict) -> bool:
    return "schema" not in data and "kd_weight" in data


def plan_folder(d: Path, data_root: str | None = None) -> tuple[dict, ResolvedRun]:
    """Verify and convert one schema-1 folder: ``(old config, new resolved run)``; raises ``ValueError``
    naming the problem."""
    rd = RunDir(d)
    old = rd.read_config()
    if not _is_v1(old):
        raise ValueError("not a schema-1 config")
    converted = v1_to_v2(old)
    if data_root is not None:
        converted["data_root"] = data_root
        if isinstance(converted.get("teacher"), dict):
            converted["teacher"]["data_root"] = data_root
    try:
        new = resolve(RunConfig.from_dict(converted))
    except ConfigError as err:
        raise ValueError(f"the converted config does not resolve: {err}") from None
    if semantics_v1(old) != semantics_v2(new.config):
        a, b = semantics_v1(old), semantics_v2(new.config)
        diff = sorted(k for k in a if a[k] != b.get(k))
        raise ValueError(f"the conversion changes what the run computes (in {diff}); left alone")
    recomputed = v1_run_id(old)
    if recomputed != d.name and new.run_id != d.name:
        raise ValueError(f"its stored config gives the schema-1 id {recomputed}, not the folder's name: the "
                         "folder was renamed or its config edited; left alone")
    return old, new


def migrate_store(results: str | os.PathLike, dry_run: bool = False, data_root: str | None = None,
                  log: Callable[[str], None] = print) -> list[Migration]:
    """Migrate every run folder of ``<results>/runs``; return what was (or, with ``dry_run``, would be) done."""
    from .runs import RunStore

    store = RunStore(results)
    runs = store.runs_dir
    if not runs.is_dir():
        raise FileNotFoundError(f"no run store at {runs}")
    out: list[Migration] = []
    for d in sorted(p for p in runs.iterdir() if p.is_dir() and (p / "config.json").exists()):
        try:
            data = RunDir(d).read_config()
        except RunFileError as err:
            out.append(Migration(d.name, None, "skipped", str(err)))
            continue
        if not _is_v1(data):
            try:
                cfg = resolve(RunConfig.from_dict(data))
                state = "current" if cfg.run_id == d.name else "skipped"
                out.append(Migration(d.name, cfg.run_id, state,
                                     "" if state == "current" else "schema-2 config whose id is not the folder's"))
            except (ConfigError, RunFileError) as err:
                out.append(Migration(d.name, None, "skipped", str(err)))
            continue
        if store.owner(d.name) is not None:
            out.append(Migration(d.name, None, "skipped", "a live process is training it; migrate it when it is done"))
            continue
        try:
            old, new = plan_folder(d, data_root)
        except (ValueError, RunFileError) as err:
            out.append(Migration(d.name, None, "skipped", str(err)))
            continue
        target = runs / new.run_id
        if target.exists() and target != d:
            out.append(Migration(d.name, new.run_id, "skipped", f"{target} exists already"))
            continue
        out.append(Migration(d.name, new.run_id, "migrated"))
        if dry_run:
            continue
        _move(d, target, new, store, v1_run_id(old))
    counts = {a: sum(m.action == a for m in out) for a in ("migrated", "current", "skipped")}
    verb = "would migrate" if dry_run else "migrated"
    log(f"kdrepro migrate: {verb} {counts['migrated']} run(s) to schema {SCHEMA}; {counts['current']} already "
        f"current; {counts['skipped']} skipped")
    for m in out:
        if m.action != "current":
            log(f"  {m.action:<9} {m.old}" + (f" -> {m.new}" if m.new and m.action == "migrated" else "")
                + (f": {m.reason}" if m.reason else ""))
    return out


def _move(d: Path, target: Path, new: ResolvedRun, store, old_id: str) -> None:
    """Log, rename, rewrite the summary, then the config: each step atomic, and the folder reads as schema 1
    until the last one, so a re-run after a crash anywhere finishes the job."""
    log_path = store.runs_dir / "migrations.jsonl"
    lines = log_path.read_text() if log_path.exists() else ""
    logged = set()
    for line in lines.splitlines():
        try:
            row = json.loads(line)
            logged.add((row["old"], row["new"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    if (old_id, target.name) not in logged:
        row = {"old": old_id, "new": target.name, "schema": [1, SCHEMA], "date": time.strftime("%Y-%m-%d")}
        atomic_write(log_path, lines + json.dumps(row) + "\n")
    if d != target:
        os.rename(d, target)
    rd = RunDir(target)
    summary = rd.read_summary()
    if summary and summary.get("run_id") != target.name:
        summary["run_id"] = target.name
        rd.write_summary(summary)
    stored = new.config.model_copy(update={"data_root": None, "teacher": _without_root(new.config.teacher)})
    rd.write_config(stored.to_dict())


def _without_root(teacher: dict | None) -> dict | None:
    if not isinstance(teacher, dict):
        return teacher
    return {**teacher, "data_root": None, "teacher": _without_root(teacher.get("teacher"))}
