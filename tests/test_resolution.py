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
