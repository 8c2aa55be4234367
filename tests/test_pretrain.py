"""Training a profile's runs in parallel workers (the local executor, kdrepro.executors), run locks, the per-axis and budget
seeds of a profile, and the teacher scores that notebook 06 keeps beside the teacher run."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess

import pytest
import torch
import yaml

import kdrepro  # noqa: F401  (the torchvision guard)
from kdrepro import experiments, report
from kdrepro.cache import cache_group, cache_ready, group_marker, mark_ready
from kdrepro.executors import (LocalExecutor, RunsFailedError, cache_build_threads, cache_built, launch, plan_jobs,
                               uses_logit_cache)
from kdrepro.experiments import Experiment, ProfileError
from kdrepro.runs import RunLockedError, RunStore


def train_locally(configs, results, jobs=1, launcher="process", poll=2.0, **kwargs):
    """Every unfinished run of ``configs`` trained by the local executor (``kdrepro reproduce --jobs``)."""
    return launch(configs, results, LocalExecutor(jobs, launcher=launcher, poll=poll), **kwargs)


def _profile(tmp_path, **changes):
    data = yaml.safe_load((experiments.PROFILE_DIR / "smoke.yaml").read_text())
    data.update(changes)
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return experiments.load_profile(path)


# ------------------------------------------------------------------------------------------ profile keys


def test_axis_and_budget_seeds_and_methods_shape_the_plans(tmp_path):
    prof = _profile(tmp_path, ablation_seeds=[0], axis_seeds={"order": [0, 1, 2]}, budget_seeds=[3, 4],
                    budget_methods=["vanilla", "kd", "slkd"])
    exp = Experiment(prof, results_dir=tmp_path)
    ablations = exp.plan("ablations")
    seeds_by_axis = {}
    for p in ablations:
        seeds_by_axis.setdefault(p.labels["axis"], set()).add(p.config.seed)
    assert seeds_by_axis.pop("order") == {0, 1, 2}
    assert seeds_by_axis.pop("reference") == {0}
    assert all(s == {0} for s in seeds_by_axis.values()), seeds_by_axis
    # each seed's easy-first run is the authors' default of that seed
    defaults = [p for p in ablations if p.labels["axis"] == "order" and p.labels["default"]]
    assert sorted(p.config.seed for p in defaults) == [0, 1, 2]
    assert {p.labels["variant"] for p in defaults} == {"easy_first"}

    budgets = exp.plan("budgets")
    assert {p.config.seed for p in budgets} == {3, 4}
    methods = {(p.labels["method"], p.config.method) for p in budgets}
    assert methods == {("vanilla", "ce"), ("kd", "kd"), ("slkd", "slkd")}
    assert all(p.config.teacher is None for p in budgets if p.config.method == "ce")
    assert len(budgets) == len(prof.budgets) * 2 * 3
    assert "order: [0, 1, 2]; budgets: [3, 4]" in repr(exp)
    # the seeds parameter replaces all of them
    exp7 = Experiment(prof, results_dir=tmp_path, seeds=[7])
    assert {p.config.seed for study in ("ablations", "budgets") for p in exp7.plan(study)} == {7}


def test_profiles_without_the_new_keys_plan_as_before():
    exp = Experiment("smoke", results_dir="unused")
    assert exp.budget_seeds == exp.ablation_seeds and not exp.axis_seeds
    assert {p.labels["method"] for p in exp.plan("budgets")} == {"kd", "slkd"}
    assert "(ablations and budgets: [0])" in repr(exp)  # the stored notebooks print this line


@pytest.mark.parametrize("changes, message", [
    ({"axis_seeds": {"colour": [0]}}, "axis_seeds: 'colour' is not one of the profile's ablation axes"),
    ({"axis_seeds": {"order": [0, 0]}}, "axis_seeds.order has duplicates"),
    ({"axis_seeds": {"order": 3}}, "axis_seeds.order must be a non-empty list of integers"),
    ({"budget_methods": ["kd", "fitnet"]}, "budget_methods: 'fitnet' is not a method"),
    ({"budget_seeds": []}, "budget_seeds must be a non-empty list of integers"),
])
def test_bad_new_keys_name_the_problem(tmp_path, changes, message):
    with pytest.raises(ProfileError, match=message):
        _profile(tmp_path, **changes)


def test_all_configs_lists_every_planned_run_once_with_teachers_first(tmp_path):
    exp = Experiment(_profile(tmp_path, budget_methods=["vanilla", "kd", "slkd"]), results_dir=tmp_path)
    configs = exp.all_configs()
    ids = [c.run_id for c in configs]
    assert len(ids) == len(set(ids))
    planned = {p.config.run_id for study in experiments.STUDIES for p in exp.plan(study)}
    teachers = {c.teacher.run_id for c in configs if c.teacher is not None}
    assert set(ids) == planned | teachers
    for i, c in enumerate(configs):
        if c.teacher is not None and c.method != "ce":
            assert ids.index(c.teacher.run_id) < i


# ----------------------------------------------------------------------------------------------- planning


def test_plan_jobs_waits_for_the_teacher_and_for_one_cache_builder(tmp_path):
    exp = Experiment(_profile(tmp_path), results_dir=tmp_path)
    pair, ds = exp.profile.pairs[0], exp.profile.datasets[0]
    kd = [exp.student_config(ds, pair, "kd", s) for s in (0, 1)]
    fitnet = exp.student_config(ds, pair, "kd", 0, losses={"fitnet": {"weight": 100.0}, "kd": {"weight": 0.0}})
    live = exp.student_config(ds, pair, "kd", 2, teacher_cache=False)
    vanilla = exp.student_config(ds, pair, "ce", 0, epochs=20)
    teacher = kd[0].teacher
    jobs = plan_jobs([teacher, *kd, fitnet, live, vanilla], exp.store)
    by_id = {j.cfg.run_id: j for j in jobs}
    assert by_id[teacher.run_id].needs == set() and by_id[vanilla.run_id].needs == set()
    assert by_id[kd[0].run_id].needs == {teacher.run_id} and by_id[kd[0].run_id].builds_cache
    assert by_id[kd[1].run_id].needs == {teacher.run_id, kd[0].run_id}
    assert by_id[fitnet.run_id].needs == {teacher.run_id}  # feature losses use the live teacher
    assert by_id[live.run_id].needs == {teacher.run_id}
    assert [uses_logit_cache(c) for c in (kd[0], fitnet, live, vanilla)] == [True, False, False, False]
    order = [j.cfg.run_id for j in jobs]
    assert order[:2] == [teacher.run_id, kd[0].run_id]  # the teacher, then the cache builder
    assert order[2] == vanilla.run_id  # then the longest run (20 epochs against the others' 7)


def test_plan_jobs_starts_equal_length_runs_seed_by_seed(tmp_path):
    """Five KD and five SLKD seeds of equal length, given method by method (as ``all_configs`` lists them),
    start as KD 0, SLKD 0, KD 1, SLKD 1, ...: an interrupted training leaves whole pairs."""
    exp = Experiment(_profile(tmp_path), results_dir=tmp_path)
    pair, ds = exp.profile.pairs[0], exp.profile.datasets[0]
    kd = [exp.student_config(ds, pair, "kd", s) for s in range(5)]
    slkd = [exp.student_config(ds, pair, "slkd", s) for s in range(5)]
    teacher = kd[0].teacher
    order = [j.cfg for j in plan_jobs([teacher, *kd, *slkd], exp.store)]
    assert order[0].run_id == teacher.run_id and order[1].run_id == kd[0].run_id  # teacher, cache builder
    expected = [(c.method, c.seed) for c in (kd[0], slkd[0], kd[1], slkd[1], kd[2], slkd[2], kd[3], slkd[3],
                                             kd[4], slkd[4])]
    assert [(c.method, c.seed) for c in order[1:]] == expected


def test_a_cache_group_whose_file_exists_waits_for_no_builder(tmp_path):
    """Runs reading one teacher's logit cache wait for the run that builds it only while the file is not
    there: not at all when a marker names an existing file, and no longer once the builder has written it."""
    exp = Experiment(_profile(tmp_path), results_dir=tmp_path)
    pair, ds = exp.profile.pairs[0], exp.profile.datasets[0]
    kd = [exp.student_config(ds, pair, "kd", s) for s in (0, 1)]
    slkd = exp.student_config(ds, pair, "slkd", 0)
    teacher = kd[0].teacher
    other_data = exp.student_config(ds, pair, "kd", 0, hflip=not kd[0].hflip)  # other views: another file
    assert cache_group(other_data) != cache_group(kd[0]) and cache_group(slkd) == cache_group(kd[0])

    jobs = {j.run_id: j for j in plan_jobs([teacher, *kd, slkd], exp.store)}
    assert jobs[kd[0].run_id].builds_cache and jobs[kd[1].run_id].cache_builder == kd[0].run_id
    waiting = jobs[slkd.run_id]
    assert not cache_built(waiting) and waiting.needs == {teacher.run_id, kd[0].run_id}

    marker = group_marker(exp.store.cache_dir, cache_group(kd[0]))
    mark_ready(marker, exp.store.cache_dir / "teacher-logits-x.pt")  # a marker naming a file not (yet) there
    assert not cache_ready(marker) and not cache_built(waiting)
    assert jobs[kd[0].run_id].builds_cache == plan_jobs([teacher, *kd], exp.store)[1].builds_cache is True

    (exp.store.cache_dir / "teacher-logits-x.pt").write_bytes(b"logits")
    assert cache_built(waiting) and waiting.needs == {teacher.run_id}  # the builder need not finish first
    assert not cache_built(waiting)  # done once
    again = {j.run_id: j for j in plan_jobs([teacher, *kd, slkd, other_data], exp.store)}
    assert not any(j.builds_cache for j in again.values() if j.run_id != other_data.run_id)
    assert again[kd[1].run_id].needs == again[slkd.run_id].needs == {teacher.run_id}
    assert again[other_data.run_id].builds_cache  # another group: another file
    for bad in ("{", '{"file": "../x.pt"}', '{"file": 3}', "[]"):
        marker.write_text(bad)
        assert not cache_ready(marker), bad


def test_a_cache_builder_gets_the_idle_workers_cores_only_while_all_other_runs_wait_for_it(tmp_path):
    exp = Experiment(_profile(tmp_path), results_dir=tmp_path)
    pair, ds = exp.profile.pairs[0], exp.profile.datasets[0]
    kd = [exp.student_config(ds, pair, "kd", s, num_threads=1) for s in (0, 1)]
    slkd = exp.student_config(ds, pair, "slkd", 0, num_threads=1)
    vanilla = exp.student_config(ds, pair, "ce", 0, num_threads=1)
    teacher = kd[0].teacher
    exp.store.run(teacher, log=lambda m: None)  # in the store: nobody waits for the teacher
    jobs = {j.run_id: j for j in plan_jobs([*kd, slkd, vanilla], exp.store)}
    builder, others = jobs[kd[0].run_id], [jobs[kd[1].run_id], jobs[slkd.run_id]]
    assert builder.builds_cache
    assert cache_build_threads(builder, others, busy=0, workers=2) == 2
    assert cache_build_threads(builder, others, busy=0, workers=4) == 4
    assert cache_build_threads(builder, [], busy=0, workers=3) == 3
    assert cache_build_threads(builder, others, busy=1, workers=2) is None  # a core is in use
    assert cache_build_threads(builder, [*others, jobs[vanilla.run_id]], busy=0, workers=2) is None  # could run
    assert cache_build_threads(builder, others, busy=0, workers=1) is None
    assert cache_build_threads(others[0], [builder], busy=0, workers=2) is None  # not a builder
    two = plan_jobs([exp.student_config(ds, pair, "kd", 0, num_threads=2)], exp.store)[0]
    assert cache_build_threads(two, [], busy=0, workers=3) == 6  # each worker's share is num_threads cores
    unpinned = plan_jobs([exp.student_config(ds, pair, "kd", 0, num_threads=None)], exp.store)[0]
    assert unpinned.cfg.num_threads is None and cache_build_threads(unpinned, [], busy=0, workers=2) is None
    assert kd[0].config.with_overrides(cache_threads=2).run_id == kd[0].run_id  # runtime only


def test_cache_threads_apply_to_the_cache_build_only(tmp_path, monkeypatch):
    from kdrepro import cache as cache_module

    exp = Experiment(_profile(tmp_path), results_dir=tmp_path)
    pair, ds = exp.profile.pairs[0], exp.profile.datasets[0]
    cfg = exp.student_config(ds, pair, "kd", 0, num_threads=1, cache_threads=2, epochs=1)
    seen = []
    build = cache_module.TeacherLogitCache.build.__func__

    def spy(cls, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return build(cls, *args, **kwargs)

    monkeypatch.setattr(cache_module.TeacherLogitCache, "build", classmethod(spy))
    before = torch.get_num_threads()
    try:
        result = exp.store.run(cfg, log=lambda m: None)
        assert seen == [2] and result.summary["environment"]["threads"] == 1  # built with 2, trained with 1
    finally:
        torch.set_num_threads(before)


# -------------------------------------------------------------------------------------------------- locks


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_run_locked_by_a_live_process_is_refused_and_a_stale_lock_taken_over(tmp_path):
    exp = Experiment("smoke", results_dir=tmp_path)
    cfg = exp.student_config("digits", exp.profile.pairs[0], "ce", 0, epochs=1)
    store = RunStore(tmp_path)
    lock = store.lock_path(cfg)
    lock.parent.mkdir(parents=True)
    lock.write_text(f"{socket.gethostname()} {subprocess.os.getpid()}\n")  # this (live) process, 0.1 format
    with pytest.raises(RunLockedError, match=rf"run {cfg.run_id} is being trained by process \d+"):
        store.run(cfg, wait=0)
    with pytest.raises(RunLockedError, match=r"waited 1 s"):
        store.run(cfg, wait=1)
    assert not store.run_dir(cfg).exists()
    lock.write_text(f"{socket.gethostname()} {_dead_pid()}\n")  # a killed process
    result = store.run(cfg)
    assert result.summary["epochs"] == 1 and not lock.exists()


def test_two_processes_that_both_saw_a_lock_stale_do_not_both_get_it(tmp_path, monkeypatch):
    """B judges a dead holder's lock stale; before B moves it aside, A takes it over and writes its own.
    B must then see that what it moved is A's fresh lock, put it back and stand aside."""
    from kdrepro import runs

    store = RunStore(tmp_path)
    lock = tmp_path / "runs" / "x.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "token": "dead"}))
    real_owner, taken = runs.lock_owner, {}

    def b_checks_then_a_takes_over(path, stale_after=None):
        seen = real_owner(path, stale_after)  # B: stale
        monkeypatch.setattr(runs, "lock_owner", real_owner)
        taken["a"] = store._try_lock(lock)  # A, in between
        return seen

    monkeypatch.setattr(runs, "lock_owner", b_checks_then_a_takes_over)
    token_b = store._try_lock(lock)
    assert taken["a"] is not None and token_b is None
    assert json.loads(lock.read_text())["token"] == taken["a"]  # A's lock is in place
    assert not list(lock.parent.glob("*.stale-*"))


