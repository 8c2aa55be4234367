"""Tables of the notebooks: mean ± std, references, differences, writers, anatomy tables, cost counts."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

import kdrepro  # noqa: F401  (the torchvision guard, before anything imports torchvision)
from kdrepro import experiments, report


def _runs(rows):
    cols = ["dataset", "teacher", "student", "method", "seed", "last_top1", "best_top1", "epochs", "iterations"]
    return pd.DataFrame(rows, columns=cols)


# ---------------------------------------------------------------------------------------------- mean ± std


def test_summarize_mean_and_sample_std_by_hand():
    runs = _runs([("d", "t", "s", "kd", 0, 90.0, 91.0, 5, 100), ("d", "t", "s", "kd", 1, 92.0, 93.0, 5, 100),
                  ("d", "t", "s", "kd", 2, 97.0, 97.5, 5, 100), ("d", "t", "s", "ce", 0, 80.0, 81.0, 5, 100)])
    summary = report.summarize(runs, ["dataset", "teacher", "student", "method"])
    assert list(summary["method"]) == ["kd", "ce"]  # order of first appearance
    kd = summary.iloc[0]
    # hand computation: mean 93, deviations -3, -1, 4 -> sample variance (9 + 1 + 16) / 2 = 13
    assert kd["last_mean"] == pytest.approx(93.0, abs=1e-12)
    assert kd["last_std"] == pytest.approx(math.sqrt(13.0), abs=1e-12)
    best_mean = (91.0 + 93.0 + 97.5) / 3
    best_var = sum((v - best_mean) ** 2 for v in (91.0, 93.0, 97.5)) / 2
    assert kd["best_std"] == pytest.approx(math.sqrt(best_var), abs=1e-12)
    assert kd["seeds"] == 3
    single = summary.iloc[1]
    assert single["seeds"] == 1 and single["last_std"] == 0.0


def test_format_mean_std():
    assert report.fmt_mean_std(93.0, math.sqrt(13.0), 3) == "93.00 ± 3.61"
    assert report.fmt_mean_std(80.0, 0.0, 1) == "80.00"  # one run: its value, no spread
    assert report.fmt_mean_std(math.nan, math.nan, 0) == "—"
    assert report.fmt_mean_std(-0.001, 0.39, 2) == "0.00 ± 0.39"  # rounds to zero: no minus sign
    assert report.fmt_mean_std(-0.006, 0.39, 2) == "-0.01 ± 0.39"


def test_summarize_names_missing_columns():
    with pytest.raises(KeyError, match="no column"):
        report.summarize(pd.DataFrame({"method": ["kd"]}), ["method"])


def test_paired_difference_by_hand():
    runs = _runs([("d", "t", "s", "slkd", 0, 91.0, 91.0, 5, 75), ("d", "t", "s", "slkd", 1, 90.0, 90.0, 5, 75),
                  ("d", "t", "s", "kd", 0, 90.0, 90.0, 5, 100), ("d", "t", "s", "kd", 1, 92.0, 92.0, 5, 100)])
    paired = report.paired_difference(runs, "slkd", "kd").iloc[0]
    # per-seed differences +1 and -2: mean -0.5, sample std sqrt(((1.5)^2 + (1.5)^2) / 1)
    assert paired["diff_mean"] == pytest.approx(-0.5)
    assert paired["diff_std"] == pytest.approx(math.sqrt(4.5))
    assert paired["wins"] == 1 and paired["seeds"] == 2
    assert paired["iterations_ratio"] == pytest.approx(0.75)


def test_mse_decomposition_splits_slkds_gain_by_hand():
    """KD (the reference), SLKD (mse on) and SLKD without MSE (off): three paired comparisons, by hand; a seed
    missing from one side is left out of that comparison only, and other axes' rows are ignored."""
    def row(axis, variant, seed, top1, iterations):
        return {"dataset": "d", "teacher": "t", "student": "s", "axis": axis, "variant": variant, "seed": seed,
                "method": "kd" if axis == "reference" else "slkd", "last_top1": top1, "iterations": iterations}

    runs = pd.DataFrame([row("reference", "kd (no curriculum)", 0, 70.0, 100), row("reference", "kd (no curriculum)", 1, 72.0, 100),
                         row("mse", "on", 0, 74.0, 75), row("mse", "on", 1, 73.0, 75),
                         row("mse", "off", 0, 71.0, 75), row("mse", "off", 1, 75.0, 75), row("mse", "off", 2, 80.0, 75),
                         row("pacing", "full", 0, 73.0, 100), row("pacing", "full", 1, 71.0, 100),
                         row("order", "random", 0, 10.0, 75)])
    got = report.mse_decomposition(runs).set_index(["a", "b"])
    # off - kd: 1, 3; full - kd: 3, -1; on - full: 1, 2; on - off: 3, -2; on - kd: 4, 1 (seed 2 has no KD
    # and no "on" run)
    expected = {("slkd_no_mse", "kd"): (2.0, math.sqrt(2), 2, 0.75), ("kd_mse", "kd"): (1.0, math.sqrt(8), 1, 1.0),
                ("slkd", "kd_mse"): (1.5, math.sqrt(0.5), 2, 0.75),
                ("slkd", "slkd_no_mse"): (0.5, math.sqrt(12.5), 1, 1.0), ("slkd", "kd"): (2.5, math.sqrt(4.5), 2, 0.75)}
    assert list(got.index) == list(expected)
    for key, (mean, std, wins, ratio) in expected.items():
        r = got.loc[key]
        assert (r["diff_mean"], r["diff_std"], r["wins"], r["seeds"]) == (pytest.approx(mean), pytest.approx(std), wins, 2)
        assert r["iterations_ratio"] == pytest.approx(ratio)
    table = report.format_paired_comparisons(report.mse_decomposition(runs))
    assert list(table["comparison"]) == ["SLKD without MSE − KD", "KD with MSE − KD", "SLKD − KD with MSE",
                                         "SLKD − SLKD without MSE", "SLKD − KD"]
    assert list(table["first − second (paired)"]) == ["2.00 ± 1.41", "1.00 ± 2.83", "1.50 ± 0.71", "0.50 ± 3.54",
                                                      "2.50 ± 2.12"]
    assert report.mse_decomposition(runs[~runs["axis"].isin(["mse", "pacing"])]).empty  # nothing to split
    without_full = report.mse_decomposition(runs[runs["axis"] != "pacing"])  # profiles without the control
    assert [(a, b) for a, b in zip(without_full["a"], without_full["b"])] == \
        [("slkd_no_mse", "kd"), ("slkd", "slkd_no_mse"), ("slkd", "kd")]
    long = report.paired_long(report.mse_runs(runs), report.MSE_COMPARISONS)
    assert sorted(long[long["comparison"] == "SLKD − KD"]["diff"]) == [1.0, 4.0]


