"""Profiles: every bundled profile loads and expands into valid run configs; bad profiles fail clearly.
Also the notebooks' structure and the papermill driver's argument handling (no kernel is started)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import kdrepro  # noqa: F401  (the torchvision guard, before anything imports torchvision)
from kdrepro import experiments, reproduce
from kdrepro.config import RunConfig
from kdrepro.resolution import ResolvedRun
from kdrepro.experiments import Experiment, ProfileError

BUNDLED = ("cpu", "cpu300", "demo", "paper", "smoke")
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def test_bundled_profiles_are_listed():
    assert experiments.list_profiles() == sorted(BUNDLED)


@pytest.mark.parametrize("name", BUNDLED)
def test_every_profile_expands_into_valid_run_configs(name):
    exp = Experiment(name, results_dir="unused")
    profile = exp.profile
    assert profile.name == name and profile.description and profile.hardware and profile.expected_time
    for study in experiments.STUDIES:
        planned = exp.plan(study)
        assert planned or (study == "matched" and not profile.matched_steps), f"{name}/{study} plans no runs"
        for p in planned:
            assert isinstance(p.config, ResolvedRun)
            again = RunConfig.from_dict(p.config.to_dict()).resolved()  # must not raise
            assert again.run_id == p.config.run_id
            assert p.config.dataset in profile.datasets
            expected = dict(profile.base)
            if p.labels["method"] == "teacher":  # a pair's teacher keys (e.g. its epochs) override the base
                expected.update(next(pair.teacher for pair in profile.pairs if pair.teacher_model == p.config.model))
                expected.pop("model")
            for key, value in expected.items():
                if key != "epochs" or study not in ("budgets", "matched"):
                    assert getattr(p.config, key) == (tuple(value) if isinstance(value, list) else value), key


@pytest.mark.parametrize("name", BUNDLED)
def test_students_distil_from_the_teacher_run_of_the_tables(name):
    exp = Experiment(name, results_dir="unused")
    teachers = {(p.labels["dataset"], p.labels["teacher"]): p.config.run_id
                for p in exp.plan("main") if p.labels["method"] == "teacher"}
    for study in ("kd_baselines", "main", "ablations", "budgets", "matched"):
        for p in exp.plan(study):
            if p.config.method != "ce":
                assert p.config.teacher.run_id == teachers[p.labels["dataset"], p.labels["teacher"]]
                assert p.config.teacher.seed == 0


def test_plans_cover_seeds_pairs_and_ablation_defaults():
    exp = Experiment("paper", results_dir="unused")
    main = exp.plan("main")
    students = [p for p in main if p.labels["method"] != "teacher"]
    assert len(students) == 4 * 2 * 3 * 3  # data sets x pairs x seeds x (vanilla, kd, slkd)
    assert {p.config.epochs for p in main} == {300}
    ablations = exp.plan("ablations")
    for axis in exp.profile.ablations:
        defaults = {p.labels["variant"] for p in ablations if p.labels["axis"] == axis and p.labels["default"]}
        assert len(defaults) == 1, axis  # exactly one variant of each axis is the authors' setting
    off = [p.config for p in ablations if p.labels["axis"] == "mse" and p.labels["variant"] == "off"]
    assert off and all(c.losses["mse"]["weight"] == 0.0 and "mse" not in c.terms for c in off)
    budgets = exp.plan("budgets")
    assert sorted({p.config.epochs for p in budgets}) == [100, 200, 300]
    assert {p.config.teacher.epochs for p in budgets} == {300}  # the budget is the student's only


def test_smoke_profile_is_deterministic_for_nbval():
    base = experiments.load_profile("smoke").base
    assert base["num_threads"] == 1 and base["progress"] is False


def test_seeds_parameter_replaces_the_profiles_seeds():
    exp = Experiment("demo", results_dir="unused", seeds=[7])
    assert {p.config.seed for p in exp.plan("main") if p.labels["method"] != "teacher"} == {7}
    assert {p.config.seed for p in exp.plan("ablations")} == {7}
    with pytest.raises(ProfileError, match="seeds must be"):
        Experiment("demo", seeds=3)


def test_runtime_parameters_reach_every_run_but_not_the_run_id():
    a = Experiment("smoke", results_dir="unused")
    b = Experiment("smoke", results_dir="unused", device="cpu", data_root="/somewhere")
    for pa, pb in zip(a.plan("main"), b.plan("main")):
        assert pb.config.device == "cpu" and pb.config.data_root == "/somewhere"
        assert pa.config.run_id == pb.config.run_id


# ---------------------------------------------------------------------------------------------- bad input


def test_unknown_profile_name_lists_the_available_ones():
    with pytest.raises(ProfileError, match=r"unknown profile 'nope'; available: cpu, cpu300, demo, paper, smoke"):
        experiments.load_profile("nope")


def _write(tmp_path, **changes):
    data = yaml.safe_load((experiments.PROFILE_DIR / "smoke.yaml").read_text())
    data.update(changes)
    data = {k: v for k, v in data.items() if v is not None}
    path = tmp_path / f"{data.get('name', 'x')}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"colour": "red"}, r"unknown key\(s\) \['colour'\]"),
    ({"seeds": None}, r"missing required key\(s\) \['seeds'\]"),
    ({"seeds": [0, "1"]}, "seeds must be a non-empty list of integers"),
    ({"datasets": ["mnist"]}, "datasets: 'mnist' is not a data set"),
    ({"base": {"epochz": 3}}, r"base: unknown run-config key\(s\) \['epochz'\]"),
    ({"base": {"method": "kd"}}, r"base: \['method'\] may not be set here"),
    ({"base": {"device": "cuda"}}, r"base: \['device'\] may not be set here"),
    ({"pairs": [{"teacher": {"model": "resnet999"}, "student": "resnet8"}]}, "'resnet999' is not a model"),
    ({"pairs": [{"teacher": {"epochs": 3}, "student": "resnet8"}]}, "at least 'model'"),
    ({"ablations": {"colour": ["red"]}}, "unknown axis 'colour'"),
    ({"ablations": {"score": ["loudness"]}}, "ablations.score: 'loudness' is not a variant"),
    ({"kd_baselines": {"fitnet": {"model": "resnet8"}}}, r"kd_baselines.fitnet: key\(s\) \['model'\]"),
    ({"name": "other"}, "name 'other' must equal the file name"),
])
def test_bad_profiles_name_the_problem(tmp_path, changes, message):
    path = _write(tmp_path, **changes)
    if "name" in changes:
        path = path.rename(tmp_path / "smoke.yaml")
    with pytest.raises(ProfileError, match=message) as err:
        experiments.load_profile(path)
    assert str(path.name) in str(err.value)


def test_a_budget_too_short_for_the_slkd_schedule_fails_at_planning(tmp_path):
    exp = Experiment(experiments.load_profile(_write(tmp_path, budgets=[3])), results_dir="unused")
    with pytest.raises(ProfileError, match=r"profile 'smoke', study 'budgets': curriculum: .*epochs=3"):
        exp.plan("budgets")
    with pytest.raises(ValueError, match="unknown study 'everything'"):
        exp.plan("everything")


# ---------------------------------------------------------------------------------- notebooks and driver


def test_every_notebook_has_one_parameters_cell_with_the_smoke_defaults():
    books = reproduce.find_notebooks(NOTEBOOKS)
    assert [b.stem[:2] for b in books] == ["00", "01", "02", "03", "04", "05", "06"]
    for book in books:
        cells = json.loads(book.read_text())["cells"]
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, book.name
        assert reproduce.notebook_defaults(book) == {"profile": "smoke", "results_dir": "../results",
                                                     "data_root": None, "seeds": None, "device": "auto",
                                                     "train": True}


def test_notebook_selection(tmp_path):
    for name in ("00_a", "01_b", "010_c"):
        (tmp_path / f"{name}.ipynb").write_text("{}")
    assert [p.stem for p in reproduce.find_notebooks(tmp_path, "00")] == ["00_a"]
    assert [p.stem for p in reproduce.find_notebooks(tmp_path, "01_b")] == ["01_b"]
    with pytest.raises(reproduce.ReproduceError, match=r"'01' is ambiguous \(010_c, 01_b\)"):
        reproduce.find_notebooks(tmp_path, "01")
    with pytest.raises(reproduce.ReproduceError, match=r"'9' matches no notebook; available: 00_a, 010_c, 01_b"):
        reproduce.find_notebooks(tmp_path, "9")
    with pytest.raises(reproduce.ReproduceError, match="no notebooks"):
        reproduce.find_notebooks(tmp_path / "empty")


def test_store_in_place_refuses_other_parameters(capsys):
    assert reproduce.main(["--profile", "demo", "--store-in-place", "--notebooks-dir", str(NOTEBOOKS)]) == 1
    assert "--store-in-place" in capsys.readouterr().err
    assert reproduce.main(["--profile", "nope"]) == 2  # a bad profile is a bad configuration (docs/errors.md)
    assert "unknown profile 'nope'" in capsys.readouterr().err


def test_cpu300_plans_the_ten_seed_grid():
    """cpu300 (docs/analysis-plan-cpu300.md): vanilla with 5 seeds, KD and SLKD with 10; every ablation arm with
    10; KD matched to SLKD's steps with 5; budgets 20/60/80/100/120/300 with 5."""
    exp = Experiment("cpu300", results_dir="unused")
    main = exp.plan("main")
    seeds = {m: sorted(p.labels["seed"] for p in main if p.labels["method"] == m) for m in ("vanilla", "kd", "slkd")}
    assert seeds == {"vanilla": list(range(5)), "kd": list(range(10)), "slkd": list(range(10))}
    assert {p.config.epochs for p in main} == {300}
    matched = exp.plan("matched")
    kd_matched = [p for p in matched if p.labels["method"] == "kd_matched"]
    assert len(kd_matched) == 5 and {p.config.epochs for p in kd_matched} == {226}
    assert kd_matched[0].config.milestones == (196, 218)  # round(260 * 226 / 300), round(290 * 226 / 300)
    budgets = exp.plan("budgets")
    assert sorted({p.config.epochs for p in budgets}) == [20, 60, 80, 100, 120, 300]
    assert len(budgets) == 6 * 5 * 2
    order = [p for p in exp.plan("ablations") if p.labels.get("axis") == "order"]
    assert sorted((p.labels["variant"], p.labels["seed"]) for p in order) == \
        sorted((v, s) for v in ("easy_first", "hard_first", "random") for s in range(10))
    mse = {(p.labels["variant"], p.labels["seed"]): p.config for p in exp.plan("ablations")
           if p.labels.get("axis") == "mse"}
    assert sorted(mse) == sorted((v, s) for v in ("on", "off") for s in range(10))
    for s in range(10):  # "on" is the main SLKD run of that seed; "off" is the same run without the MSE term
        assert mse["on", s].run_id == next(p.config.run_id for p in main if p.labels["method"] == "slkd"
                                           and p.labels["seed"] == s)
        off = mse["off", s].to_dict()
        assert off["losses"]["mse"]["weight"] == 0.0 and mse["on", s].to_dict()["losses"]["mse"]["weight"] == 0.05
    pacing = {(p.labels["variant"], p.labels["seed"]): p.config for p in exp.plan("ablations")
              if p.labels.get("axis") == "pacing"}
    assert sorted(pacing) == sorted((v, s) for v in ("authors", "full") for s in range(10))
    for s in range(10):  # "full": the same run but every image in every phase
        assert pacing["authors", s].run_id == mse["on", s].run_id
        assert pacing["full", s].to_dict()["curriculum"]["pacing"] == "full"
    # 1 teacher + 5 vanilla + 10 x (KD, SLKD, hard first, random, no MSE, full) + 5 x 226-epoch KD
    # + 5 x 2 x (20, 60, 80, 100, 120) budget runs
    assert len(exp.all_configs()) == 1 + 5 + 60 + 5 + 50 == 121


