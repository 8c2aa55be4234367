"""The ``kdrepro`` command line: ``train``, ``runs``, ``show``, ``download``, ``migrate`` and ``reproduce``.

Examples::

    kdrepro train --config my_run.yaml --set epochs=30 --set teacher.model=resnet32
    kdrepro train --set lr=1e-3 --set losses.kd.T=4 --dry-run
    kdrepro runs
    kdrepro show slkd-digits-resnet8-s0
    kdrepro reproduce --profile cpu --jobs 2

Every user error is one line on stderr and a non-zero exit (docs/errors.md): 2 for a bad key, value,
config file or profile; 1 for a missing or damaged file, a locked run, a full disk. An unexpected error
(a bug, exit 3) prints one line too, and its traceback goes to a log file whose path that line gives;
``--debug`` prints it instead. ``train`` of a run whose loss turned non-finite exits 4 (the run is
recorded as finished with the flag ``diverged``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .config import ConfigError, RunConfig, merge, parse_overrides
from .resolution import ResolvedRun, resolve


class UserError(RuntimeError):
    """An error whose message says everything the user needs (no traceback)."""


def _load_config_file(path: str) -> dict:
    from .yamlfile import YamlFileError, load_yaml

    try:
        data = load_yaml(path, "config file")
    except YamlFileError as err:
        raise ConfigError(str(err)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of run-config keys, not a {type(data).__name__}")
    return data


def _check_device(device: str) -> None:
    """A CUDA device that this machine has (``cuda``, ``cuda:N``), else :class:`ConfigError`."""
    if not device.startswith("cuda"):
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(f"device={device!r}: this machine has no CUDA device; use device=cpu (or auto)")
    index = int(device[5:]) if device.startswith("cuda:") else 0
    if index >= count:
        raise ConfigError(f"device={device!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")


def build_config(config_file: str | None, sets: list[str], device: str | None = None) -> ResolvedRun:
    """The resolved run of ``--config`` and ``--set`` (and ``--device``): every value checked."""
    data = _load_config_file(config_file) if config_file is not None else {}
    data = merge(data, parse_overrides(sets or []))
    if device is not None:
        data["device"] = device
    cfg = resolve(RunConfig.from_dict(data))
    _check_device(cfg.device)
    return cfg


# ------------------------------------------------------------------------------------------------ commands


def cmd_train(args) -> int:
    from .executors.planning import plan_lines
    from .runs import RunStore, diverged_in, summary_line

    if args.metrics_writer:
        args.set = [*args.set, f"metrics_writers=[{','.join(args.metrics_writer)}]"]
    if args.log_every is not None:
        args.set = [*args.set, f"log_every={args.log_every}"]
    given = merge(_load_config_file(args.config) if args.config is not None else {}, parse_overrides(args.set or []))
    cfg = build_config(args.config, args.set, args.device)
    store = RunStore(args.results)
    before = store.status(cfg)
    for line in plan_lines(store, cfg, given):
        print(line, file=sys.stderr if not args.dry_run else sys.stdout)
    if args.dry_run:
        print(json.dumps({"run_id": cfg.run_id, "status": before, "config": cfg.to_dict()}, indent=2))
        return 0
    from .executors.local import _terminate_as_interrupt

    # SIGTERM or SIGHUP (`kill`, a scheduler's worker being stopped) stops the run as Ctrl-C does: its lock is
    # released and the run resumes from its last finished epoch
    with _terminate_as_interrupt():
        result = store.run(cfg, wait=args.wait, log=lambda m: print(m, file=sys.stderr))
    s = result.summary
    verb = "found finished" if before == "finished" else ("resumed and finished" if before == "partial" else "trained")
    print(f"{verb} {result.run_id} in {result.run_dir}")
    print(f"  {summary_line(s)}")
    if s.get("diverged"):
        print(f"kdrepro: run {result.run_id} {diverged_in(s)} (non-finite loss); it is recorded as finished with "
              "the flag 'diverged' and no accuracy, and is not trained again. Lower lr or a loss weight, or turn "
              "off the option that caused it (a new run id)", file=sys.stderr)
        return EXIT_DIVERGED
    if s.get("flags"):
        print(f"  warning: {', '.join(s['flags'])} (see docs/run-store.md, Health flags)")
    return 0


#: ``kdrepro train``'s exit status for a run that diverged (docs/errors.md)
EXIT_DIVERGED = 4


def cmd_runs(args) -> int:
    from .executors import annotate_run_rows
    from .runs import RunStore

    store = RunStore(args.results)
    rows = annotate_run_rows(store.list(), store.root)  # the states of submitted jobs (<results>/*/jobs/)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no runs in {store.runs_dir}")
        return 0
    header = f"{'run id':<44} {'status':<9} {'epochs':>8} {'last top-1':>10} {'best top-1':>10}  variant"
    print(header)
    print("-" * len(header))
    for r in rows:
        last, best = _percent(r["last_top1"]), _percent(r["best_top1"])
        note = r["label"] + (f"  [{', '.join(r['flags'])}]" if r["flags"] else "")
        if r["problem"]:
            note = f"PROBLEM: {r['problem']}"
        if r.get("job") and r["status"] != "finished":
            note += f"  [job {r['job']}; log {r['log']}]"
        print(f"{r['run_id']:<44} {r['status']:<9} {r['epochs']:>8} {last:>10} {best:>10}  {note}")
    return 0


def _percent(value) -> str:
    """A top-1 for the table: two decimals, ``-`` for none (or anything that is not a number)."""
    return f"{value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def cmd_show(args) -> int:
    from .runs import RunStore

    store = RunStore(args.results)
    result = store.load(args.run)
    out = {"run_id": result.run_id, "status": store.status(result.run_dir), "run_dir": str(result.run_dir),
           "label": result.config.label(), "config": result.config.to_dict(), "summary": result.summary}
    if args.metrics:
        out["metrics"] = result.metrics()
    print(json.dumps(out, indent=2))
    return 0


def cmd_download(args) -> int:
    import http.client
    import socket
    import urllib.error

    from .data import CorruptDatasetError, DatasetNotFoundError, load_dataset

    # what a failed transfer raises (torchvision: RuntimeError for a file that fails its checksum); any other
    # OSError (a file where --root should be a folder, no permission, a full disk) is the file system's and
    # is reported as such by main()
    network = (urllib.error.URLError, ConnectionError, TimeoutError, socket.gaierror, http.client.HTTPException,
               RuntimeError)
    for split in (True, False):
        try:
            ds = load_dataset(args.name, root=args.root, train=split, download=True)
        except (DatasetNotFoundError, CorruptDatasetError):
            raise
        except ValueError as err:  # an unknown name, or a data set that needs options (npz: path=...)
            raise UserError(f"{args.name}: {err}") from None
        except network as err:
            reason = getattr(err, "reason", None) or err
            raise UserError(f"{args.name}: the download failed ({reason}). Check the internet connection, or put "
                            "the files under --root by hand (docs/data-and-models.md)") from None
        print(f"{args.name} {'train' if split else 'test'}: {len(ds)} images of shape {ds.image_shape}, "
              f"{ds.num_classes} classes")
    return 0


def _results_root(args):
    """``--results``, else ``$KDREPRO_RESULTS``, else ``results``; an empty ``--results`` is refused."""
    from .runs import default_results_root

    if args.results is None:
        return default_results_root()
    if not args.results.strip():
        raise ConfigError("--results '': empty path; give a results folder (default: results/)")
    return args.results


def cmd_migrate(args) -> int:
    from .migrate import migrate_store

    results = _results_root(args)
    done = migrate_store(results, dry_run=args.dry_run, data_root=args.data_root)
    return 1 if any(m.action == "skipped" for m in done) and args.strict else 0


def cmd_export(args) -> int:
    from .export import export_runs

    try:
        done = export_runs(_results_root(args), args.to, args.runs or None,
                           teacher_weights=args.teacher_weights, replace=args.replace, weights=args.weights)
    except ValueError as err:
        raise UserError(str(err)) from None
    for e in done:
        print(f"{e.action:<9} {e.run_id}" + (f"  ({e.note})" if e.note else ""))
    counts = {a: sum(e.action == a for e in done) for a in ("exported", "replaced", "unchanged", "skipped", "refused")}
    print(", ".join(f"{n} {a}" for a, n in counts.items() if n) or "no runs")
    return 1 if counts["refused"] else 0


def cmd_reproduce(args) -> int:
    from . import reproduce

    return reproduce.run_from_args(args)



def _seconds(text: str) -> float:
    """``--wait``: seconds, 0 or more (``inf``: wait as long as it takes); never NaN."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0 (or inf), got {text!r}")
    return value

