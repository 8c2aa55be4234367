"""The committed 300-epoch results (profile ``cpu300``, issue 11) agree with the committed runs.

Every number of ``results/cpu300/tables`` that comes from runs is recomputed here from the runs' own
``config.json`` and ``summary.json`` with the standard library (``json``, ``csv``, ``statistics``),
independently of ``kdrepro.report``: a table edited by hand, a table left behind after a run was added or
changed, or a table that claims a run is missing when it is committed (or the reverse), fails.

The profile was trained over several sessions, on CPUs and on a GPU. Its first 61 runs (the five-seed study)
are committed and finished (checked below). It was then extended to ten seeds per ablation arm and to budgets of
80 and 100 epochs (docs/analysis-plan-cpu300.md, 60 more runs); until every one of those is committed, the
tables must say which runs they lack (checked here), and the full completeness check is an expected failure.
"""
from __future__ import annotations

import csv
import json
import re
import statistics
from pathlib import Path

import pytest

from kdrepro import experiments

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "results" / "runs"
TABLES = ROOT / "results" / "cpu300" / "tables"
PROFILE_RUNS = 121  # kdrepro/profiles/cpu300.yaml: the count its comment and docs/results-cpu300.md give
FIRST_STUDY_RUNS = 61  # the five-seed study, complete before the extension (docs/analysis-plan-cpu300.md)
# the seeds of the profile's ablation study (its `ablation_seeds` line): notebook 04 compares its runs on
# these seeds only, so its SLKD - KD row leaves out the main study's seeds 3 and 4
ABLATION_SEEDS = {int(s) for s in re.search(r"^ablation_seeds:\s*\[([\d,\s]+)\]", (
    ROOT / "kdrepro" / "profiles" / "cpu300.yaml").read_text(), re.M).group(1).split(",")}

# the seeds of its budget study (`budget_seeds`): notebook 05 compares budgets on these seeds only, the
# 300-epoch budget included (the main study's seeds 5-9 at 300 epochs are not part of it)
BUDGET_SEEDS = {int(s) for s in re.search(r"^budget_seeds:\s*\[([\d,\s]+)\]", (
    ROOT / "kdrepro" / "profiles" / "cpu300.yaml").read_text(), re.M).group(1).split(",")}


# which study each table is computed from (the notebooks' exp.<study>() calls)
STUDY_OF_TABLE = {"01_teachers_and_students": "baselines", "02_kd_baselines": "kd_baselines",
                  "03_main_table": "main", "03_slkd_minus_kd": "main", "04_ablations": "ablations",
                  "04_order_paired": "ablations", "04_mse_paired": "ablations", "05_budgets": "budgets", "05_budget_paired": "budgets",
                  "05_matched_steps": "matched"}


def _load(d: Path) -> tuple[dict, dict] | None:
    if not (d / "summary.json").exists():
        return None
    summary = json.loads((d / "summary.json").read_text())
    return (json.loads((d / "config.json").read_text()), summary) if summary.get("finished") else None


def _runs() -> list[tuple[dict, dict]]:
    """Finished committed students of this profile: resnet8 taught by the 300-epoch wrn_16_2, or vanilla
    resnet8 with the unscaled 300-epoch recipe (config and summary of each)."""
    out = []
    for d in sorted(RUNS.glob("*-cifar10-5k-resnet8-*")):
        run = _load(d)
        if run is None or run[0].get("bf16"):
            continue
        c = run[0]
        teacher = c.get("teacher") or {}
        if c["method"] == "ce" and c["epochs"] == 300 and c["recipe"] == "slkd":
            out.append(run)
        elif teacher.get("model") == "wrn_16_2" and teacher.get("epochs") == 300:
            out.append(run)
    return out


def _csv(name: str) -> list[dict]:
    """A committed table of the profile; a missing one fails the test that reads it (never a skip)."""
    path = TABLES / f"{name}.csv"
    assert path.exists(), (f"{path} is missing: the committed cpu300 tables come from `make reproduce "
                           "PROFILE=cpu300` (python -m kdrepro.reproduce --profile cpu300 --no-train)")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _w(c: dict, term: str) -> float:
    return (c["losses"].get(term) or {}).get("weight", 0.0)


def _cur(c: dict, key: str):
    return (c["curriculum"] or {}).get(key)


def _slkd(c: dict, order: str = "easy_first") -> bool:
    return c["method"] == "slkd" and (_cur(c, "score"), _cur(c, "order"), _cur(c, "pacing"), _w(c, "mse")) == \
        ("max_logit", order, "authors", 0.05)