def test_matched_steps_must_match_slkds_steps(tmp_path):
    path = _write(tmp_path, budgets=[7], matched_steps={7: 7})
    exp = Experiment(experiments.load_profile(path), results_dir="unused")
    with pytest.raises(ProfileError, match=r"matched_steps 7: 7 KD epochs do not match SLKD's \d+ optimizer steps"):
        exp.check_matched_steps()
    kd_epochs, steps = exp.matched_epochs("digits", exp.profile.pairs[0], 7)
    assert kd_epochs < 7 and abs(steps - kd_epochs * 12) <= 6  # digits: 12 KD steps per epoch


def test_method_seeds_name_a_method_of_the_tables(tmp_path):
    with pytest.raises(ProfileError, match=r"method_seeds: 'teacher' is not a method"):
        experiments.load_profile(_write(tmp_path, method_seeds={"teacher": [0]}))


def test_without_training_a_study_names_its_missing_runs_in_tables(tmp_path):
    """``train=False`` (``kdrepro reproduce --no-train``): only finished runs, and tables say what is missing."""
    from kdrepro import report
    from kdrepro.experiments import MissingRunsError

    exp = Experiment("smoke", results_dir=tmp_path, train=False)
    with pytest.raises(MissingRunsError, match="has none of its 7 runs"):
        exp.main()
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written
    vanilla = next(p for p in exp.plan("main") if p.labels["method"] == "vanilla")
    exp.store.run(vanilla.config, log=lambda m: None)  # one finished run
    runs = exp.main()
    assert len(runs) == 1 and len(runs.attrs["missing"]) == 6
    summary = report.summarize(runs, ["dataset", "teacher", "student", "method", "model"])
    table = report.format_summary(summary, ["method"])
    note = report.missing_note(table)
    assert note.startswith("**Incomplete: 6 run(s)") and "teacher seed 0" in note and "slkd seed 1" in note
    report.write_table(table, "t", tmp_path)
    assert "Incomplete: 6 run(s)" in (tmp_path / "t.md").read_text()
    assert len(list((tmp_path / "runs").glob("*/summary.json"))) == 1  # still nothing else trained