def test_a_short_stale_timeout_renews_the_lock_in_time_and_bad_timeouts_are_one_line(tmp_path, monkeypatch):
    from kdrepro.config import ConfigError

    assert RunStore(tmp_path, stale_after=10).heartbeat <= 10 / 3
    assert RunStore(tmp_path).heartbeat == 30.0
    for bad in ("5m", "nan", "-1", "0"):
        monkeypatch.setenv("KDREPRO_LOCK_STALE", bad)
        with pytest.raises(ConfigError, match=r"KDREPRO_LOCK_STALE=.*must be a positive number of seconds"):
            RunStore(tmp_path)
    monkeypatch.setenv("KDREPRO_LOCK_STALE", "60")
    assert RunStore(tmp_path).stale_after == 60.0


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_local_executor_with_two_workers_equals_training_one_run_at_a_time(tmp_path):
    exp = Experiment("smoke", results_dir=tmp_path / "parallel")
    pair = exp.profile.pairs[0]
    configs = [exp.student_config("digits", pair, m, s) for m, s in
               (("kd", 0), ("kd", 1), ("slkd", 0), ("ce", 0))]
    configs.insert(0, configs[0].teacher)
    lines = []
    trained = train_locally(configs, tmp_path / "parallel", jobs=2, logs_dir=tmp_path / "logs", log=lines.append)
    assert sorted(trained) == sorted(c.run_id for c in configs)
    assert len(list((tmp_path / "parallel" / "cache").glob("teacher-logits-*.pt"))) == 1
    builds = [c.run_id for c in configs if "logit cache built" in (tmp_path / "logs" / f"{c.run_id}.log").read_text()]
    assert builds == [configs[1].run_id]  # one builder; the other cached runs hit its file
    cache_file, = (tmp_path / "parallel" / "cache").glob("teacher-logits-*.pt")
    marker = group_marker(tmp_path / "parallel" / "cache", cache_group(configs[1]))
    assert json.loads(marker.read_text()) == {"file": cache_file.name}  # the builder said where the file is
    assert not list((tmp_path / "parallel" / "runs").glob("*.lock"))
    assert train_locally(configs, tmp_path / "parallel", jobs=2, log=lines.append) == []  # all in the store

    # one at a time, in a second store that starts from the same teacher (copied, not retrained)
    sequential = RunStore(tmp_path / "sequential")
    parallel = RunStore(tmp_path / "parallel")
    shutil.copytree(parallel.run_dir(configs[0]), sequential.run_dir(configs[0]))
    for cfg in configs[2:4]:  # a KD run that read the cache another worker built, and an SLKD run
        a = [json.loads(x) for x in (parallel.run_dir(cfg) / "metrics.jsonl").read_text().splitlines()]
        b = sequential.run(cfg).metrics()
        assert [r["test_top1"] for r in a] == [r["test_top1"] for r in b], cfg.run_id
        assert [r["train_loss"] for r in a] == pytest.approx([r["train_loss"] for r in b], rel=1e-5)