def _kd(c: dict) -> bool:
    return c["method"] == "kd" and _w(c, "fitnet") == 0 and _w(c, "at") == 0 and _w(c, "mse") == 0


def _by_seed(runs, pick) -> dict[int, dict]:
    """Seed -> summary of the runs ``pick`` selects; a diverged run (no accuracy) is left out, as the tables
    leave it out of means and pairs (docs/run-store.md)."""
    return {s["seed"]: s for c, s in runs if pick(c) and s.get("last_top1") is not None}


def _check_mean_std(row: dict, by_seed: dict[int, dict], what: str) -> None:
    last = [s["last_top1"] for s in by_seed.values()]
    best = [s["best_top1"] for s in by_seed.values()]
    assert int(row["seeds"]) == len(last), what
    assert float(row["last_mean"]) == pytest.approx(statistics.mean(last), abs=1e-9), what
    assert float(row["best_mean"]) == pytest.approx(statistics.mean(best), abs=1e-9), what
    std = statistics.stdev(last) if len(last) > 1 else 0.0
    assert float(row["last_std"]) == pytest.approx(std, abs=1e-9), what


def _check_paired(row: dict, a: dict[int, dict], b: dict[int, dict], what: str) -> None:
    seeds = sorted(set(a) & set(b))
    diffs = [a[s]["last_top1"] - b[s]["last_top1"] for s in seeds]
    assert int(row["seeds"]) == len(seeds), what
    assert float(row["diff_mean"]) == pytest.approx(statistics.mean(diffs), abs=1e-9), what
    std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    assert float(row["diff_std"]) == pytest.approx(std, abs=1e-9), what
    assert int(row["wins"]) == sum(d > 0 for d in diffs), what
    steps = statistics.mean(a[s]["iterations"] for s in seeds) / statistics.mean(b[s]["iterations"] for s in seeds)
    assert float(row["iterations_ratio"]) == pytest.approx(steps, rel=1e-9), what


def test_main_table_is_the_mean_and_sample_std_of_the_committed_300_epoch_runs():
    runs = _runs()
    expected = {
        "vanilla": _by_seed(runs, lambda c: c["method"] == "ce"),
        "kd": _by_seed(runs, lambda c: _kd(c) and c["epochs"] == 300),
        "slkd": _by_seed(runs, lambda c: _slkd(c) and c["epochs"] == 300),
    }
    rows = {r["method"]: r for r in _csv("03_main_table") if r["model"] == "resnet8"}
    assert set(rows) == {m for m, by in expected.items() if by}, "a method row without runs, or runs without a row"
    for method, row in rows.items():
        assert int(row["epochs"]) == 300
        _check_mean_std(row, expected[method], method)


def test_slkd_minus_kd_is_paired_by_seed_from_the_committed_runs():
    runs = _runs()
    slkd = _by_seed(runs, lambda c: _slkd(c) and c["epochs"] == 300)
    kd = _by_seed(runs, lambda c: _kd(c) and c["epochs"] == 300)
    rows = _csv("03_slkd_minus_kd")
    if not set(slkd) & set(kd):
        assert rows == [], "a paired row without a pair of runs"
        return
    (row,) = rows
    _check_paired(row, slkd, kd, "SLKD - KD at 300 epochs")


def test_ordering_ablation_is_paired_by_seed_from_the_committed_runs():
    rows = _csv("04_order_paired")
    runs = _runs()
    by_order = {o: _by_seed(runs, lambda c, o=o: _slkd(c, o) and c["epochs"] == 300)
                for o in ("easy_first", "hard_first", "random")}
    rows = {r["variant"]: r for r in rows}
    assert set(rows) == {v for v in ("hard_first", "random") if set(by_order[v]) & set(by_order["easy_first"])}
    for variant, row in rows.items():
        _check_paired(row, by_order[variant], by_order["easy_first"], variant)


def test_mse_split_is_paired_by_seed_from_the_committed_runs():
    """04_mse_paired: SLKD without its MSE term, and KD with it (pacing full), against KD and SLKD, recomputed
    from the runs of the ablation seeds."""
    rows = _csv("04_mse_paired")
    runs = [(c, s) for c, s in _runs() if c["seed"] in ABLATION_SEEDS]
    picks = {"kd": _by_seed(runs, lambda c: _kd(c) and c["epochs"] == 300),
             "slkd": _by_seed(runs, lambda c: _slkd(c) and c["epochs"] == 300),
             "slkd_no_mse": _by_seed(runs, lambda c: c["epochs"] == 300 and c["method"] == "slkd" and _w(c, "mse") == 0
                                     and (_cur(c, "score"), _cur(c, "order"), _cur(c, "pacing")) ==
                                     ("max_logit", "easy_first", "authors")),
             "kd_mse": _by_seed(runs, lambda c: c["epochs"] == 300 and c["method"] == "slkd" and _w(c, "mse") == 0.05
                                and _cur(c, "pacing") == "full")}
    rows = {(r["a"], r["b"]): r for r in rows}
    expected = [(a, b) for a, b in (("slkd_no_mse", "kd"), ("kd_mse", "kd"), ("slkd", "kd_mse"),
                                    ("slkd", "slkd_no_mse"), ("slkd", "kd")) if set(picks[a]) & set(picks[b])]
    assert sorted(rows) == sorted(expected)
    for a, b in expected:
        _check_paired(rows[a, b], picks[a], picks[b], f"{a} - {b}")


