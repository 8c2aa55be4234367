"""kdrepro.hypotheses on a hand-made ablation table: the primary (paired) test and the secondary (Welch) test
can disagree, and the table says so (the analysis plan's results page must)."""
from __future__ import annotations

import pandas as pd

import kdrepro  # noqa: F401  (the torchvision guard, before anything imports torchvision)
from kdrepro import report
from kdrepro.hypotheses import evaluate_hypotheses, verdict

# six seeds on one device kind; KD's accuracy varies widely between seeds, SLKD is KD + 1.0 (+/- 0.01) on
# each: paired, the difference is certain (support); unpaired, the seeds' spread hides it (no answer)
BASE = [60.0, 90.0, 70.0, 85.0, 65.0, 80.0]
NOISE = [0.01, -0.01, 0.0, 0.01, -0.01, 0.0]


def _runs(missing: list[str] | None = None) -> pd.DataFrame:
    rows = [{"axis": "reference", "variant": "kd (no curriculum)", "seed": s, "last_top1": b, "device": "CPU: x"}
            for s, b in enumerate(BASE)]
    rows += [{"axis": "order", "variant": "easy_first", "seed": s, "last_top1": b + 1.0 + e, "device": "CPU: x"}
             for s, (b, e) in enumerate(zip(BASE, NOISE))]
    runs = pd.DataFrame(rows)
    runs.attrs["missing"] = missing or []
    return runs


def test_a_welch_verdict_that_disagrees_with_the_primary_one_is_shown():
    out = evaluate_hypotheses(_runs(), plan="docs/analysis-plan-cpu300.md")
    assert out["hypothesis"].tolist() == ["H1"]  # the other arms have no runs
    row = out.iloc[0]
    assert row["primary"] == "paired" and row["paired_n"] == 6
    assert row["verdict"] == "support" and row["p_holm"] < 1e-6  # one hypothesis: Holm changes nothing
    assert row["welch_p"] > 0.5 and row["welch_high"] > 0.5 and row["welch_verdict"] == "no answer"
    assert verdict(row["welch_mean"], row["welch_high"], row["welch_p_holm"]) == "no answer"
    shown = report.format_hypotheses(out)
    assert shown["Welch's verdict"].tolist() == ["no answer (disagrees)"]


def test_welch_verdict_is_withheld_with_the_primary_one_while_runs_are_missing():
    out = evaluate_hypotheses(_runs(["kd seed 6 [kd-x]"]), plan="docs/analysis-plan-cpu300.md")
    assert out["verdict"].tolist() == out["welch_verdict"].tolist() == ["withheld: study incomplete"]
    assert report.format_hypotheses(out)["Welch's verdict"].tolist() == ["withheld: study incomplete"]