def test_local_executor_reports_a_failed_run_and_skips_its_dependants(tmp_path):
    from kdrepro.config import RunConfig

    exp = Experiment("smoke", results_dir=tmp_path)
    pair = exp.profile.pairs[0]
    good = exp.student_config("digits", pair, "kd", 0)
    # a teacher whose training fails (a crop padding wider than digits' 8-pixel side, which only the trainer
    # can check; a diverging teacher is a finished run, flagged): its student cannot run
    bad = RunConfig.from_dict({**good.to_dict(), "teacher": {**pair.teacher, "crop_padding": 9, "epochs": 1}}).resolved()
    vanilla = exp.student_config("digits", pair, "ce", 0, epochs=1)
    lines = []
    with pytest.raises(RunsFailedError, match="runs that did not finish") as err:
        train_locally([bad.teacher_config(), bad, vanilla], tmp_path, jobs=2, log=lines.append, poll=0.2)
    assert bad.teacher_config().run_id in str(err.value) and bad.run_id in str(err.value)
    assert any("skipped" in line and bad.run_id in line for line in lines)
    assert RunStore(tmp_path).status(RunStore(tmp_path).run_dir(vanilla)) == "finished"



def test_local_executor_skips_the_students_of_a_diverged_teacher(tmp_path):
    """A teacher whose loss turns non-finite (lr 1e6) is recorded as diverged (a finished run,
    docs/run-store.md); its student is not started and is named among the runs that did not finish."""
    from kdrepro.config import RunConfig

    exp = Experiment("smoke", results_dir=tmp_path)
    pair = exp.profile.pairs[0]
    good = exp.student_config("digits", pair, "kd", 0)
    bad = RunConfig.from_dict({**good.to_dict(), "teacher": {**pair.teacher, "lr": 1e6, "epochs": 1}}).resolved()
    lines = []
    with pytest.raises(RunsFailedError, match="runs that did not finish") as err:
        train_locally([bad.teacher_config(), bad], tmp_path, jobs=2, log=lines.append, poll=0.2)
    teacher = bad.teacher_config().run_id
    assert bad.run_id in str(err.value) and f"{teacher} diverged" in str(err.value)
    assert any("skipped" in line and bad.run_id in line for line in lines)
    store = RunStore(tmp_path)
    assert store.load(teacher).summary["flags"] == ["diverged"]
    assert store.status(store.run_dir(bad)) == "new"  # never started