def test_paired_by_budget_pairs_within_each_budget_by_hand():
    rows = [("d", "t", "s", "slkd", 0, 70.0, 70.0, 20, 75), ("d", "t", "s", "slkd", 1, 68.0, 68.0, 20, 75),
            ("d", "t", "s", "kd", 0, 71.0, 71.0, 20, 100), ("d", "t", "s", "kd", 1, 67.0, 67.0, 20, 100),
            ("d", "t", "s", "slkd", 0, 80.0, 80.0, 60, 225), ("d", "t", "s", "kd", 0, 78.0, 78.0, 60, 300),
            ("d", "t", "s", "kd", 1, 99.0, 99.0, 60, 300)]  # KD seed 1 at 60 has no SLKD partner: left out
    paired = report.paired_by_budget(_runs(rows), comparisons=[("slkd", "kd"), ("slkd", "vanilla")])
    assert list(paired["epochs"]) == [20, 60] and set(paired["b"]) == {"kd"}  # no vanilla runs: no rows
    at20, at60 = paired.iloc[0], paired.iloc[1]
    # 20 epochs: differences -1 and +1 -> mean 0, sample std sqrt(2); SLKD wins seed 1 only
    assert at20["diff_mean"] == pytest.approx(0.0) and at20["diff_std"] == pytest.approx(math.sqrt(2.0))
    assert at20["wins"] == 1 and at20["seeds"] == 2
    # 60 epochs: only seed 0 is paired: +2, KD's mean over the paired seeds is 78 (not (78 + 99) / 2)
    assert at60["diff_mean"] == pytest.approx(2.0) and at60["b_mean"] == pytest.approx(78.0)
    assert at60["seeds"] == 1 and at60["iterations_ratio"] == pytest.approx(0.75)
    table = report.format_paired_by_budget(paired)
    assert list(table["comparison"]) == ["SLKD − KD", "SLKD − KD"]
    assert list(table["first − second (paired)"]) == ["0.00 ± 1.41", "2.00"]