def test_budget_curve_is_paired_by_seed_from_the_committed_runs():
    rows = _csv("05_budget_paired")
    runs = [(c, s) for c, s in _runs() if c["seed"] in BUDGET_SEEDS]
    rows = {int(r["epochs"]): r for r in rows if (r["a"], r["b"]) == ("slkd", "kd")}
    expected = {}
    for epochs in sorted({c["epochs"] for c, _ in runs if c["method"] == "slkd"}):
        slkd = _by_seed(runs, lambda c, e=epochs: _slkd(c) and c["epochs"] == e)
        kd = _by_seed(runs, lambda c, e=epochs: _kd(c) and c["epochs"] == e)
        if set(slkd) & set(kd):
            expected[epochs] = (slkd, kd)
    assert set(rows) == set(expected)
    for epochs, (slkd, kd) in expected.items():
        _check_paired(rows[epochs], slkd, kd, f"SLKD - KD at {epochs} epochs")
    for r in _csv("05_budgets"):
        pick = _slkd if r["method"] == "slkd" else _kd
        _check_mean_std(r, _by_seed(runs, lambda c, e=int(r["epochs"]): pick(c) and c["epochs"] == e),
                        f"{r['method']} at {r['epochs']} epochs")


def test_matched_step_comparison_is_paired_by_seed_from_the_committed_runs():
    rows = _csv("05_matched_steps")
    runs = [(c, s) for c, s in _runs() if c["seed"] in BUDGET_SEEDS]  # the matched study's seeds
    slkd = _by_seed(runs, lambda c: _slkd(c) and c["epochs"] == 300)
    kd = _by_seed(runs, lambda c: _kd(c) and c["epochs"] == 300)
    kd_matched = _by_seed(runs, lambda c: _kd(c) and c["epochs"] == 226)
    for s in kd_matched.values():  # matched means matched: KD at 226 epochs takes SLKD-at-300's steps
        assert s["iterations"] == 226 * 40
    for s in slkd.values():
        assert s["iterations"] == 9040
    rows = {(r["a"], r["b"]): r for r in rows}
    for (a, b), row in rows.items():
        assert int(row["budget"]) == 300
        _check_paired(row, slkd, {"kd": kd, "kd_matched": kd_matched}[b], f"{a} - {b}")


def test_incomplete_tables_name_exactly_the_runs_they_lack():
    """Each table's "Incomplete" note counts the planned runs of its study that are not committed and
    finished, and every run it names (in brackets) is one of them; a complete study's table has no note."""
    exp = experiments.Experiment("cpu300", results_dir=ROOT / "results")
    checked = 0
    for name, study in STUDY_OF_TABLE.items():
        md = TABLES / f"{name}.md"
        if not md.exists():
            continue
        checked += 1
        lacking = {p.config.run_id for p in exp.plan(study) if _load(RUNS / p.config.run_id) is None}
        note = re.search(r"Incomplete: (\d+) run\(s\)", md.read_text())
        if not lacking:
            assert note is None, f"{name}: says incomplete, but every run of study {study!r} is committed"
            continue
        assert note is not None, f"{name}: {len(lacking)} run(s) of {study!r} missing, and the table does not say so"
        assert int(note.group(1)) == len(lacking), name
        named = set(re.findall(r"\[([a-z0-9_.-]+-s\d+-[0-9a-f]{10})\]", md.read_text()))
        assert named and named <= lacking, f"{name}: names committed runs as missing: {sorted(named - lacking)}"
    assert checked, "no cpu300 table of a study was found"


