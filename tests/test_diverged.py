"""A run whose loss turns non-finite is a result: recorded as finished and flagged ``diverged``, with the
epoch it diverged in and the epochs it completed, never averaged with finished runs (docs/run-store.md)."""
from __future__ import annotations

import json
import math

import pytest
import yaml

from kdrepro import cli, experiments, report
from kdrepro.config import RunConfig
from kdrepro.experiments import Experiment, run_row
from kdrepro.runs import RunStore

BASE = dict(dataset="digits", model="resnet8", method="ce", epochs=3, batch_size=128, crop_padding=1, hflip=False,
            num_threads=1, progress=False)
#: epoch 1 at lr 0.1, then lr 1e6 from epoch 2 on: the loss is NaN in epoch 2
BOOM = dict(lr=0.1, milestones=[1], gamma=1e7)


def _cfg(**kw) -> RunConfig:
    return RunConfig.from_dict({**BASE, **kw})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return RunStore(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def diverged(store):
    return store.run(_cfg(**BOOM), log=lambda m: None)


def test_a_diverged_run_is_recorded_finished_with_its_epoch_and_no_accuracy(store, diverged):
    d = diverged.run_dir
    summary = json.loads((d / "summary.json").read_text())
    assert summary["finished"] is True and summary["flags"] == ["diverged"]
    assert summary["diverged"]["epoch"] == 2 and summary["diverged"]["where"] == "epoch 2"
    assert "non-finite loss" in summary["diverged"]["message"]
    assert summary["epochs"] == 1  # the epochs it completed
    assert summary["last_top1"] is None and summary["best_top1"] is None and summary["best_epoch"] is None
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1] and math.isfinite(rows[0]["test_top1"])  # epoch 1 is kept
    assert not (d / "weights.pt").exists()  # no model to use
    assert store.status(d) == "finished"
    # the store reads it back (its folder checks accept a diverged record) and lists it with the flag
    assert store.load(d.name).summary["diverged"]["epoch"] == 2
    row = next(r for r in store.list() if r["run_id"] == d.name)
    assert row["status"] == "finished" and row["flags"] == ["diverged"] and row["epochs"] == "1/3"


def test_resuming_does_not_train_a_diverged_run_again(store, diverged):
    before = {p.name: p.stat().st_mtime_ns for p in diverged.run_dir.iterdir() if p.is_file()}
    logged = []
    again = store.run(_cfg(**BOOM), log=logged.append)
    assert again.summary == diverged.summary and logged == []
    assert {p.name: p.stat().st_mtime_ns for p in diverged.run_dir.iterdir() if p.is_file()} == before


def test_a_damaged_diverged_record_is_refused(tmp_path):
    store = RunStore(tmp_path)
    d = store.run(_cfg(**BOOM), log=lambda m: None).run_dir
    summary = json.loads((d / "summary.json").read_text())
    (d / "summary.json").write_text(json.dumps({**summary, "last_top1": 50.0}))
    with pytest.raises(Exception, match="gives an accuracy for a run that diverged"):
        store.load(d.name)
    (d / "summary.json").write_text(json.dumps({**summary, "diverged": {**summary["diverged"], "epoch": 3}}))
    with pytest.raises(Exception, match="not epochs 1..2"):
        store.load(d.name)


def test_kdrepro_train_says_the_run_diverged_and_exits_4(store, diverged, capsys):
    sets = [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in {**BASE, **BOOM}.items()]
    code = cli.main(["train", "--results", str(store.root), *[a for s in sets for a in ("--set", s)]])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_DIVERGED == 4
    assert "diverged in epoch 2, no accuracy" in out
    assert f"run {diverged.run_id} diverged in epoch 2" in err and "not trained again" in err


def test_tables_leave_a_diverged_run_out_of_the_mean_and_say_so(store, diverged):
    finished = store.run(_cfg(seed=1, epochs=1), log=lambda m: None)
    labels = dict(dataset="digits", teacher="-", student="resnet8", method="vanilla", model="resnet8", variant="")
    runs = pd_frame([run_row(diverged, {**labels, "seed": 0}), run_row(finished, {**labels, "seed": 1})])
    summary = report.summarize(runs, ["dataset", "method"])
    assert summary.loc[0, "seeds"] == 1 and summary.loc[0, "diverged"] == 1
    assert summary.loc[0, "last_mean"] == finished.summary["last_top1"]  # the finished run alone, not NaN
    shown = report.format_summary(summary, ["dataset", "method"])
    assert shown.loc[0, "diverged"] == "1 of 2: epoch 2 (seed 0)"
    assert shown.loc[0, "top-1 last (%)"] == f"{finished.summary['last_top1']:.2f}"


def pd_frame(rows):
    import pandas as pd

    return pd.DataFrame(rows, columns=experiments._columns(rows))


def test_a_study_with_a_diverging_method_completes_and_its_table_marks_it(tmp_path):
    profile = {
        "name": "boom", "description": "a study with a method that diverges", "hardware": "CPU",
        "expected_time": "a minute", "datasets": ["digits"], "seeds": [0, 1],
        "base": {"recipe": "slkd", "epochs": 3, "batch_size": 128, "crop_padding": 1, "hflip": False,
                 "num_threads": 1, "progress": False},
        "pairs": [{"teacher": {"model": "resnet8"}, "student": "resnet8"}],
        "budgets": [3],
        "kd_baselines": {"boom": {"losses": {"kd": {"weight": 1.0}}, **BOOM}},
    }
    path = tmp_path / "boom.yaml"
    path.write_text(yaml.safe_dump(profile))
    exp = Experiment(experiments.load_profile(path), results_dir=tmp_path / "results")
    runs = exp.kd_baselines()
    boom = runs[runs["method"] == "boom"]
    assert list(boom["diverged"]) == ["epoch 2", "epoch 2"] and boom["last_top1"].isna().all()
    assert runs[runs["method"] != "boom"]["last_top1"].notna().all()
    shown = report.format_summary(report.summarize(runs, ["dataset", "method"]), ["dataset", "method"])
    row = shown[shown["method"] == "boom"].iloc[0]
    assert row["diverged"] == "2 of 2: epoch 2 (seeds 0, 1)" and row["seeds"] == 0
    assert row["top-1 last (%)"] == "—"
    others = shown[shown["method"] != "boom"]
    assert (others["seeds"] == 2).all() and (others["diverged"] == "").all()
    assert all("±" in v for v in others["top-1 last (%)"])
    fig = report.plot_methods(report.summarize(runs, ["dataset", "teacher", "student", "method"]), runs)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "2 diverged: epoch 2 (seeds 0, 1)" in texts


def test_the_hypothesis_tests_leave_a_diverged_run_out():
    """A diverged run (NaN top-1) in an arm: the tests equal those of the table without that run."""
    import numpy as np
    import pandas as pd

    from kdrepro.hypotheses import evaluate_hypotheses

    rng = np.random.default_rng(0)
    rows = [{"axis": axis, "variant": variant, "seed": s, "device": "CPU: x", "last_top1": 90 + rng.normal()}
            for axis, variant in (("order", "easy_first"), ("reference", "")) for s in range(4)]
    runs = pd.DataFrame(rows)
    without = evaluate_hypotheses(runs.drop(index=7))
    runs.loc[7, "last_top1"] = np.nan  # the KD run of seed 3 diverged
    with_nan = evaluate_hypotheses(runs)
    assert with_nan.loc[0, "seeds_second"] == 3 and with_nan.loc[0, "paired_n"] == 3
    assert with_nan.loc[0, "p"] == without.loc[0, "p"] and not math.isnan(with_nan.loc[0, "p"])
