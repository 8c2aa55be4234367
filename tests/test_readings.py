"""Each notebook states what its profile runs and ends with the profile's written reading; every number a
reading of the ``demo``, ``cpu`` and ``cpu300`` profiles quotes is in the tables of its notebook, and no profile's
executed notebook carries a sentence about another profile's stored outputs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kdrepro import experiments, readings

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))
CHECKED = ("demo", "cpu", "cpu300")
# a quoted result: a decimal number (signs dropped: tables print -0.33 where a reading writes −0.33) or a k/n count
NUMBER = re.compile(r"\d+\.\d+|\b\d+/\d+\b")


def quoted(text: str) -> list[str]:
    return NUMBER.findall(text)


def test_quoted_finds_decimals_and_counts_only():
    assert quoted("−0.33 ± 1.22 (ahead on 1/3 seeds), 5,085 images, 300 epochs, 0.541 and +1.63") == [
        "0.33", "1.22", "1/3", "0.541", "1.63"]


@pytest.mark.parametrize("profile", CHECKED)
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_number_of_a_reading_is_in_its_notebooks_tables(profile, notebook):
    path = readings.reading_path(profile, notebook)
    assert path.exists(), f"no reading for {profile}/{notebook}: write {path.relative_to(ROOT)}"
    tables = sorted((ROOT / "results" / profile / "tables").glob(f"{notebook[:2]}_*.md"))
    assert tables, f"{profile} has no tables of notebook {notebook[:2]}"
    in_tables = set(quoted("\n".join(t.read_text() for t in tables)))
    missing = [n for n in quoted(path.read_text()) if n not in in_tables]
    assert not missing, f"{path.relative_to(ROOT)} quotes numbers that are not in its tables: {missing}"


def test_a_number_not_in_the_tables_is_caught(tmp_path, monkeypatch):
    """The check above against a reading with its first number changed by a hundredth (to a value no table
    has), whichever number the current reading quotes first."""
    text = readings.reading_path("cpu300", "03_curriculum_kd").read_text()
    tables = (ROOT / "results" / "cpu300" / "tables").glob("03_*.md")
    in_tables = set(quoted("\n".join(t.read_text() for t in tables)))
    first = next(n for n in quoted(text) if "." in n)
    candidates = (f"{float(first) + k / 100:.2f}" for k in range(1, 100))
    changed = next(c for c in candidates if c not in in_tables)
    text = text.replace(first, changed, 1)
    assert [n for n in quoted(text) if n not in in_tables] == [changed]


def test_scope_lists_only_what_the_profile_runs():
    cpu300 = readings.scope(experiments.Experiment("cpu300", results_dir=ROOT / "results"), "04")
    for axis in ("order", "mse", "pacing"):
        assert f"**{axis}**" in cpu300
    for absent in ("**score**", "**quirks**", "smoke", "`linear`", "`root`"):
        assert absent not in cpu300, absent
    cpu = readings.scope(experiments.Experiment("cpu", results_dir=ROOT / "results"), "04")
    assert "**score**" in cpu and "**quirks**" not in cpu and "seeds 0–2" in cpu
    smoke = readings.scope(experiments.Experiment("smoke", results_dir=ROOT / "results"), "02")
    assert "come from this profile" in smoke


def test_every_notebook_shows_its_scope_and_ends_with_its_reading():
    for stem in NOTEBOOKS:
        cells = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())["cells"]
        sources = ["".join(c["source"]) for c in cells]
        assert any(f'readings.show_scope(exp, "{stem[:2]}")' in s for s in sources), stem
        assert sources[-1] == f'readings.show_reading(exp, "{stem}")', stem
        assert "smoke" not in sources[0], f"{stem}: the introduction speaks of one profile"


def _markdown(output: dict) -> str:
    text = output.get("data", {}).get("text/markdown", "")
    return text if isinstance(text, str) else "".join(text)


@pytest.mark.parametrize("profile", ["demo", "cpu", "cpu300"])
def test_executed_notebooks_carry_their_own_reading_and_no_smoke_sentence(profile):
    for stem in NOTEBOOKS:
        path = ROOT / "results" / profile / "notebooks" / f"{stem}.ipynb"
        if not path.exists():
            continue
        cells = json.loads(path.read_text())["cells"]
        text = "\n".join("".join(c["source"]) for c in cells) + "\n".join(
            _markdown(o) for c in cells for o in c.get("outputs", []))
        assert "come from the `smoke` profile" not in text and "come from this profile" not in text, path
        reading = readings.reading_path(profile, stem).read_text().strip()
        last = "".join(_markdown(o) for o in cells[-1].get("outputs", []))
        assert last.strip() == reading, f"{path} does not end with its reading"