def _first_study_ids(tmp_path: Path) -> set[str]:
    """The run ids of the five-seed study: the profile with the seed lists and budgets it had before the
    ten-seed extension (docs/analysis-plan-cpu300.md)."""
    import yaml
    data = yaml.safe_load((ROOT / "kdrepro" / "profiles" / "cpu300.yaml").read_text())
    data.update(seeds=[0, 1, 2, 3, 4], method_seeds={"vanilla": [0, 1, 2]}, budgets=[20, 60, 120, 300],
                ablation_seeds=[0, 1, 2])
    path = tmp_path / "cpu300.yaml"
    path.write_text(yaml.safe_dump(data))
    return {c.run_id for c in experiments.Experiment(str(path), results_dir=ROOT / "results").all_configs()}


def _check_finished(configs) -> None:
    missing = [c.run_id for c in configs if _load(RUNS / c.run_id) is None]
    assert not missing, f"{len(missing)} cpu300 runs not committed and finished: {missing}"
    for c in configs:
        summary = json.loads((RUNS / c.run_id / "summary.json").read_text())
        assert summary["epochs"] == c.epochs
        assert len((RUNS / c.run_id / "metrics.jsonl").read_text().splitlines()) == c.epochs


def test_every_run_of_the_five_seed_study_is_committed_and_finished(tmp_path):
    configs = experiments.Experiment("cpu300", results_dir=ROOT / "results").all_configs()
    assert len(configs) == PROFILE_RUNS
    first_ids = _first_study_ids(tmp_path)
    first = [c for c in configs if c.run_id in first_ids]
    assert len(first_ids) == len(first) == FIRST_STUDY_RUNS
    _check_finished(first)


def test_every_run_of_the_cpu300_profile_is_committed_and_finished():
    configs = experiments.Experiment("cpu300", results_dir=ROOT / "results").all_configs()
    assert len(configs) == PROFILE_RUNS
    _check_finished(configs)


TEACHER_ID = "ce-cifar10-5k-wrn_16_2-s0-bcf9a43d98"


def test_every_committed_student_was_taught_by_the_committed_teacher_weights(weights_file_hash):
    """Issue 11: every comparison "with the same teacher". The teacher's weights are committed (CPU training
    is not bit-exact across machines, so a lost teacher cannot be retrained: results/superseded/), its
    summary names their hash, and every student's summary names the hash of the weights that taught it."""
    teacher_dir = RUNS / TEACHER_ID
    students = [(c, s) for c, s in _runs() if c["method"] != "ce"]
    assert students and teacher_dir.exists(), "no cpu300 teacher or student is committed"
    weights = teacher_dir / "weights.pt"
    assert weights.exists(), f"the cpu300 teacher's weights ({weights}) are not committed"
    expected = weights_file_hash(weights)
    assert json.loads((teacher_dir / "summary.json").read_text())["weights_hash"] == expected
    wrong = [s["run_id"] for c, s in students if s.get("teacher_weights_hash") != expected]
    assert not wrong, f"students not taught by the committed teacher weights {expected}: {wrong}"


RESULTS_PAGE = ROOT / "docs" / "results-cpu300.md"


def test_results_page_status_block_lists_exactly_the_finished_runs_with_their_own_numbers():
    """The cpu300 results page's status block (between ``<!-- cpu300-status -->`` markers) is what a reader sees
    first: its count, and each row's epochs, seed, last/best top-1, optimizer steps and wall minutes, must be
    those of the run's committed ``summary.json``, and every finished run of the profile (teacher included)
    must be listed once. A block left behind after a harvest, or a number typed by hand, fails."""
    block = re.search(r"<!-- cpu300-status -->\n(.*?)<!-- /cpu300-status -->", RESULTS_PAGE.read_text(), re.S)
    assert block, f"{RESULTS_PAGE} has no cpu300 status block"
    text = block.group(1)
    count = re.match(r"(\d+) of (\d+) runs finished\.", text)
    assert count, f"the status block does not open with 'N of M runs finished.': {text[:80]!r}"
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| ") and "`" in line]
    listed = {}
    for cells in rows:
        run_id = cells[-1].strip("`")
        assert run_id not in listed, f"{run_id} is listed twice"
        listed[run_id] = cells
        run = _load(RUNS / run_id)
        assert run is not None, f"{RESULTS_PAGE.name} lists {run_id}, which is not committed and finished"
        s = run[1]
        assert (int(cells[1]), int(cells[2])) == (s["epochs"], s["seed"]), run_id
        assert (float(cells[3]), float(cells[4])) == (round(s["last_top1"], 2), round(s["best_top1"], 2)), run_id
        assert int(cells[5].replace(",", "")) == s["iterations"], run_id
        assert int(cells[6]) == round(s["wall_seconds"] / 60), run_id
    configs = experiments.Experiment("cpu300", results_dir=ROOT / "results").all_configs()
    finished = {c.run_id for c in configs if _load(RUNS / c.run_id) is not None}
    assert set(listed) == finished, (f"finished but not listed: {sorted(finished - set(listed))}; "
                                     f"listed but not in the profile: {sorted(set(listed) - finished)}")
    assert (int(count.group(1)), int(count.group(2))) == (len(finished), PROFILE_RUNS)