def make_parser() -> argparse.ArgumentParser:
    from . import reproduce_args
    from .runs import WAIT

    parser = argparse.ArgumentParser(
        prog="kdrepro",
        description="kdrepro: knowledge distillation via instance-level sequence learning (SLKD), reproduced.")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE", dest="global_plugins",
                        help="import MODULE first: it registers loss terms, scores, ... (repeatable; also "
                             "$KDREPRO_PLUGINS and the kdrepro.plugins entry points of installed packages)")
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--results", default=None, metavar="DIR",
                        help="results folder holding runs/ and cache/ (default: $KDREPRO_RESULTS or ./results)")

    p = sub.add_parser("train", parents=[common], help="train a run (or return it if already finished)",
                       description="Train one run: a teacher or vanilla student (method: ce), a KD student "
                                   "(kd) or an SLKD student (slkd). Prints the plan first (which runs, the teacher "
                                   "included, how many epochs, where). A finished run is returned from the store "
                                   "without training; an unfinished one resumes from its last epoch. A student's "
                                   "teacher is trained first when it is not in the store; its epochs and recipe "
                                   "are the student's unless teacher.* sets them. Keys: see kdrepro/config.py and "
                                   "docs/config-reference.md (losses.<term>.<param>, curriculum.<key>, lr, epochs, ...).")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file of run-config keys")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key; repeatable; dotted keys reach nested sections "
                        "(teacher.model=resnet32, losses.kd.T=4, curriculum.order=hard_first)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the config's, auto)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the resolved config, train nothing")
    p.add_argument("--metrics-writer", action="append", default=[], choices=("csv", "tensorboard"),
                   help="also write the metrics to the run's folder: csv (metrics.csv) or tensorboard (tensorboard/, "
                        "needs pip install 'kdrepro[tensorboard]'); repeatable; same as --set metrics_writers=[...]")
    p.add_argument("--log-every", type=int, default=None, metavar="N",
                   help="without a progress bar (output not a terminal): a plain progress line every N epochs "
                        "(default: about 20 a run); same as --set log_every=N")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE", dest="plugins",
                   help="import MODULE first: it registers loss terms, scores, ... (repeatable)")
    p.add_argument("--wait", type=_seconds, default=WAIT, metavar="SECONDS",
                   help="how long to wait for a run (or its teacher) that another process is training "
                        f"(default {WAIT / 86400:.0f} days)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("download", help="download a data set (cifar10, cifar100, svhn, cinic10, cifar10-5k)",
                       description="Download a data set and check that both splits load. Files go under --root, "
                                   "else $KDREPRO_DATA, else ./data. cifar10-5k is built from a CIFAR-10 download.")
    p.add_argument("name", help="data set name")
    p.add_argument("--root", default=None, help="folder to download into")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("runs", parents=[common], help="list the runs in the store with their status",
                       description="List every run in the store: id, status (finished, partial, running, new, "
                                   "bad; for a run submitted by kdrepro reproduce --executor: pending, running, "
                                   "failed or unknown, with its job and log), epochs done, last- and best-epoch test top-1, and what differs from its "
                                   "method's preset. A run with damaged files is listed as bad, with the file.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("show", parents=[common], help="show one run's config and summary",
                       description="Print a run's resolved configuration and summary as JSON.")
    p.add_argument("run", help="run id, unique id prefix, former id, or run folder")
    p.add_argument("--metrics", action="store_true", help="include the per-epoch metrics")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("migrate", parents=[common], help="upgrade a run store to the current run ids",
                       description="Move every run folder of a store written by an earlier kdrepro to its current "
                                   "run id, after checking that the converted config computes the same run; "
                                   "nothing is retrained. Old ids keep working (runs/migrations.jsonl).")
    p.add_argument("--dry-run", action="store_true", help="say what would move, move nothing")
    p.add_argument("--data-root", default=None, metavar="DIR", help="where the runs' data sets are")
    p.add_argument("--strict", action="store_true", help="exit 1 when a run was skipped")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("export", parents=[common], help="copy finished runs' records into another results folder",
                       description="Copy the record of every finished run of --results (or of the runs named) into "
                                   "the store at --to: config.json, summary.json, metrics.jsonl, curriculum/ and "
                                   "scores/; never checkpoints, snapshots or caches. Unfinished runs are skipped. A "
                                   "run already at --to with the same record is left alone; one with another record "
                                   "of the same id is refused (exit 1) unless --replace. Each run is copied beside "
                                   "its place and renamed into it, so an interrupted export leaves no half-copied run.")
    p.add_argument("runs", nargs="*", metavar="RUN", help="run ids or unique prefixes (default: every run)")
    p.add_argument("--to", required=True, metavar="DIR", help="the results folder to copy into (e.g. a repository's results/)")
    p.add_argument("--teacher-weights", action="store_true",
                   help="also copy weights.pt of every exported run that a run of either store (finished "
                        "or not) is distilled from: its students can only be reproduced with those exact bits")
    p.add_argument("--weights", action="store_true", help="also copy weights.pt of every exported run")
    p.add_argument("--replace", action="store_true", help="overwrite a run at --to whose record differs")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("reproduce", help="run a profile's notebooks headless (same as python -m kdrepro.reproduce)",
                       description=reproduce_args.DESCRIPTION)
    reproduce_args.add_arguments(p)
    p.set_defaults(func=cmd_reproduce)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from .data import CorruptDatasetError, DatasetNotFoundError
    from .engine import CheckpointError, DataChangedError, TrainingDiverged
    from .experiments import ProfileError
    from .executors import RunsFailedError
    from .models import CheckpointFileError
    from .plugins import PluginError
    from .reproduce import ReproduceError
    from .rundir import RunFileError
    from .runs import LockLostError, RunLockedError

    return (UserError, FileNotFoundError, RunFileError, DataChangedError, CheckpointError, TrainingDiverged,
            RunLockedError, LockLostError, DatasetNotFoundError, CorruptDatasetError, ProfileError, RunsFailedError,
            ReproduceError, CheckpointFileError, PluginError, OSError)