# ---------------------------------------------------------------------------------------- teacher scores


@pytest.mark.slow
def test_anatomy_keeps_the_teachers_scores_beside_its_run(tmp_path):
    from kdrepro.data import load_dataset
    from kdrepro.models import create_model

    exp = Experiment("smoke", results_dir=tmp_path)
    first = exp.anatomy()
    tcfg = first.result.config.teacher_config()
    tdir = RunStore(tmp_path).run_dir(tcfg)
    train = load_dataset("digits", train=True)
    teacher = create_model(tcfg.model, train.num_classes, in_channels=1, weights=str(tdir / "weights.pt")).double()
    teacher.eval()
    with torch.no_grad():  # independent: float64 forward of the normalised images, max logit
        expected = teacher(train.normalize(train.images).double()).max(dim=1).values
    assert torch.allclose(torch.as_tensor(first.teacher_scores).double(), expected, atol=1e-4)
    assert (tdir / "scores" / "max_logit.pt").exists()

    (tdir / "weights.pt").unlink()  # as in a clone: weights stay out of git
    again = exp.anatomy()
    assert (again.teacher_scores == first.teacher_scores).all()
    (tdir / "scores" / "max_logit.pt").unlink()
    with pytest.raises(FileNotFoundError, match="scores .* and weights .* are both missing"):
        exp.anatomy()