def test_runs_trained_on_a_gpu_computed_in_float32():
    """The profile's float32 runs must be float32 on every device: PyTorch lets cuDNN convolutions use TF32
    by default, and the engine turns that off (``engine.float32_on_cuda``). Every committed run whose summary
    says it ran on CUDA must record ``tf32: false`` (a run trained before the guard records nothing)."""
    cuda = []
    for d in sorted(RUNS.glob("*-cifar10-5k-*")):
        run = _load(d)
        if run is None:
            continue
        env = run[1].get("environment") or {}
        if str(env.get("device", "")).startswith("cuda"):
            cuda.append(d.name)
            assert env.get("tf32") is False, f"{d.name}: trained on {env.get('device_name')} with tf32={env.get('tf32')!r}"
    assert cuda, "no committed run says it was trained on a GPU, but the profile's 20/60/120-epoch budgets were"


# ------------------------------------------------------------------ the analysis plan's tests (issue 27)
# docs/analysis-plan-cpu300.md: recomputed from the summaries with the standard library; Student's t from its
# density (tests/_tdist.py), not from kdrepro.stats

def _device_kind(summary: dict) -> str:
    """The plan's device kind, as the tables print it, from a summary's environment, written out here: a GPU's
    name; a CPU's name and, where recorded, its model (amendment 1)."""
    env = summary.get("environment") or {}
    name = " ".join(str(env.get("device_name") or "").replace("(R)", "").replace(" Processor", "").split())
    if str(env.get("device", "")).startswith("cuda"):
        return f"GPU: {name}"
    if name.lower() in ("", "cpu"):
        return "CPU: model not recorded"
    model = env.get("cpu_model")
    return f"CPU: {name} ({model})" if model and model != "unknown" else f"CPU: {name}"


def _plan_arms() -> dict[str, dict[int, dict]]:
    runs = [(c, s) for c, s in _runs() if c["seed"] in ABLATION_SEEDS and c["epochs"] == 300]

    def slkd_variant(c, order="easy_first", mse=0.05, pacing="authors"):
        return c["method"] == "slkd" and _w(c, "mse") == mse and \
            (_cur(c, "score"), _cur(c, "order"), _cur(c, "pacing")) == ("max_logit", order, pacing)
    return {"SLKD": _by_seed(runs, slkd_variant), "KD": _by_seed(runs, _kd),
            "hard first": _by_seed(runs, lambda c: slkd_variant(c, order="hard_first")),
            "random": _by_seed(runs, lambda c: slkd_variant(c, order="random")),
            "SLKD without MSE": _by_seed(runs, lambda c: slkd_variant(c, mse=0)),
            "KD with MSE": _by_seed(runs, lambda c: slkd_variant(c, pacing="full"))}


def _paired(diffs: list[float]) -> tuple[float, float, float, float]:
    """(mean, low, high, p) of the paired t test, from the formulas."""
    import _tdist
    n, m = len(diffs), statistics.mean(diffs)
    if n < 2:  # one pair: a difference, no interval and no test
        return m, float("nan"), float("nan"), float("nan")
    se = statistics.stdev(diffs) / n ** 0.5
    return m, m - _tdist.q975(n - 1) * se, m + _tdist.q975(n - 1) * se, _tdist.p_two_sided(m / se, n - 1)


def _welch(a: list[float], b: list[float]) -> tuple[float, float, float, float]:
    import _tdist
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = (va + vb) ** 0.5
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    m = statistics.mean(a) - statistics.mean(b)
    return m, m - _tdist.q975(df) * se, m + _tdist.q975(df) * se, _tdist.p_two_sided(m / se, df)


PLAN = (("H1", "SLKD", "KD"), ("H2", "SLKD", "hard first"), ("H3", "SLKD", "random"),
        ("H4", "SLKD", "SLKD without MSE"), ("H5", "SLKD", "KD with MSE"))


