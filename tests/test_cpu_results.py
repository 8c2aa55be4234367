"""The committed real-image results (profile ``cpu``, issue 6) agree with the committed runs.

The tables in ``results/cpu/tables`` are recomputed here from the runs' own ``summary.json`` and
``config.json`` with the standard library (``statistics``), independently of ``kdrepro.report``: a table
edited by hand, or left behind after a run changed, fails.
"""
from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from kdrepro import experiments

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "results" / "runs"
TABLES = ROOT / "results" / "cpu" / "tables"

pytestmark = pytest.mark.skipif(not (TABLES / "03_main_table.csv").exists(), reason="no committed cpu results")


def _committed_runs() -> list[tuple[dict, dict]]:
    """Committed float32 cifar10-5k runs of this profile's kind: no teacher, or its teacher (resnet20 trained
    for 60 epochs; kdrepro/profiles/cpu.yaml). The cpu300 profile's students at 20 and 60 epochs (wrn_16_2
    teacher) share the data set and budgets, and must not be counted here."""
    out = []
    for d in sorted(RUNS.glob("*-cifar10-5k-*")):
        if not (d / "summary.json").exists():
            continue
        config = json.loads((d / "config.json").read_text())
        teacher = config.get("teacher")
        if config.get("bf16") or (teacher and (teacher["model"], teacher["epochs"]) != ("resnet20", 60)):
            continue
        out.append((config, json.loads((d / "summary.json").read_text())))
    return out


def _csv(name: str) -> list[dict]:
    with open(TABLES / f"{name}.csv", newline="") as f:
        return list(csv.DictReader(f))


def _w(c: dict, term: str) -> float:
    """The weight of a loss term in a stored (schema 2) config; 0 when the term is absent."""
    return (c["losses"].get(term) or {}).get("weight", 0.0)


def _cur(c: dict, key: str):
    return (c["curriculum"] or {}).get(key)


def _is_default_slkd(c: dict) -> bool:
    return (_cur(c, "score"), _cur(c, "order"), _cur(c, "pacing"), _w(c, "mse")) == \
        ("max_logit", "easy_first", "authors", 0.05)


def _last(runs, pick) -> dict[int, float]:
    """seed -> last-epoch top-1 of the finished runs whose config satisfies ``pick``."""
    return {s["seed"]: s["last_top1"] for c, s in runs if s.get("finished") and pick(c)}


def test_every_run_of_the_cpu_profile_is_committed_and_finished():
    exp = experiments.Experiment("cpu", results_dir=ROOT / "results")
    configs = exp.all_configs()
    assert len(configs) == 36
    missing = [c.run_id for c in configs if not (RUNS / c.run_id / "summary.json").exists()]
    assert not missing, f"cpu runs not in the store: {missing}"
    for c in configs:
        summary = json.loads((RUNS / c.run_id / "summary.json").read_text())
        assert summary["finished"] and summary["epochs"] == c.epochs
        assert len((RUNS / c.run_id / "metrics.jsonl").read_text().splitlines()) == c.epochs


def test_main_table_is_the_mean_and_sample_std_of_the_committed_runs():
    runs = _committed_runs()
    student = lambda c: c["model"] == "resnet8" and c["epochs"] == 20  # noqa: E731
    kd_only = lambda c: _w(c, "fitnet") == 0 and _w(c, "at") == 0  # noqa: E731
    expected = {
        "vanilla": _last(runs, lambda c: student(c) and c["method"] == "ce"),
        "kd": _last(runs, lambda c: student(c) and c["method"] == "kd" and kd_only(c)),
        "slkd": _last(runs, lambda c: student(c) and c["method"] == "slkd" and _is_default_slkd(c)),
    }
    rows = {r["method"]: r for r in _csv("03_main_table")}
    for method, by_seed in expected.items():
        assert sorted(by_seed) == [0, 1, 2], method
        values = list(by_seed.values())
        assert float(rows[method]["last_mean"]) == pytest.approx(statistics.mean(values), abs=1e-9)
        assert float(rows[method]["last_std"]) == pytest.approx(statistics.stdev(values), abs=1e-9)
        assert int(rows[method]["seeds"]) == 3


def test_ordering_ablation_is_paired_by_seed_from_the_committed_runs():
    runs = _committed_runs()
    by_order = {o: _last(runs, lambda c, o=o: c["method"] == "slkd" and c["epochs"] == 20 and _cur(c, "order") == o
                         and _cur(c, "score") == "max_logit" and _cur(c, "pacing") == "authors" and _w(c, "mse") == 0.05)
                for o in ("easy_first", "hard_first", "random")}
    rows = {r["variant"]: r for r in _csv("04_order_paired")}
    for variant in ("hard_first", "random"):
        diffs = [by_order[variant][s] - by_order["easy_first"][s] for s in (0, 1, 2)]
        assert float(rows[variant]["diff_mean"]) == pytest.approx(statistics.mean(diffs), abs=1e-9)
        assert float(rows[variant]["diff_std"]) == pytest.approx(statistics.stdev(diffs), abs=1e-9)
        assert int(rows[variant]["wins"]) == sum(d > 0 for d in diffs)


def test_budget_comparison_is_paired_by_seed_from_the_committed_runs():
    runs = _committed_runs()
    rows = [r for r in _csv("05_budget_paired") if (r["a"], r["b"]) == ("slkd", "kd")]
    assert sorted(int(r["epochs"]) for r in rows) == [20, 60]
    for r in rows:
        epochs = int(r["epochs"])
        slkd = _last(runs, lambda c: c["method"] == "slkd" and c["epochs"] == epochs and _is_default_slkd(c))
        kd = _last(runs, lambda c: c["method"] == "kd" and c["epochs"] == epochs and _w(c, "fitnet") == 0
                   and _w(c, "at") == 0)
        diffs = [slkd[s] - kd[s] for s in (0, 1, 2)]
        assert float(r["diff_mean"]) == pytest.approx(statistics.mean(diffs), abs=1e-9)
        assert float(r["diff_std"]) == pytest.approx(statistics.stdev(diffs), abs=1e-9)


def test_the_bf16_comparison_is_recomputed_from_the_committed_runs():
    """results/benchmarks/bf16_accuracy.csv: each bf16 run's float32 twin is the same config but bf16, and the
    differences are those of the committed summaries."""
    path = ROOT / "results" / "benchmarks" / "bf16_accuracy.csv"
    if not path.exists():
        pytest.skip("no bf16 comparison committed")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    for r in rows:
        a = json.loads((RUNS / r["fp32_run"] / "config.json").read_text())
        b = json.loads((RUNS / r["bf16_run"] / "config.json").read_text())
        assert a["bf16"] is False and b["bf16"] is True
        runtime = {"bf16", "progress", "device", "num_threads", "teacher_cache", "compile", "channels_last", "data_root"}
        assert {k: v for k, v in a.items() if k not in runtime} == {k: v for k, v in b.items() if k not in runtime}
        sa = json.loads((RUNS / r["fp32_run"] / "summary.json").read_text())["last_top1"]
        sb = json.loads((RUNS / r["bf16_run"] / "summary.json").read_text())["last_top1"]
        assert float(r["diff"]) == pytest.approx(sb - sa, abs=1e-9)
