"""Does bf16 autocast on the CPU change accuracy? Paired by seed, from the run store (issue 12).

For every committed float32 vanilla (CE) run of the ``cpu`` profile's student (resnet8 on cifar10-5k, 20 or
60 epochs) whose bf16 twin (the same config with ``bf16: true``, trained with ``kdrepro train --set
bf16=true ...``) is in the store, the last-epoch test top-1 of both, their per-seed difference, and per budget
the mean ± sample std of the differences and the float32 runs' own seed spread. Writes
``results/benchmarks/bf16_accuracy.{csv,md}``.

    python benchmarks/bf16_accuracy.py [--results results]
"""
from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import kdrepro  # noqa: F401
from kdrepro.runs import RunStore

REPO = Path(__file__).resolve().parent.parent


def pairs(store: RunStore) -> list[dict]:
    rows = []
    for r in store.list():
        if r["status"] != "finished" or r["method"] != "ce" or r["dataset"] != "cifar10-5k" or r["model"] != "resnet8":
            continue
        cfg = store.load(r["run_id"]).config
        if cfg.bf16 or cfg.epochs not in (20, 60):
            continue
        twin = cfg.with_overrides(bf16=True)
        if store.status(twin) != "finished":
            continue
        a, b = store.load(r["run_id"]).summary, store.load(twin.run_id).summary
        rows.append({"epochs": cfg.epochs, "seed": cfg.seed, "fp32_last": a["last_top1"], "bf16_last": b["last_top1"],
                     "diff": b["last_top1"] - a["last_top1"], "fp32_wall_s": a["wall_seconds"],
                     "bf16_wall_s": b["wall_seconds"], "fp32_run": r["run_id"], "bf16_run": twin.run_id})
    return sorted(rows, key=lambda r: (r["epochs"], r["seed"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(REPO / "results"))
    args = parser.parse_args()
    rows = pairs(RunStore(args.results))
    out = REPO / "results" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "bf16_accuracy.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["epochs"])
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| epochs | seed | float32 last (%) | bf16 last (%) | bf16 − float32 |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['epochs']} | {r['seed']} | {r['fp32_last']:.2f} | {r['bf16_last']:.2f} | {r['diff']:+.2f} |"
              for r in rows]
    summary = ["", "| epochs | seeds | bf16 − float32 (mean ± std) | bf16 ahead | float32 seed std |",
               "|---:|---:|---:|---:|---:|"]
    for e in sorted({r["epochs"] for r in rows}):
        d = [r["diff"] for r in rows if r["epochs"] == e]
        f = [r["fp32_last"] for r in rows if r["epochs"] == e]
        summary.append(f"| {e} | {len(d)} | {statistics.mean(d):+.2f} ± {statistics.stdev(d) if len(d) > 1 else 0:.2f} | "
                       f"{sum(x > 0 for x in d)}/{len(d)} | {statistics.stdev(f) if len(f) > 1 else 0:.2f} |")
    text = ("bf16 autocast on the CPU against float32: vanilla resnet8 on cifar10-5k (the cpu profile's student), "
            "last-epoch test top-1, paired by seed (`python benchmarks/bf16_accuracy.py`)\n\n"
            + "\n".join(lines + summary) + "\n")
    (out / "bf16_accuracy.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