def test_a_notebook_skipped_for_lack_of_runs_leaves_no_earlier_tables_behind(tmp_path, capsys):
    """``--no-train`` with none of a study's runs in the store: the notebook is skipped, and what an earlier
    execution wrote (executed notebook, tables, figures with its number) goes, since it shows runs the store
    no longer holds; other notebooks' outputs stay."""
    from kdrepro import reproduce

    out = tmp_path / "smoke"
    stale = [out / "notebooks" / "04_ablations.ipynb", out / "tables" / "04_ablations.md",
             out / "tables" / "04_order_paired.csv", out / "figures" / "04_ablations.png"]
    kept = [out / "tables" / "03_main_table.md", out / "figures" / "05_budgets.png", out / "tables" / "40_x.md",
            out / "notebooks" / "03_curriculum_kd.ipynb"]
    for p in stale + kept:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("from an earlier store")
    done = reproduce.reproduce("smoke", notebook="04", results=str(tmp_path), train=False, progress=False)
    assert done == [] and "04_ablations skipped" in capsys.readouterr().out
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing trained


def test_every_run_of_an_empty_store_names_each_run_of_the_profile_once(tmp_path):
    """Experiment.every_run (notebook 05's compute table) never trains: with nothing in the store it returns
    no row and names every run of the profile once, by its id (studies' runs with their method, seed and
    variants)."""
    exp = experiments.Experiment("smoke", results_dir=tmp_path, train=False)
    table = exp.every_run()
    configs = exp.all_configs()
    missing = table.attrs["missing"]
    assert table.empty and len(missing) == len(configs)
    assert sorted(m.rsplit("[", 1)[1].rstrip("]") for m in missing) == sorted(c.run_id for c in configs)
    assert "teacher seed 0 [" in " ".join(missing)  # the teacher, as the baselines study names it
    slkd = [m for m in missing if m.startswith("slkd seed 0 (")]
    assert slkd and all(m.count("[") == 1 for m in missing)  # variants in parentheses, each run once
    assert not any((tmp_path / "runs").glob("*/summary.json"))  # nothing was trained
