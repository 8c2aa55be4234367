"""What a run resolves to, said once: the teacher's recipe in ``kdrepro train``'s printed plan."""
from __future__ import annotations

import json

import pytest

from kdrepro.cli import main

DIGITS = ["--set", "dataset=digits", "--set", "model=resnet8", "--set", "teacher.model=resnet14",
          "--set", "epochs=2"]


def _plan(capsys, *sets: str) -> tuple[list[str], dict]:
    argv = ["train", *DIGITS]
    for s in sets:
        argv += ["--set", s]
    assert main(argv + ["--dry-run", "--results", "/nonexistent-kdrepro-results"]) == 0
    out = capsys.readouterr().out
    lines = out[:out.index("\n{")].splitlines()
    return lines, json.loads(out[out.index("\n{") + 1:])["config"]


@pytest.mark.parametrize("student_lr, teacher_lr, expected", [
    ("1e-3", None, "lr 0.001: the student's, inherited"),
    ("1e-3", "0.05", "lr 0.05 (teacher.lr; the student's 0.001)"),
    (None, "0.05", "lr 0.05 (teacher.lr; the student's 0.1)"),
])
def test_the_plan_says_what_the_teachers_learning_rate_is(capsys, student_lr, teacher_lr, expected):
    sets = ["method=kd"] + ([f"lr={student_lr}"] if student_lr else []) + ([f"teacher.lr={teacher_lr}"] if teacher_lr else [])
    lines, config = _plan(capsys, *sets)
    recipe = [line for line in lines if line.strip().startswith("teacher recipe:")]
    assert len(recipe) == 1 and lines.index(recipe[0]) == 2, lines  # right under the teacher's line
    assert expected in recipe[0]
    # what the line says is what the teacher run computes: its lr in the resolved config
    assert config["teacher"]["lr"] == float(teacher_lr or student_lr)
    assert config["lr"] == float(student_lr or 0.1)


def test_a_teacher_with_the_students_recipe_says_so(capsys):
    lines, _ = _plan(capsys, "method=kd")
    assert lines[2].strip() == "teacher recipe: epochs 2: the student's, inherited (set teacher.<key> for its own)"


# ------------------------------------------------------------------------------------- resolution count


@pytest.fixture
def resolutions(monkeypatch):
    """Every resolution of this process from now on (the resolved runs, in order)."""
    from kdrepro import resolution

    made = []
    real = resolution._resolve

    def counted(cfg):
        run = real(cfg)
        made.append(run)
        return run

    monkeypatch.setattr(resolution, "_resolve", counted)
    return made


def test_a_dry_run_resolves_each_run_once(capsys, resolutions):
    _plan(capsys, "method=kd")
    ids = [c.run_id for c in resolutions]
    assert len(ids) == 2 and len(set(ids)) == 2  # the student and its teacher, once each
    assert {c.method for c in resolutions} == {"kd", "ce"}


def test_kdrepro_train_resolves_each_run_once(tmp_path, capsys, resolutions):
    argv = ["train", *DIGITS, "--set", "teacher.model=resnet8", "--set", "teacher.epochs=1", "--set", "epochs=1",
            "--set", "method=kd", "--set", "num_threads=1", "--set", "progress=false", "--set", "teacher_cache=false",
            "--results", str(tmp_path)]
    assert main(argv) == 0
    assert "trained" in capsys.readouterr().out
    ids = [c.run_id for c in resolutions]
    assert len(ids) == 2 and len(set(ids)) == 2
    del resolutions[:]
    assert main(argv) == 0  # both finished now: reused, each resolved once again in this call
    assert "found finished" in capsys.readouterr().out and len(resolutions) == 2


@pytest.mark.parametrize("profile", ["smoke", "cpu300"])
def test_a_profiles_planner_resolves_each_run_once(profile, resolutions):
    from kdrepro import experiments

    exp = experiments.Experiment(profile, results_dir="unused")
    configs = exp.all_configs()
    for study in experiments.STUDIES:  # planning again, as every notebook does, resolves nothing more
        exp.plan(study)
    ids = [c.run_id for c in resolutions]
    assert len(ids) == len(set(ids)) == len(configs)
    assert set(ids) == {c.run_id for c in configs}