# ---------------------------------------------------------------------------------------------- report


def test_paired_variants_by_hand():
    import pandas as pd

    rows = [("order", "easy_first", 0, 60.0, 100), ("order", "easy_first", 1, 62.0, 100),
            ("order", "hard_first", 0, 59.0, 100), ("order", "hard_first", 1, 63.5, 100),
            ("order", "random", 1, 61.0, 100), ("score", "margin", 0, 99.0, 100)]
    runs = pd.DataFrame(rows, columns=["axis", "variant", "seed", "last_top1", "iterations"])
    runs[["dataset", "teacher", "student"]] = ["d", "t", "s"]
    paired = report.paired_variants(runs, "order", "easy_first").set_index("variant")
    # hard - easy: seed 0: -1.0, seed 1: +1.5 -> mean 0.25, sample std sqrt(((-1.25)^2 + 1.25^2) / 1)
    assert paired.at["hard_first", "diff_mean"] == pytest.approx(0.25)
    assert paired.at["hard_first", "diff_std"] == pytest.approx((2 * 1.25 ** 2) ** 0.5)
    assert paired.at["hard_first", "wins"] == 1 and paired.at["hard_first", "seeds"] == 2
    assert paired.at["random", "diff_mean"] == pytest.approx(-1.0) and paired.at["random", "seeds"] == 1
    table = report.format_paired_variants(paired.reset_index())
    assert list(table["variant − baseline (paired)"]) == ["0.25 ± 1.77", "-1.00"]


