"""Do two devices compute the same runs? Compares the runs that two run stores share, run id by run id.

A run id does not include the device (``device`` is a runtime field), so the same config trained on a CPU
and on a GPU has the same id in two stores. This script reads both records and reports, per run:

* per metric of ``metrics.jsonl`` (training losses, accuracies, pool size, steps), the largest relative
  difference over all epochs, and the epoch-1 training CE of each;
* per curriculum phase (``curriculum/phase<k>.pt``), whether the two pools hold the same images in the same
  order, and the largest absolute difference of the snapshot's scores;
* the last-epoch test top-1 of each and their difference.

Used for the ``cpu300`` profile (docs/results-cpu300.md, "Where each run was trained"), with records committed under
``results/benchmarks/device_equivalence/``:

1. the method, with the weights held almost still (lr 1e-6, so that arithmetic differences cannot grow):
   the same two short configs trained on each device, e.g. on the CPU and then on the GPU::

       kdrepro train --results S --config <a cpu300 KD config> --set epochs=2 --set lr=1e-6 \\
           --set teacher_cache=false --device cpu            # and --device cuda, into another store
       kdrepro train --results S --config <a cpu300 SLKD config> --set epochs=10 --set lr=1e-6 \\
           --set teacher_cache=false --device cpu

   and then ``python benchmarks/device_equivalence.py STORE_CPU/runs STORE_CUDA/runs``;
2. the real recipe: cpu300 runs trained on the GPU, trained again on a CPU from the same config
   (``kdrepro train --config results/runs/<id>/config.json --device cpu``), compared with the committed run.

    python benchmarks/device_equivalence.py RUNS_A RUNS_B [--runs ID ...] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import kdrepro  # noqa: F401  (before torch)
import torch
from kdrepro.rundir import RunDir

METRICS = ("train_ce", "train_kd", "train_mse", "train_loss", "train_top1", "test_top1", "test_top5", "pool_size",
           "iterations")


def _device(run: Path) -> str:
    env = RunDir(run).read_summary().get("environment", {})
    return env.get("device_name") or env.get("device") or "not recorded"


def compare_run(a: Path, b: Path) -> dict:
    """The differences between two records of one run id (see the module docstring)."""
    ma, mb = RunDir(a).read_metrics(), RunDir(b).read_metrics()
    if len(ma) != len(mb):
        raise ValueError(f"{a.name}: {len(ma)} epochs in {a.parent}, {len(mb)} in {b.parent}")
    rel = {}
    for x, y in zip(ma, mb):
        for key in METRICS:
            if x.get(key) is None or y.get(key) is None:
                continue
            rel[key] = max(rel.get(key, 0.0), abs(x[key] - y[key]) / max(abs(x[key]), 1e-12))
    phases = []
    for pa in sorted((a / "curriculum").glob("phase*.pt")):
        pb = b / "curriculum" / pa.name
        if not pb.exists():
            raise ValueError(f"{a.name}: {pa.name} is in {a.parent} but not in {b.parent}")
        da, db = RunDir(a).load(pa), RunDir(b).load(pb)
        phases.append({"phase": pa.stem, "same_pool": torch.equal(da["pool"], db["pool"]),
                       "score_max_abs_diff": (da["scores"].double() - db["scores"].double()).abs().max().item()})
    return {"run_id": a.name, "device_a": _device(a), "device_b": _device(b), "epochs": len(ma),
            "max_rel_diff": rel, "first_train_ce": (ma[0].get("train_ce"), mb[0].get("train_ce")),
            "last_test_top1": (ma[-1]["test_top1"], mb[-1]["test_top1"]), "phases": phases}


def shared_runs(runs_a: Path, runs_b: Path, ids: list[str] | None = None) -> list[str]:
    """Run ids finished in both stores (students only: a teacher copied into both is the same file)."""
    def finished(d: Path) -> bool:
        return RunDir(d).read_summary().get("finished", False)

    names = ids or sorted(d.name for d in runs_a.iterdir() if d.is_dir() and not d.name.startswith(("ce-", ".")))
    missing = [n for n in names if not (finished(runs_a / n) and finished(runs_b / n))]
    if ids and missing:
        raise ValueError(f"not finished in both stores: {missing}")
    return [n for n in names if n not in missing]


def report(rows: list[dict]) -> str:
    lines = ["| run | device A | device B | epochs | epoch-1 train CE (A, B) | largest relative difference over "
             "epochs | curriculum pools | largest score difference | last test top-1 A, B (B − A) |",
             "|:---|:---|:---|---:|:---|:---|:---|---:|:---|"]
    for r in rows:
        rel = ", ".join(f"{k} {v:.1e}" for k, v in r["max_rel_diff"].items()
                        if k in ("train_ce", "train_loss", "test_top1"))
        pools = (f"{sum(p['same_pool'] for p in r['phases'])} of {len(r['phases'])} identical"
                 if r["phases"] else "—")
        score = f"{max(p['score_max_abs_diff'] for p in r['phases']):.1e}" if r["phases"] else "—"
        ce = ", ".join(f"{v:.6f}" for v in r["first_train_ce"])
        ta, tb = r["last_test_top1"]
        lines.append(f"| `{r['run_id']}` | {r['device_a']} | {r['device_b']} | {r['epochs']} | {ce} | {rel} | {pools} "
                     f"| {score} | {ta:.2f}, {tb:.2f} ({tb - ta:+.2f}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs_a", type=Path, help="a runs/ folder")
    ap.add_argument("runs_b", type=Path, help="another runs/ folder")
    ap.add_argument("--runs", nargs="*", help="run ids to compare (default: every student finished in both)")
    ap.add_argument("--out", type=Path, help="also write the Markdown table to this file")
    args = ap.parse_args(argv)
    for d in (args.runs_a, args.runs_b):
        if not d.is_dir():
            ap.error(f"{d} is not a folder of runs (a results folder's runs/)")
    ids = shared_runs(args.runs_a, args.runs_b, args.runs)
    if not ids:
        ap.error(f"no finished run is in both {args.runs_a} and {args.runs_b}")
    text = report([compare_run(args.runs_a / i, args.runs_b / i) for i in ids])
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