def test_a_kept_resolution_is_what_a_fresh_one_computes():
    """What resolution keeps with a config (its teacher, its run id) equals a resolution from scratch, and a
    copy with other values is resolved anew."""
    from kdrepro.config import RunConfig

    cfg = RunConfig.from_dict({"method": "kd", "teacher": {"model": "resnet14"}, "epochs": 30}).resolved()
    assert cfg.resolved() is cfg and cfg.teacher_config() is cfg.teacher_config()
    fresh = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert fresh.run_id == cfg.run_id and fresh.teacher_config().run_id == cfg.teacher_config().run_id
    other = cfg.model_copy(update={"epochs": 40, "milestones": (20, 30)})
    assert other.run_id != cfg.run_id and other.run_id == RunConfig.from_dict(other.to_dict()).run_id


# ------------------------------------------------------------------------------------- the resolved run


def test_a_resolved_run_holds_what_the_run_computes():
    """Typed terms from the recipe (values of the authors' train_slkd.py, by hand), the schedule, the teacher
    as a resolved run, the requirements, and a run id that is the hash of the identity, computed by hand."""
    import dataclasses
    import hashlib

    from kdrepro.config import RunConfig
    from kdrepro.resolution import ResolvedRun, resolve

    run = resolve(RunConfig(method="slkd", teacher={"model": "resnet14"}, epochs=30))
    assert isinstance(run, ResolvedRun) and resolve(run) is run
    assert {n: p.model_dump() for n, p in run.terms.items()} == {
        "ce": {"weight": 1.0}, "kd": {"weight": 0.1, "T": 3.0}, "mse": {"weight": 0.05, "target": "teacher"}}
    assert (run.curriculum.score, run.curriculum.order, run.curriculum.pacing) == ("max_logit", "easy_first", "authors")
    assert [p.end for p in run.schedule] == [4, 7, 11, 15, 20, 30]  # 40/300, 70/300, ... of 30 epochs
    assert run.requirements == {"teacher_logits"} and run.needs_teacher and not run.needs_teacher_features
    assert isinstance(run.teacher, ResolvedRun) and run.teacher.teacher is None and run.checkpoint is None
    assert (run.teacher.method, run.teacher.model, run.teacher.seed, run.teacher.epochs) == ("ce", "resnet14", 0, 30)
    assert run.identity["teacher"] == run.teacher.identity and run.data_fingerprint == run.teacher.data_fingerprint
    blob = json.dumps(run.identity, sort_keys=True, separators=(",", ":"))
    assert run.run_id == f"slkd-digits-resnet8-s0-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"
    assert run.epochs == run.config.epochs == 30 and run.config.teacher["model"] == "resnet14"
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.run_id = "x"
    with pytest.raises(AttributeError):
        run.no_such_field


def test_the_store_takes_a_stored_config_of_the_same_run_without_resolving_it(tmp_path, resolutions):
    """A run folder whose config.json differs from the resolved run in runtime fields only is this run (no
    resolution); one that differs in what it computes is resolved and refused by its folder name."""
    from kdrepro.config import RunConfig
    from kdrepro.resolution import resolve
    from kdrepro.rundir import RunDir, RunFileError
    from kdrepro.runs import RunStore

    run = resolve(RunConfig(method="kd", teacher={"model": "resnet14"}, epochs=30))
    store = RunStore(tmp_path)
    d = store.run_dir(run)
    d.mkdir(parents=True)
    stored = run.to_dict()
    (d / "config.json").write_text(json.dumps({**stored, "num_threads": 7, "device": "cpu",
                                               "teacher": {**stored["teacher"], "num_threads": 7}}))
    del resolutions[:]
    assert store._checked_config(RunDir(d), run).num_threads == 7 and resolutions == []
    (d / "config.json").write_text(json.dumps({**stored, "lr": 0.5}))
    with pytest.raises(RunFileError, match="not the run id its config.json computes"):
        store._checked_config(RunDir(d), run)
    assert len(resolutions) == 2  # the other run and its teacher, resolved to name its id