def _bug_report(err: BaseException) -> str:
    """Write the traceback to a log file; return its path."""
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    path = Path(tempfile.gettempdir()) / f"kdrepro-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        path.write_text(f"kdrepro {' '.join(sys.argv[1:])}\n\n{text}")
        return str(path)
    except OSError:
        return "(could not write a log file; run again with --debug)"


#: the longest error message printed (a value inside a message is already cut short; this bounds the rest)
MAX_MESSAGE = 2000


def _cut(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + " ... (cut)"


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = parser.parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    try:
        from .plugins import use_plugins

        use_plugins([*args.global_plugins, *getattr(args, "plugins", [])])
        return args.func(args)
    except ConfigError as err:
        print(_cut(f"kdrepro: configuration error: {err}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kdrepro: interrupted; a run resumes from its last finished epoch", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kdrepro runs | head`: the reader went away
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except Exception as err:
        from .experiments import ProfileError

        if isinstance(err, ProfileError):  # a bad profile is a bad configuration
            print(_cut(f"kdrepro: configuration error: {err}"), file=sys.stderr)
            return 2
        if isinstance(err, _user_errors()):
            message = str(err).strip().replace("\n", "\n  ")
            if isinstance(err, OSError) and not isinstance(err, FileNotFoundError) and err.filename:
                from .rundir import _fs_problem

                message = f"{err.filename}: {_fs_problem(err)}"
            print(_cut(f"kdrepro: error: {message}"), file=sys.stderr)
            return 1
        if args.debug:
            traceback.print_exc()
        else:
            log = _bug_report(err)
            first = str(err).splitlines()[0][:200] if str(err) else ""
            print(f"kdrepro: unexpected error ({type(err).__name__}: {first}); "
                  f"this is probably a bug. The full report: {log} (or run again with --debug)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