def test_hypotheses_table_follows_the_analysis_plan_from_the_summaries():
    """04_hypotheses: per hypothesis, the paired t test on the seeds whose two runs share a device kind (primary
    when there are at least 5), Welch's test on every seed, Holm over the primary p values, and the verdict by
    the plan's rules (withheld while a run of the study is missing)."""
    rows = _csv("04_hypotheses")
    assert rows is not None, f"{TABLES / '04_hypotheses.csv'} is missing: run notebook 04 of cpu300"
    rows = {r["hypothesis"]: r for r in rows}
    arms = _plan_arms()
    assert sorted(rows) == [h for h, a, b in PLAN if arms[a] and arms[b]]
    primary_p, welch_p, expected, expected_welch = [], [], {}, {}
    for h, a, b in PLAN:
        if h not in rows:
            continue
        common = sorted(set(arms[a]) & set(arms[b]))
        same = [s for s in common if _device_kind(arms[a][s]) == _device_kind(arms[b][s])]
        row = rows[h]
        assert json.loads(row["paired_seeds"]) == same, h
        assert json.loads(row["crossing_seeds"]) == [s for s in common if s not in same], h
        welch = _welch([s["last_top1"] for s in arms[a].values()], [s["last_top1"] for s in arms[b].values()])
        for got, want in zip((row["welch_mean"], row["welch_low"], row["welch_high"], row["welch_p"]), welch):
            assert float(got) == pytest.approx(want, abs=1e-6), h
        if len(same) >= 5:
            primary = _paired([arms[a][s]["last_top1"] - arms[b][s]["last_top1"] for s in same])
            assert row["primary"] == "paired", h
        else:
            primary = welch
            assert row["primary"] == "Welch", h
        for got, want in zip((row["estimate"], row["low"], row["high"], row["p"]), primary):
            assert float(got) == pytest.approx(want, abs=1e-6), h
        primary_p.append((primary[3], h))
        welch_p.append((welch[3], h))
        expected[h], expected_welch[h] = primary, welch
    complete = not re.search(r"Incomplete: \d+ run", (TABLES / "04_hypotheses.md").read_text())
    # the primary tests, and Welch's (the plan's results page says where the secondary test disagrees)
    for column, p_column, tests, ps in (("verdict", "p_holm", expected, primary_p),
                                        ("welch_verdict", "welch_p_holm", expected_welch, welch_p)):
        m, running, holm = len(ps), 0.0, {}  # Holm-Bonferroni by hand
        for j, (p, h) in enumerate(sorted(ps), start=1):
            running = max(running, min(1.0, (m - j + 1) * p))
            holm[h] = running
        for h, (mean, low, high, p) in tests.items():
            assert float(rows[h][p_column]) == pytest.approx(holm[h], abs=1e-6), h
            if not complete:
                assert rows[h][column] == "withheld: study incomplete", h
            elif holm[h] < 0.05 and mean > 0:
                assert rows[h][column] == "support", h
            elif (holm[h] < 0.05 and mean < 0) or high < 0.5:
                assert rows[h][column] == "refutation", h
            else:
                assert rows[h][column] == "no answer", h


def test_budget_crossover_is_paired_on_one_device_kind_from_the_summaries():
    rows = _csv("05_crossover")
    assert rows is not None, f"{TABLES / '05_crossover.csv'} is missing: run notebook 05 of cpu300"
    runs = [(c, s) for c, s in _runs() if c["seed"] in BUDGET_SEEDS]
    expected = {}
    for epochs in sorted({c["epochs"] for c, _ in runs if c["method"] == "slkd"}):
        slkd = _by_seed(runs, lambda c, e=epochs: _slkd(c) and c["epochs"] == e)
        kd = _by_seed(runs, lambda c, e=epochs: _kd(c) and c["epochs"] == e)
        same = [s for s in sorted(set(slkd) & set(kd)) if _device_kind(slkd[s]) == _device_kind(kd[s])]
        if same:
            expected[epochs] = _paired([slkd[s]["last_top1"] - kd[s]["last_top1"] for s in same]) + (len(same),)
    assert [int(r["epochs"]) for r in rows] == sorted(expected)
    previous = None
    for r in rows:
        mean, low, high, _, n = expected[int(r["epochs"])]
        assert int(r["seeds"]) == n
        for got, want in zip((r["mean"], r["low"], r["high"]), (mean, low, high)):
            assert float(got or "nan") == pytest.approx(want, abs=1e-6, nan_ok=True), r["epochs"]
        assert (r["sign_change"] == "True") == (previous is not None and (previous > 0) != (mean > 0)), r["epochs"]
        previous = mean


def test_no_run_of_the_profile_diverged():
    """Amendment 2 of docs/analysis-plan-cpu300.md: the plan counts a diverged run with its last completed
    epoch's accuracy, the tables leave it out; the two agree while no run of the profile diverges. A diverged
    run here means the hypothesis tables must first apply the plan's rule to it."""
    diverged = [s["run_id"] for _, s in _runs() if s.get("last_top1") is None or "diverged" in (s.get("flags") or [])]
    assert not diverged, f"cpu300 runs diverged: {diverged}; apply the analysis plan's Outcome rule (amendment 2)"