# ---------------------------------------------------------------------------------------------- references


def test_reference_file_has_a_source_for_every_row_and_no_slkd_paper_numbers():
    refs = report.load_references()
    assert len(refs) > 0
    assert (refs["source"].str.strip() != "").all()
    assert (refs["url"].str.startswith("https://")).all()
    slkd_paper = refs[refs["source"].str.contains("2106.10885") | (refs["method"] == "slkd")]
    assert len(slkd_paper) >= 4  # CIFAR-10, CIFAR-100, SVHN, CINIC-10
    assert slkd_paper["top1"].isna().all()
    assert (slkd_paper["note"] == report.NOT_TRANSCRIBED).all()
    assert refs.loc[refs["top1"].isna(), "note"].eq(report.NOT_TRANSCRIBED).all()


@pytest.mark.parametrize("dataset, teacher, student, method, value, source", [
    # the numbers quoted in the issue, with their sources
    ("cifar10", "resnet110", "resnet20", "vanilla", 92.37, "Knowledge-Distillation-Zoo"),
    ("cifar10", "resnet110", "resnet20", "teacher", 93.86, "Knowledge-Distillation-Zoo"),
    ("cifar10", "resnet110", "resnet20", "kd", 92.82, "Knowledge-Distillation-Zoo"),
    ("cifar100", "resnet110", "resnet20", "vanilla", 68.92, "Knowledge-Distillation-Zoo"),
    ("cifar100", "resnet110", "resnet20", "teacher", 73.15, "Knowledge-Distillation-Zoo"),
    ("cifar100", "resnet110", "resnet20", "kd", 70.06, "Knowledge-Distillation-Zoo"),
    ("cifar100", "resnet56", "resnet20", "teacher", 72.34, "RepDistiller"),
    ("cifar100", "resnet56", "resnet20", "vanilla", 69.06, "RepDistiller"),
    ("cifar100", "resnet56", "resnet20", "kd", 70.66, "RepDistiller"),
])
def test_reference_numbers_of_the_issue(dataset, teacher, student, method, value, source):
    summary = pd.DataFrame([dict(dataset=dataset, teacher=teacher, student=student, method=method,
                                 last_mean=value + 0.5)])
    out = report.add_references(summary).iloc[0]
    assert out["reference"] == pytest.approx(value)
    assert source in out["ref_source"]
    assert out["diff"] == pytest.approx(0.5)  # ours - reference


def test_difference_column_is_ours_minus_reference_and_unknowns_stay_empty():
    summary = pd.DataFrame([
        dict(dataset="cifar100", teacher="resnet56", student="resnet20", method="kd", last_mean=71.0,
             last_std=0.2, best_mean=71.5, best_std=0.1, seeds=3, epochs=300),
        dict(dataset="cifar100", teacher="resnet56", student="resnet20", method="slkd", last_mean=72.0,
             last_std=0.3, best_mean=72.2, best_std=0.2, seeds=3, epochs=300),
        dict(dataset="digits", teacher="resnet14", student="resnet8", method="kd", last_mean=95.0,
             last_std=0.0, best_mean=95.0, best_std=0.0, seeds=1, epochs=7),
    ])
    out = report.add_references(summary)
    assert out.loc[0, "diff"] == pytest.approx(71.0 - 70.66)
    assert math.isnan(out.loc[1, "reference"]) and out.loc[1, "ref_note"] == report.NOT_TRANSCRIBED
    assert math.isnan(out.loc[2, "reference"]) and out.loc[2, "ref_source"] == ""
    table = report.format_summary(out, ["dataset", "pair", "method"])
    assert list(table["pair"]) == ["resnet56 -> resnet20"] * 2 + ["resnet14 -> resnet8"]
    assert list(table["reference"]) == ["70.66", report.NOT_TRANSCRIBED, "—"]
    assert list(table["Δ last − ref"]) == ["+0.34", "—", "—"]
    assert list(table["top-1 last (%)"]) == ["71.00 ± 0.20", "72.00 ± 0.30", "95.00"]
    assert list(table["method"]) == ["KD", "SLKD", "KD"]


