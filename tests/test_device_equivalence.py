"""benchmarks/device_equivalence.py on hand-made records, and the committed CPU/GPU evidence behind the README's
"Where each run was trained" (results/benchmarks/device_equivalence/), read independently of the script."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EVIDENCE = ROOT / "results" / "benchmarks" / "device_equivalence"
spec = importlib.util.spec_from_file_location("device_equivalence", ROOT / "benchmarks" / "device_equivalence.py")
deq = importlib.util.module_from_spec(spec)
spec.loader.exec_module(deq)


def _run(root: Path, run_id: str, metrics: list[dict], phases: list[dict] | None = None, device="cpu",
         finished=True) -> Path:
    d = root / run_id
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (d / "summary.json").write_text(json.dumps({"finished": finished, "environment": {"device_name": device}}))
    for k, p in enumerate(phases or [], 1):
        (d / "curriculum").mkdir(exist_ok=True)
        torch.save(p, d / "curriculum" / f"phase{k}.pt")
    return d


def test_compare_run_reports_hand_worked_differences(tmp_path):
    a = _run(tmp_path / "a", "slkd-x", [{"train_ce": 2.0, "test_top1": 50.0}, {"train_ce": 1.0, "test_top1": 60.0}],
             [{"pool": torch.tensor([3, 1, 2]), "scores": torch.tensor([0.5, 1.0, 2.0])}], device="CPU X")
    b = _run(tmp_path / "b", "slkd-x", [{"train_ce": 2.1, "test_top1": 50.0}, {"train_ce": 1.0, "test_top1": 63.0}],
             [{"pool": torch.tensor([1, 3, 2]), "scores": torch.tensor([0.5, 1.25, 2.0])}], device="GPU Y")
    r = deq.compare_run(a, b)
    assert r["max_rel_diff"]["train_ce"] == pytest.approx(0.05)       # |2.1 - 2.0| / 2.0
    assert r["max_rel_diff"]["test_top1"] == pytest.approx(0.05)      # |63 - 60| / 60
    assert r["phases"] == [{"phase": "phase1", "same_pool": False, "score_max_abs_diff": pytest.approx(0.25)}]
    assert r["first_train_ce"] == (2.0, 2.1) and r["last_test_top1"] == (60.0, 63.0)
    assert (r["device_a"], r["device_b"]) == ("CPU X", "GPU Y")
    row = deq.report([r]).splitlines()[-1]
    assert "0 of 1 identical" in row and "60.00, 63.00 (+3.00)" in row


def test_shared_runs_skips_teachers_and_unfinished_runs_and_names_what_is_missing(tmp_path):
    for store in ("a", "b"):
        _run(tmp_path / store, "ce-teacher", [{"train_ce": 1.0}])
        _run(tmp_path / store, "kd-done", [{"train_ce": 1.0}])
    _run(tmp_path / "a", "kd-half", [{"train_ce": 1.0}])
    _run(tmp_path / "b", "kd-half", [{"train_ce": 1.0}], finished=False)
    assert deq.shared_runs(tmp_path / "a", tmp_path / "b") == ["kd-done"]
    with pytest.raises(ValueError, match="kd-half"):
        deq.shared_runs(tmp_path / "a", tmp_path / "b", ["kd-done", "kd-half"])


def test_records_of_different_lengths_are_refused(tmp_path):
    a = _run(tmp_path / "a", "kd-x", [{"train_ce": 1.0}] * 2)
    b = _run(tmp_path / "b", "kd-x", [{"train_ce": 1.0}] * 3)
    with pytest.raises(ValueError, match="2 epochs"):
        deq.compare_run(a, b)


@pytest.mark.skipif(not EVIDENCE.exists(), reason="no committed device evidence")
def test_committed_evidence_cpu_and_gpu_compute_the_same_method_with_the_weights_held_still():
    """README: with lr 1e-6, the H200 and the CPU give the same losses to about 1e-7 and the same five SLKD
    pools. Read here with json and torch alone."""
    cpu, cuda = EVIDENCE / "lr1e-6" / "cpu", EVIDENCE / "lr1e-6" / "cuda"
    runs = sorted(d.name for d in cpu.iterdir())
    assert runs == sorted(d.name for d in cuda.iterdir()) and len(runs) == 2
    pools = 0
    for run in runs:
        for d, want in ((cpu / run, "cpu"), (cuda / run, "cuda")):
            assert json.loads((d / "summary.json").read_text())["environment"]["device"].startswith(want)
        for x, y in zip(*[[json.loads(line) for line in (d / run / "metrics.jsonl").read_text().splitlines()]
                          for d in (cpu, cuda)]):
            assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-6)
            assert x["test_top1"] == y["test_top1"]
        for p in sorted((cpu / run / "curriculum").glob("*.pt")) if (cpu / run / "curriculum").exists() else []:
            a, b = (torch.load(d / run / "curriculum" / p.name, weights_only=True) for d in (cpu, cuda))
            assert torch.equal(a["pool"], b["pool"]), p.name
            pools += 1
    assert pools == 5