def _num(text: str) -> float:
    return float(text.replace("−", "-").replace("+", "").replace(",", ""))


def test_the_budget_rows_of_the_readme_and_the_results_page_are_the_tables_numbers():
    """README's answer table and the results page's budget curve quote, per budget, KD and SLKD (mean ± std),
    SLKD − KD paired (mean ± std) and the seeds SLKD wins: each must be the committed tables' number, and
    every budget of the tables must be on the results page."""
    budgets = {(r["method"], int(r["epochs"])): r for r in _csv("05_budgets")}
    paired = {int(r["epochs"]): r for r in _csv("05_budget_paired") if (r["a"], r["b"]) == ("slkd", "kd")}
    pm = r"([−+-]?[\d.]+) ± ([\d.]+)"
    readme = (ROOT / "README.md").read_text()
    page = (ROOT / "docs" / "results-cpu300.md").read_text()
    quoted = [(int(m[1]), m.groups()[1:]) for m in re.finditer(
        rf"^\| (\d+) epochs \| {pm} \| {pm} \| {pm} \| (\d+)/(\d+) \|", readme, re.M)]
    on_page = [(int(m[1]), m.groups()[3:]) for m in re.finditer(
        rf"^\| (\d+) \| ([\d,]+) \| ([\d,]+) \| {pm} \| {pm} \| {pm} \| (\d+)/(\d+) \|", page, re.M)]
    assert len(quoted) >= 4 and {e for e, _ in on_page} == set(paired)
    for epochs, (kd, kd_sd, slkd, slkd_sd, diff, diff_sd, wins, seeds) in quoted + on_page:
        for (mean, sd), row in (((kd, kd_sd), budgets["kd", epochs]), ((slkd, slkd_sd), budgets["slkd", epochs])):
            assert (_num(mean), _num(sd)) == (round(float(row["last_mean"]), 2), round(float(row["last_std"]), 2)), \
                f"{row['method']} at {epochs} epochs"
        p = paired[epochs]
        assert (_num(diff), _num(diff_sd)) == (round(float(p["diff_mean"]), 2), round(float(p["diff_std"]), 2)), epochs
        assert (int(wins), int(seeds)) == (int(p["wins"]), int(p["seeds"])), epochs


def test_the_copies_of_tables_in_the_results_page_and_readme_are_the_committed_tables():
    """The results page and README show some tables of the profile as copies (between ``<!-- table:NAME -->``
    markers, or ``<!-- table:NAME cols: A; B -->`` for those columns only; rewritten by tools/cpu300_status.py):
    each copy must be the rows of the committed NAME.md (those columns, in that order), so a harvest that
    changes a table and leaves a page behind fails."""
    copies = {}
    for path in (RESULTS_PAGE, ROOT / "README.md"):
        text = path.read_text()
        for name, cols, body in re.findall(r"<!-- table:(\w+)(?: cols: ([^>]*?))? -->\n(.*?)<!-- /table:\1 -->",
                                           text, re.S):
            copies[path.name, name] = (cols, body)
    assert {("results-cpu300.md", "04_order_paired"), ("results-cpu300.md", "04_mse_paired"),
            ("README.md", "04_hypotheses"), ("README.md", "05_compute")} <= set(copies), sorted(copies)
    for (page, name), (cols, body) in copies.items():
        table = TABLES / f"{name}.md"
        assert table.exists(), f"{page} copies {table}, which is not committed"
        rows = [[c.strip() for c in line.strip().strip("|").split("|")]
                for line in table.read_text().splitlines() if line.startswith("|")]
        if cols:
            keep = [rows[0].index(c.strip()) for c in cols.split(";")]
            rows = [[row[i] for i in keep] for row in rows]
        shown = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body.splitlines()]
        assert shown == rows, f"{page}'s copy of {name} is not the committed table: run `python tools/cpu300_status.py`"