def test_malformed_reference_files_are_named(tmp_path):
    header = "dataset,teacher,student,method,top1,source,url,note\n"
    path = tmp_path / "refs.csv"
    path.write_text(header + "cifar10,a,b,kd,90.0,,https://x,\n")
    with pytest.raises(ValueError, match=r"refs.csv, row 2: every reference needs a source"):
        report.load_references(path)
    path.write_text(header + "cifar10,*,*,slkd,91.0,paper,https://x,not transcribed\n")
    with pytest.raises(ValueError, match="row 2: top1 must be empty exactly when"):
        report.load_references(path)
    path.write_text("dataset,top1\ncifar10,1\n")
    with pytest.raises(ValueError, match="missing column"):
        report.load_references(path)
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        report.load_references(tmp_path / "nothere.csv")


# --------------------------------------------------------------------------------------------- ablations


def test_ablation_delta_is_against_the_authors_setting():
    summary = pd.DataFrame([
        dict(axis="reference", variant="kd", default=False, last_mean=90.0, last_std=0.0, best_mean=90.0,
             best_std=0.0, seeds=1),
        dict(axis="score", variant="max_logit", default=True, last_mean=91.0, last_std=0.0, best_mean=91.0,
             best_std=0.0, seeds=1),
        dict(axis="score", variant="margin", default=False, last_mean=92.5, last_std=0.0, best_mean=92.5,
             best_std=0.0, seeds=1),
    ])
    table = report.format_ablations(summary)
    assert list(table["Δ last vs authors'"]) == ["-1.00", "—", "+1.50"]
    assert list(table["authors' setting"]) == ["", "yes", ""]


# ----------------------------------------------------------------------------------------------- writers


def test_markdown_and_csv_writers(tmp_path):
    table = pd.DataFrame({"method": ["KD", "a|b"], "top-1": ["93.00 ± 3.61", "—"], "n": [3, 1]})
    data = pd.DataFrame({"method": ["kd", "x"], "last_mean": [93.0, math.nan]})
    report.write_table(table, "t", tmp_path / "tables", data=data, title="**Title**")
    csv, md = tmp_path / "tables" / "t.csv", tmp_path / "tables" / "t.md"
    lines = md.read_text().splitlines()
    assert lines[0] == "**Title**"
    assert lines[2] == "| method | top-1 | n |"
    assert lines[3] == "|:---|---:|---:|"  # text left, numbers (formatted or not) right
    assert lines[4] == "| KD | 93.00 ± 3.61 | 3 |"
    assert lines[5] == "| a\\|b | — | 1 |"
    back = pd.read_csv(csv)
    assert list(back.columns) == ["method", "last_mean"] and back.loc[0, "last_mean"] == 93.0


def test_an_empty_table_says_it_has_no_rows_and_keeps_its_missing_note(tmp_path):
    """A paired table of a study with no pair finished yet is a sentence, not a header-less grid."""
    empty = pd.DataFrame()
    empty.attrs["missing"] = ["kd seed 0 [kd-x-s0-0000000000]"]
    report.write_table(empty, "e", tmp_path)
    md = (tmp_path / "e.md").read_text()
    assert "|" not in md.split("**Incomplete")[0]
    assert "No rows yet" in md and "kd-x-s0-0000000000" in md