def test_ablation_delta_uses_the_default_of_the_same_axis():
    import pandas as pd

    summary = pd.DataFrame({
        "axis": ["score", "score", "order", "order"], "variant": ["max_logit", "margin", "easy_first", "random"],
        "default": [True, False, True, False], "last_mean": [60.0, 61.0, 62.0, 61.5],
        "last_std": [0.0, 0.0, 1.0, 1.0], "best_mean": [60.0, 61.0, 62.0, 61.5], "best_std": [0.0] * 4,
        "seeds": [1, 1, 3, 3]})
    table = report.format_ablations(summary)
    assert list(table["Δ last vs authors'"]) == ["—", "+1.00", "—", "-0.50"]


def test_budget_figure_has_one_line_per_method():
    import pandas as pd

    summary = pd.DataFrame({"method": ["vanilla", "kd", "slkd"] * 2, "variant": ["20 epochs"] * 3 + ["60 epochs"] * 3,
                            "epochs": [20] * 3 + [60] * 3, "iterations": [800, 800, 600, 2400, 2400, 1800],
                            "last_mean": [60, 62, 61, 70, 72, 71.5], "last_std": [1.0] * 6, "seeds": [3] * 6})
    fig = report.plot_budgets(summary)
    lines = [c.lines[0] for c in fig.axes[0].containers]  # each errorbar's data line
    assert len(lines) == 3
    assert sorted(c.get_label() for c in fig.axes[0].containers) == \
        ["KD (mean ± std, 3 seeds)", "SLKD (mean ± std, 3 seeds)", "vanilla student (mean ± std, 3 seeds)"]
    assert sorted(tuple(l.get_xdata()) for l in lines) == [(600, 1800), (800, 2400), (800, 2400)]
    # only the markers are measured: the segments between budgets are dashed and called interpolation
    ax = fig.axes[0]
    dashed = [l for l in ax.get_lines() if l.get_linestyle() == "--" and len(l.get_xdata()) == 2]
    assert len(dashed) == 3 and all(l.get_label().startswith("_") for l in dashed)
    assert any("interpolation" in t.get_text() for t in ax.get_legend().get_texts())
    lo, hi = ax.get_ylim()
    assert hi - lo >= report.MIN_SPAN  # 60-72 % would otherwise fill the axis
