"""What the figures and timing tables show: devices kept apart, means with bands for overlapping curves,
legends outside the data, a class legend on class-coloured scatters, outlier methods on their own scale."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kdrepro import experiments, report  # noqa: E402


def test_run_device_names_the_kind_and_model():
    env = lambda **kw: {"environment": kw}  # noqa: E731
    assert experiments.run_device(env(device="cuda", device_name="NVIDIA H200")) == "GPU: NVIDIA H200"
    assert experiments.run_device(env(device="cpu", device_name="Intel(R) Xeon(R) Processor")) == "CPU: Intel Xeon"
    assert experiments.run_device(env(device="cpu", device_name="cpu")) == "CPU: model not recorded"
    assert experiments.run_device({}) == "CPU: model not recorded"
    # a CPU's model (summaries record it since two 'AMD EPYC' machines rounded differently) makes another kind
    assert experiments.run_device(env(device="cpu", device_name="AMD EPYC", cpu_model="family 25 model 1 avx2")) \
        == "CPU: AMD EPYC (family 25 model 1 avx2)"
    assert experiments.run_device(env(device="cpu", device_name="AMD EPYC", cpu_model="unknown")) == "CPU: AMD EPYC"


def test_timing_table_never_averages_across_devices():
    """One group trained on a GPU (60 s) and on two CPUs (2,940 and 1,130 s): three rows, each its own mean
    (by hand), next to each other."""
    runs = pd.DataFrame([
        {"axis": "mse", "variant": "off", "device": "CPU: Intel Xeon", "wall_seconds": 2940.0, "train_seconds": 2900.0, "iterations": 9040},
        {"axis": "mse", "variant": "on", "device": "CPU: AMD EPYC", "wall_seconds": 1000.0, "train_seconds": 900.0, "iterations": 9040},
        {"axis": "mse", "variant": "off", "device": "GPU: NVIDIA H200", "wall_seconds": 60.0, "train_seconds": 50.0, "iterations": 9040},
        {"axis": "mse", "variant": "off", "device": "CPU: AMD EPYC", "wall_seconds": 1130.0, "train_seconds": 1000.0, "iterations": 9040},
        {"axis": "mse", "variant": "on", "device": "CPU: AMD EPYC", "wall_seconds": 1100.0, "train_seconds": 1000.0, "iterations": 9040},
    ])
    t = report.timing_table(runs, ["axis", "variant"])
    assert list(t["variant"]) == ["off", "off", "off", "on"]
    assert list(t["device"]) == ["CPU: Intel Xeon", "GPU: NVIDIA H200", "CPU: AMD EPYC", "CPU: AMD EPYC"]
    assert list(t["wall_seconds"]) == ["2940.0", "60.0", "1130.0", "1050.0"]
    assert list(t["runs"]) == [1, 1, 1, 2]


def _curves(devices):
    rows = []
    for method in ("kd", "slkd"):
        for seed, device in enumerate(devices):
            for epoch in range(1, 6):
                rows.append({"method": method, "variant": "5 epochs", "seed": seed, "device": device, "epoch": epoch,
                             "iterations": 10 * epoch, "wall_seconds": (100 if device.startswith("CPU") else 1) * epoch,
                             "test_top1": 50 + epoch + seed + (method == "slkd")})
    return pd.DataFrame(rows)


def test_efficiency_plot_has_a_wall_time_panel_per_device_and_mean_lines_with_the_legend_outside():
    fig = report.plot_efficiency(_curves(["CPU: AMD EPYC", "CPU: AMD EPYC", "GPU: NVIDIA H200"]))
    axes = fig.axes
    assert len(axes) == 3
    assert [a.get_xlabel() for a in axes[1:]] == ["wall time (s) on CPU: AMD EPYC", "wall time (s) on GPU: NVIDIA H200"]
    assert max(axes[2].get_lines()[0].get_xdata()) < 10  # the GPU panel holds only the GPU run (1 s per epoch)
    # the mean line of KD on the iterations panel: by hand, mean over seeds 0, 1, 2 of 50 + epoch + seed
    mean = [line for line in axes[0].get_lines() if line.get_linewidth() > 1][0]
    assert list(mean.get_ydata()) == pytest.approx([51 + e for e in range(1, 6)])
    legend = fig.legends[0]
    fig.canvas.draw()
    box = legend.get_window_extent()
    assert all(box.x0 >= a.get_window_extent().x1 - 1 for a in axes), "the legend overlaps a panel"


def test_ablation_legend_is_below_the_panels():
    summary = pd.DataFrame([
        {"axis": "reference", "variant": "kd", "default": False, "last_mean": 77.0, "last_std": 1.0, "seeds": 3},
        {"axis": "order", "variant": "easy_first", "default": True, "last_mean": 79.0, "last_std": 1.0, "seeds": 3},
        {"axis": "order", "variant": "hard_first", "default": False, "last_mean": 79.1, "last_std": 1.0, "seeds": 3}])
    fig = report.plot_ablations(summary)
    assert not fig.axes[0].get_legend() and fig.legends
    fig.canvas.draw()
    assert fig.legends[0].get_window_extent().y1 <= fig.axes[0].get_window_extent().y0


def test_methods_far_below_the_others_get_their_own_scale_with_the_value_written():
    rows = [(m, s, v) for m, vals in (("vanilla", (97.5, 98.0, 98.1)), ("kd", (98.0, 98.3, 98.4)),
                                       ("at", (40.0, 62.0, 80.0))) for s, v in enumerate(vals)]
    runs = pd.DataFrame([{"dataset": "digits", "teacher": "wrn_16_2", "student": "resnet8", "method": m, "seed": s,
                          "last_top1": v, "best_top1": v} for m, s, v in rows])
    summary = report.summarize(runs, ["dataset", "teacher", "student", "method"])
    assert report.outlier_methods(summary) == ["at"]
    fig = report.plot_methods(summary, runs)
    main, side = fig.axes
    assert main.get_ylim()[0] > 85, "the main panel still stretches to the outlier"
    assert side.get_title() == "own scale" and side.get_ylim()[0] < 45
    assert [t.get_text() for t in side.texts] == ["60.67 ± 20.03"]  # mean 60.67, sample std of 40, 62, 80 by hand
    assert report.outlier_methods(summary[summary["method"] != "at"]) == []


def test_more_methods_than_colours_are_named_on_the_axis():
    """Thirteen non-role methods (the palette has six colours): each method is named under its marker."""
    names = ["fitnet", "at", "dkd", "crd", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst"]
    runs = pd.DataFrame([{"dataset": "digits", "teacher": "wrn_16_2", "student": "resnet8", "method": m, "seed": s,
                          "last_top1": 97.0 + s / 10, "best_top1": 97.0} for m in ["kd", *names] for s in range(3)])
    summary = report.summarize(runs, ["dataset", "teacher", "student", "method"])
    (ax,) = fig_axes = report.plot_methods(summary, runs).axes
    assert len(fig_axes) == 1
    assert [t.get_text() for t in ax.get_xticklabels()] == ["KD", "FitNets", "AT", "DKD", "CRD", "SP", "CC", "VID",
                                                            "RKD", "PKT", "AB", "FT", "FSP", "NST"]
    few = report.plot_methods(report.summarize(runs[runs["method"].isin(["kd", "fitnet"])],
                                               ["dataset", "teacher", "student", "method"]), runs).axes[0]
    assert [t.get_text() for t in few.get_xticklabels()] == ["digits\nwrn_16_2 -> resnet8"]  # one tick per group


def test_class_coloured_scatter_has_a_class_legend():
    class Anatomy:
        dataset = type("D", (), {"classes": ["cat", "dog", "ship"]})()
        teacher_scores = torch.arange(6.0).numpy()
        teacher_score = "max_logit"
        records = [{"phase": k, "score": "max_logit", "scores": torch.arange(6.0), "targets": torch.tensor([0, 1, 2] * 2)}
                   for k in (1, 5)]

    fig = report.plot_teacher_agreement(Anatomy())
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["cat", "dog", "ship"]