def test_save_figure_writes_png_and_svg(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    report.save_figure(fig, "line", tmp_path)
    plt.close(fig)
    paths = [tmp_path / "line.png", tmp_path / "line.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = paths[1].read_text()
    assert "<svg" in svg and "<dc:date>" not in svg  # no timestamp: unchanged figures write unchanged files


# --------------------------------------------------------------------------------------- curriculum tables


def _record(phase, scores, targets, pool, fraction):
    return {"phase": phase, "start_epoch": phase, "end_epoch": phase + 1, "fraction": fraction,
            "score": "max_logit", "order": "easy_first", "scores": torch.tensor(scores),
            "targets": torch.tensor(targets), "pool": torch.tensor(pool), "snapshot_test_top1": 50.0}


def test_anatomy_overlap_and_teacher_agreement_by_hand():
    targets = [0, 0, 0, 0, 1, 1, 1, 1]
    records = [_record(1, [4., 3., 2., 1., 4., 3., 2., 1.], targets, [0, 1, 4, 5], 0.5),
               _record(2, [1., 2., 3., 4., 4., 3., 2., 1.], targets, [2, 3, 4, 5], 0.5)]
    teacher = torch.tensor([4., 3., 2., 1., 1., 2., 3., 4.]).numpy()
    anatomy = experiments.CurriculumAnatomy(None, None, records, teacher, "max_logit")
    overlap = anatomy.overlap().iloc[0]
    # pools {0,1,4,5} -> {2,3,4,5}: 2 kept of 4; Jaccard 2 / 6
    assert overlap["kept"] == 2 and overlap["kept_fraction"] == pytest.approx(0.5)
    assert overlap["jaccard"] == pytest.approx(2 / 6)
    agreement = anatomy.teacher_agreement()
    # phase 1: class 0 ranks agree (rho 1), class 1 reversed (rho -1); the teacher's pool is {0,1,6,7}
    assert agreement.loc[0, "spearman_within_class"] == pytest.approx(0.0)
    assert agreement.loc[0, "pool_shared_with_teacher"] == pytest.approx(0.5)
    # phase 2: both classes reversed
    assert agreement.loc[1, "spearman_within_class"] == pytest.approx(-1.0)
    assert agreement.loc[1, "pool_shared_with_teacher"] == pytest.approx(0.0)
    phases = anatomy.phases()
    assert list(phases["pool"]) == [4, 4] and phases.loc[0, "score_mean"] == pytest.approx(2.5)


# ------------------------------------------------------------------------------------------ model costs


def test_count_macs_by_hand():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    # conv: 2 x 4 x 4 outputs x (1 input channel x 3 x 3) = 288; linear: 32 x 3 = 96
    assert experiments.count_macs(model, (1, 4, 4)) == 288 + 96
    grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2)
    assert experiments.count_macs(grouped, (4, 5, 5)) == 4 * 5 * 5 * 2 * 9


def test_resnet20_option_a_matches_he_et_al():
    # He et al. (2016), Table 6: ResNet-20 has 0.27 M parameters (CIFAR-10, option-A shortcuts)
    cost = experiments.model_cost("resnet20", (3, 32, 32), 10, shortcut="pad")
    assert abs(cost["params_m"] - 0.27) < 0.005
    # 3x3 convolutions at 32x32 (16 ch), 16x16 (32 ch), 8x8 (64 ch), 6 layers each, plus stem and classifier:
    # stem 32*32*16*3*9; stage 1: 6 * 32*32*16*16*9; stage 2: 16*16*32*16*9 + 5 * 16*16*32*32*9;
    # stage 3: 8*8*64*32*9 + 5 * 8*8*64*64*9; classifier 64*10
    by_hand = (32 * 32 * 16 * 27 + 6 * 32 * 32 * 16 * 16 * 9 + 16 * 16 * 32 * 16 * 9 + 5 * 16 * 16 * 32 * 32 * 9
               + 8 * 8 * 64 * 32 * 9 + 5 * 8 * 8 * 64 * 64 * 9 + 64 * 10)
    assert cost["macs_m"] * 1e6 == pytest.approx(by_hand)


def test_paired_long_by_hand_and_the_paired_figure_names_its_spread():
    import pandas as pd

    runs = pd.DataFrame({"method": ["a", "b", "a", "b", "a"], "seed": [0, 0, 1, 1, 2], "epochs": [10] * 5,
                         "last_top1": [70.0, 68.5, 71.0, 71.5, 99.0]})
    long = report.paired_long(runs, [("a − b", "a", "b")], by="epochs")
    assert long[["seed", "diff"]].values.tolist() == [[0, 1.5], [1, -0.5]]  # seed 2 has no partner
    fig = report.plot_paired(long, "test")
    title = fig.axes[0].get_title()
    assert "mean ± std" in title and "2 seeds" in title
    # the one budget there is so far is named on the axis; one seed is "1 seed"
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["a − b (10)"]
    one = report.plot_paired(long[long["seed"] == 0], "test")
    assert "(1 seed)" in one.axes[0].get_title()
    assert not long["crosses"].any() and "×" not in title  # no device column: nothing is marked


def test_paired_figure_marks_the_pairs_that_cross_device_kinds():
    """Seed 1's two runs trained on different device kinds: its pair is flagged, drawn as a cross (an "X"
    marker beside the filled points of the others), and the title says what a cross means."""
    import pandas as pd
    from matplotlib.collections import PathCollection

    runs = pd.DataFrame({"method": ["a", "b"] * 3, "seed": [0, 0, 1, 1, 2, 2], "epochs": [10] * 6,
                         "last_top1": [70.0, 68.5, 71.0, 71.5, 72.0, 70.0],
                         "device": ["CPU: x", "CPU: x", "GPU: y", "CPU: x", "CPU: x", "CPU: x"]})
    long = report.paired_long(runs, [("a − b", "a", "b")])
    assert long[["seed", "crosses"]].values.tolist() == [[0, False], [1, True], [2, False]]
    fig = report.plot_paired(long, "test")
    assert "× = a pair trained on two device kinds" in fig.axes[0].get_title()
    sizes = [len(c.get_offsets()) for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert 2 in sizes and 1 in sizes  # the two same-device pairs, then the crossing one


def test_flagged_runs_get_a_column_only_when_there_are_some():
    import pandas as pd

    runs = pd.DataFrame({"dataset": ["d"] * 4, "teacher": ["t"] * 4, "student": ["s"] * 4, "method": ["kd"] * 2 + ["slkd"] * 2,
                         "seed": [0, 1, 0, 1], "last_top1": [90.0, 91.0, 10.0, 92.0], "best_top1": [90.0, 91.0, 50.0, 92.0],
                         "flags": ["", "", "chance_level", ""]})
    summary = report.summarize(runs, ["dataset", "teacher", "student", "method"])
    assert summary["flagged"].tolist() == [0, 1]
    table = report.format_summary(summary, ["method"])
    assert table["flagged runs"].tolist() == ["", "1 ⚠"]
    clean = report.format_summary(report.summarize(runs.assign(flags=""), ["dataset", "teacher", "student", "method"]),
                                  ["method"])
    assert "flagged runs" not in clean


def test_health_flags_by_hand():
    from kdrepro.engine import health_flags

    rows = [{"train_loss": 2.0, "test_top1": 50.0}, {"train_loss": 1.0, "test_top1": 60.0}]
    assert health_flags(rows, 10) == []
    assert health_flags(rows[:1] + [{"train_loss": 250.0, "test_top1": 14.9}], 10) == ["chance_level", "loss_exploded"]
    assert health_flags(rows[:1] + [{"train_loss": 199.0, "test_top1": 15.1}], 10) == []


def _two_pairs() -> pd.DataFrame:
    """cifar10 with two teacher-student pairs (as the paper profile has), KD and SLKD, seeds 0-1."""
    rows = []
    for teacher, offset in (("resnet110", 0.0), ("resnet56", 10.0)):
        for method, gain in (("kd", 0.0), ("slkd", 1.0)):
            for seed in (0, 1):
                rows.append({"dataset": "cifar10", "teacher": teacher, "student": "resnet20", "method": method,
                             "seed": seed, "last_top1": 60.0 + offset + gain + seed, "wall_seconds": 100.0 + offset,
                             "train_seconds": 90.0 + offset, "iterations": 1000})
    return pd.DataFrame(rows)


def test_two_pairs_per_data_set_stay_apart_in_paired_figures_and_timings():
    runs = _two_pairs()
    long = report.paired_long(runs, [("SLKD − KD", "slkd", "kd")], by="dataset")
    assert sorted(set(long["group"])) == ["cifar10: resnet110 → resnet20", "cifar10: resnet56 → resnet20"]
    assert long["diff"].tolist() == [1.0] * 4  # each seed paired within its own pair
    timing = report.timing_table(runs, ["dataset", "method"])
    assert list(timing.columns[:4]) == ["dataset", "teacher", "student", "method"] and len(timing) == 4
    one_pair = runs[runs["teacher"] == "resnet56"]
    assert "teacher" not in report.timing_table(one_pair, ["dataset", "method"]).columns  # unchanged when not mixed
    assert set(report.paired_long(one_pair, [("d", "slkd", "kd")], by="dataset")["group"]) == {"cifar10"}
    with pytest.raises(ValueError, match=r"seed\(s\) \[0\] appear twice"):
        report.paired_long(pd.concat([one_pair, one_pair.iloc[:1]]), [("d", "slkd", "kd")], by="dataset")


def test_profiles_without_budgets_or_ablations_get_empty_tables_and_a_placeholder_figure():
    empty = report.summarize(pd.DataFrame(columns=["method", "variant", "epochs", "last_top1", "best_top1"]),
                             ["method", "variant", "epochs"])
    assert empty.empty and report.format_budgets(empty).empty
    reference_only = pd.DataFrame([{"axis": "reference", "variant": "kd", "default": False, "last_mean": 60.0,
                                    "last_std": 0.0, "best_mean": 60.0, "best_std": 0.0, "seeds": 1}])
    fig = report.plot_ablations(reference_only)
    assert "no ablation axis" in fig.axes[0].texts[0].get_text()


def test_a_repeated_seed_is_refused(tmp_path):
    with pytest.raises(experiments.ProfileError, match=r"each seed once"):
        experiments.Experiment("smoke", results_dir=tmp_path, seeds=[0, 0])


def test_figures_with_jittered_seed_points_are_the_same_whatever_ran_before(tmp_path):
    """seaborn jitters strip plots with NumPy's global generator; the figures of the same runs must come out
    byte for byte the same (make reproduce compares them with the committed ones)."""
    import numpy as np

    runs = _two_pairs()
    long = report.paired_long(runs, [("SLKD − KD", "slkd", "kd")], by="dataset")
    summary = report.summarize(runs.assign(best_top1=runs["last_top1"]), ["dataset", "teacher", "student", "method"])

    def render(draws: int) -> tuple[bytes, ...]:
        np.random.seed(draws)
        np.random.uniform(size=draws)  # whatever ran before in the process
        folder = tmp_path / str(draws)
        report.save_figure(report.plot_paired(long, "t"), "paired", folder)
        report.save_figure(report.plot_methods(summary, runs.assign(best_top1=runs["last_top1"])), "methods", folder)
        return tuple((folder / f).read_bytes() for f in ("paired.svg", "paired.png", "methods.svg", "methods.png"))

    first = render(3)
    assert render(11) == first
    # and the caller's generator is left as it was: the same next draw with or without a figure in between
    np.random.seed(5)
    render_free = np.random.uniform()
    np.random.seed(5)
    report.plot_paired(long, "t")
    assert np.random.uniform() == render_free


def test_compute_by_device_by_hand():
    """Three runs on two device kinds: 1.5 h + 0.5 h on the CPU, 0.25 h on the GPU; the total row sums all."""
    runs = pd.DataFrame({"device": ["CPU: x", "GPU: y", "CPU: x"], "epochs": [300, 100, 80],
                         "wall_seconds": [5400.0, 900.0, 1800.0]})
    runs.attrs["missing"] = ["kd resnet8 seed 3 [kd-abc]"]
    out = report.compute_by_device(runs)
    assert out["device"].tolist() == ["CPU: x", "GPU: y", "all"]
    assert out["runs"].tolist() == [2, 1, 3] and out["epochs"].tolist() == [380, 100, 480]
    assert out["run_hours"].tolist() == pytest.approx([2.0, 0.25, 2.25])
    shown = report.format_compute(out)
    assert shown.iloc[-1].tolist() == ["**all devices**", "**3**", "**480**", "**2.2**"]
    assert "1 run(s)" in report.missing_note(shown)
    assert report.compute_by_device(runs.iloc[:0]).empty
