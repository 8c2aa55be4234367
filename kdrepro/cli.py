"""The ``kdrepro`` command line: ``train``, ``runs``, ``show`` and ``download``.

Examples::

    kdrepro train --config my_run.yaml --set epochs=30 --set teacher.model=resnet32
    kdrepro runs
    kdrepro show slkd-digits-resnet8-s0
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import ConfigError, RunConfig, merge, parse_overrides


def _load_config_file(path: str) -> dict:
    import yaml

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML/JSON: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of run-config keys")
    return data


def build_config(config_file: str | None, sets: list[str]) -> RunConfig:
    data = _load_config_file(config_file) if config_file else {}
    data = merge(data, parse_overrides(sets or []))
    return RunConfig.from_dict(data).resolved()


def cmd_train(args) -> int:
    from .runs import RunStore

    cfg = build_config(args.config, args.set)
    if args.device:
        cfg = cfg.with_overrides(device=args.device).resolved()
    store = RunStore(args.results)
    before = store.status(cfg)
    if args.dry_run:
        print(json.dumps({"run_id": cfg.run_id, "status": before, "config": cfg.to_dict()}, indent=2))
        return 0
    result = store.run(cfg)
    s = result.summary
    verb = "found finished" if before == "finished" else ("resumed and finished" if before == "partial" else "trained")
    print(f"{verb} {result.run_id} in {result.run_dir}")
    print(f"  test top-1: last {s['last_top1']:.2f}  best {s['best_top1']:.2f} (epoch {s['best_epoch']})  "
          f"epochs {s['epochs']}  iterations {s['iterations']}  wall {s['wall_seconds']:.1f}s")
    return 0


def cmd_runs(args) -> int:
    from .runs import RunStore

    rows = RunStore(args.results).list()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no runs in {RunStore(args.results).runs_dir}")
        return 0
    header = f"{'run id':<48} {'status':<9} {'epochs':>8} {'last top-1':>10} {'best top-1':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        last = f"{r['last_top1']:.2f}" if r["last_top1"] is not None else "-"
        best = f"{r['best_top1']:.2f}" if r["best_top1"] is not None else "-"
        print(f"{r['run_id']:<48} {r['status']:<9} {r['epochs']:>8} {last:>10} {best:>10}")
    return 0


def cmd_show(args) -> int:
    from .runs import RunStore

    store = RunStore(args.results)
    result = store.load(args.run)
    out = {"run_id": result.run_id, "status": store.status(result.run_dir), "run_dir": str(result.run_dir),
           "config": result.config.to_dict(), "summary": result.summary}
    if args.metrics:
        out["metrics"] = result.metrics()
    print(json.dumps(out, indent=2))
    return 0


def cmd_download(args) -> int:
    from .data import load_dataset

    for split in (True, False):
        ds = load_dataset(args.name, root=args.root, train=split, download=True)
        print(f"{args.name} {'train' if split else 'test'}: {len(ds)} images of shape {ds.image_shape}, "
              f"{ds.num_classes} classes")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdrepro",
        description="kdrepro: knowledge distillation via instance-level sequence learning (SLKD), reproduced.")
    sub = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--results", default=None, metavar="DIR",
                        help="results folder holding runs/ and cache/ (default: $KDREPRO_RESULTS or ./results)")

    p = sub.add_parser("train", parents=[common], help="train a run (or return it if already finished)",
                       description="Train one run: a teacher or vanilla student (method: ce), a KD student "
                                   "(kd) or an SLKD student (slkd). A finished run is returned from the store "
                                   "without training; an unfinished one resumes from its last epoch. A student's "
                                   "teacher is trained first when it is not in the store.")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file of run-config keys (see kdrepro/config.py)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key; repeatable; dotted keys reach the teacher (teacher.model=resnet32)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the config's, auto)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and run id, train nothing")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("download", help="download a data set (cifar10, cifar100, svhn, cinic10, cifar10-5k)",
                       description="Download a data set and check that both splits load. Files go under --root, "
                                   "else $KDREPRO_DATA, else ./data. cifar10-5k is built from a CIFAR-10 download.")
    p.add_argument("name", help="data set name")
    p.add_argument("--root", default=None, help="folder to download into")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("runs", parents=[common], help="list the runs in the store with their status",
                       description="List every run in the store: id, status (finished, partial, new), epochs "
                                   "done, last- and best-epoch test top-1.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("show", parents=[common], help="show one run's config and summary",
                       description="Print a run's resolved configuration and summary as JSON.")
    p.add_argument("run", help="run id, unique id prefix, or run folder")
    p.add_argument("--metrics", action="store_true", help="include the per-epoch metrics")
    p.set_defaults(func=cmd_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"kdrepro: configuration error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"kdrepro: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kdrepro: interrupted; the run resumes from its last finished epoch", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
