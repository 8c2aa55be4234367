"""bf16 autocast on the CPU against float32: training throughput of kdrepro's engine (issue 12).

For each student (default resnet8 and resnet20) one process builds two :class:`kdrepro.engine.Trainer`s of
the same vanilla (CE) run on cifar10-5k (or random images of its shape when the file is not here), one with
``bf16: false`` and one with ``bf16: true`` (``torch.autocast("cpu", dtype=torch.bfloat16)``: convolutions
and matmuls in bf16, which AVX-512 BF16 and AMX run natively), and times ``train_epoch`` on the same pool in
``--rounds`` interleaved rounds, so that load from other jobs hits both alike. It prints and writes img/s of
each and the ratio (median over rounds). Accuracy is not measured here: a bf16 default needs a paired-seed
comparison of trained runs (docs/speed.md).

    python benchmarks/bench_bf16_cpu.py [--models resnet8 resnet20] [--steps 20] [--rounds 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import kdrepro  # noqa: F401  (the torchvision guard)
from kdrepro.config import RunConfig
from kdrepro.data import DatasetNotFoundError, load_dataset
from kdrepro.engine import Trainer
from kdrepro.sequencer import make_schedule

REPO = Path(__file__).resolve().parent.parent


def _data(tmp: Path) -> tuple[str, dict]:
    try:
        load_dataset("cifar10-5k")
        return "cifar10-5k", {}
    except DatasetNotFoundError:
        rng = np.random.default_rng(0)
        path = tmp / "random.npz"
        np.savez(path, x_train=rng.integers(0, 255, (5085, 3, 32, 32), dtype=np.uint8), y_train=np.arange(5085) % 10,
                 x_test=rng.integers(0, 255, (1017, 3, 32, 32), dtype=np.uint8), y_test=np.arange(1017) % 10)
        return "npz", {"path": str(path)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet8", "resnet20"])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round (batch 128)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "results" / "benchmarks"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset, options = _data(Path(tmp))
        for model in args.models:
            trainers = {}
            for bf16 in (False, True):
                cfg = RunConfig(method="ce", dataset=dataset, dataset_options=options, model=model, bf16=bf16,
                                device="cpu", progress=False, num_threads=args.threads)
                trainers[bf16] = Trainer(cfg, Path(tmp) / f"{model}-{bf16}", log=lambda m: None)
            phase = make_schedule(1, pacing="none")[0]
            pool = torch.randint(0, 5085, (args.steps * 128,), generator=torch.Generator().manual_seed(0))
            for t in trainers.values():  # warm-up
                t.train_epoch(pool[:3 * 128], phase, 1)
            seconds = {False: [], True: []}
            for _ in range(args.rounds):
                for bf16, t in trainers.items():
                    t0 = time.perf_counter()
                    t.train_epoch(pool, phase, 1)
                    seconds[bf16].append(time.perf_counter() - t0)
            fp32, bf = (len(pool) / statistics.median(seconds[k]) for k in (False, True))
            rows.append({"model": model, "fp32_img_s": fp32, "bf16_img_s": bf, "ratio": bf / fp32,
                         "ratios_by_round": [a / b for a, b in zip(seconds[False], seconds[True])]})
            print(f"{model}: float32 {fp32:.0f} img/s, bf16 autocast {bf:.0f} img/s, ratio {bf / fp32:.2f} "
                  f"(rounds: {', '.join(f'{r:.2f}' for r in rows[-1]['ratios_by_round'])})", flush=True)
    env = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "threads": args.threads,
           "data": dataset, "steps": args.steps, "rounds": args.rounds,
           "bf16_hardware": bool(getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")().find("AVX512") >= 0)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_bf16_cpu.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")
    lines = ["| student | float32 img/s | bf16 img/s | bf16 / float32 | rounds |", "|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['fp32_img_s']:.0f} | {r['bf16_img_s']:.0f} | {r['ratio']:.2f} | "
                     f"{', '.join(f'{x:.2f}' for x in r['ratios_by_round'])} |")
    (out / "bench_bf16_cpu.md").write_text(
        f"bf16 autocast against float32 on the CPU (kdrepro engine, vanilla CE step, batch 128, {args.threads} "
        f"thread(s), {dataset}; median of {args.rounds} interleaved rounds of {args.steps} steps; "
        f"torch {torch.__version__})\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