def test_the_results_pages_main_table_and_vanilla_gains_come_from_the_runs():
    """The results page's main table (method, last and best mean ± std, seeds) is the committed 03_main_table,
    and its gains over the vanilla students (KD − vanilla, SLKD − vanilla, paired by seed, with the seeds
    ahead) are recomputed here from the runs' summaries."""
    page = RESULTS_PAGE.read_text()
    names = {"teacher (wrn_16_2)": "teacher", "vanilla student": "vanilla", "KD": "kd", "SLKD": "slkd"}
    rows = {r["method"]: r for r in _csv("03_main_table")}
    pm = r"([\d.]+)(?: ± ([\d.]+))?"
    found = set()
    for m in re.finditer(rf"^\| (teacher \(wrn_16_2\)|vanilla student|KD|SLKD) \| {pm} \| {pm} \| (\d+) \| [\d,]+ \|$",
                         page, re.M):
        row, found = rows[names[m[1]]], found | {m[1]}
        assert _num(m[2]) == round(float(row["last_mean"]), 2) and _num(m[4]) == round(float(row["best_mean"]), 2), m[1]
        if m[3]:
            assert _num(m[3]) == round(float(row["last_std"]), 2), m[1]
        assert int(m[6]) == int(row["seeds"]), m[1]
    assert found == set(names), f"main-table rows missing from {RESULTS_PAGE.name}: {set(names) - found}"
    runs = [r for r in _runs() if r[0]["epochs"] == 300]
    vanilla = _by_seed(runs, lambda c: c["method"] == "ce")
    for label, pick in (("KD", _kd), ("SLKD", _slkd)):
        arm = _by_seed(runs, pick)
        diffs = [arm[s]["last_top1"] - vanilla[s]["last_top1"] for s in sorted(set(arm) & set(vanilla))]
        quoted = re.findall(rf"(?<![A-Za-z]){label} − vanilla ([+−-][\d.]+) ± ([\d.]+),(?: ahead on)? (\d+) of (\d+)", page)
        assert quoted, f"{RESULTS_PAGE.name} quotes no '{label} − vanilla'"
        for mean, sd, wins, n in quoted:
            assert (_num(mean), _num(sd)) == (round(statistics.mean(diffs), 2), round(statistics.stdev(diffs), 2)), label
            assert (int(wins), int(n)) == (sum(d > 0 for d in diffs), len(diffs)), label


def test_compute_table_sums_every_finished_run_of_the_profile_per_device_kind():
    """05_compute (notebook 05) is every finished run of the profile, teacher included, grouped by device kind:
    runs, epochs and summed ``wall_seconds``, with a total, recomputed from the runs' summaries; the runs not
    yet finished are named under it."""
    configs = experiments.Experiment("cpu300", results_dir=ROOT / "results").all_configs()
    assert len(configs) == PROFILE_RUNS
    groups: dict[str, list[dict]] = {}
    for cfg in configs:
        run = _load(RUNS / cfg.run_id)
        if run is not None:
            groups.setdefault(_device_kind(run[1]), []).append(run[1])
    rows = {r["device"]: r for r in _csv("05_compute")}
    every = [s for group in groups.values() for s in group]
    assert set(rows) == set(groups) | {"all"}
    for device, summaries in list(groups.items()) + [("all", every)]:
        row = rows[device]
        assert int(row["runs"]) == len(summaries), device
        assert int(row["epochs"]) == sum(s["epochs"] for s in summaries), device
        assert float(row["run_hours"]) == pytest.approx(sum(s["wall_seconds"] for s in summaries) / 3600, rel=1e-9)
    shown = (TABLES / "05_compute.md").read_text()
    lacking = len(configs) - len(every)
    assert (f"**Incomplete: {lacking} run(s)" in shown) if lacking else ("Incomplete" not in shown)


def test_every_verdict_the_pages_state_is_the_tables_verdict():
    """The README, the results page and reading 04 state each hypothesis's verdict in prose ("H4, SLKD > SLKD
    without MSE: no answer"); each statement must be the verdict of the committed 04_hypotheses table, and
    each page must state all five once the study is complete."""
    rows = _csv("04_hypotheses")
    assert rows is not None, f"{TABLES / '04_hypotheses.csv'} is missing: run notebook 04 of cpu300"
    verdicts = {r["hypothesis"]: (r["claim"], r["verdict"]) for r in rows}
    complete = all(v in ("support", "refutation", "no answer") for _, v in verdicts.values())
    pages = (ROOT / "README.md", RESULTS_PAGE, ROOT / "kdrepro" / "readings" / "cpu300" / "04_ablations.md")
    for page in pages:
        text = re.sub(r"\s+", " ", page.read_text().replace("*", ""))
        stated = re.findall(r"\b(H[1-5]), ([^:]{3,40}?): (support|refutation|no answer)\b", text)
        for h, claim, verdict in stated:
            assert (claim, verdict) == verdicts[h], (page.name, h, claim, verdict, verdicts[h])
        if complete:
            assert {h for h, _, _ in stated} == set(verdicts), (page.name, sorted({h for h, _, _ in stated}))
        else:
            assert not stated, (page.name, "states a verdict while the study is incomplete", stated)
