"""A run folder must be what it says: its name is the id its config computes, and a finished run's summary
and metrics agree (rows, epochs, last and best top-1). A mismatch is listed as ``bad`` by ``kdrepro runs``
and refused by ``kdrepro train`` (exit 1, one line naming the file), never returned as "found finished"."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from kdrepro.cli import main
from kdrepro.runs import RunStore

ROOT = Path(__file__).resolve().parents[1]
BASE = ["--set", "method=ce", "--set", "dataset=digits", "--set", "epochs=2", "--set", "num_threads=1",
        "--set", "progress=false", "--set", "crop_padding=1", "--set", "hflip=false"]


def _train(results: Path, seed: int) -> list[str]:
    return ["train", *BASE, "--set", f"seed={seed}", "--results", str(results)]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    for seed in (0, 1):
        assert main(_train(root, seed)) == 0
    return root


@pytest.fixture
def results(store, tmp_path) -> Path:
    out = tmp_path / "results"
    shutil.copytree(store, out)
    return out


def _folders(results: Path) -> dict[int, Path]:
    out = {}
    for d in (results / "runs").iterdir():
        if d.is_dir():
            out[json.loads((d / "config.json").read_text())["seed"]] = d
    return out


def _rows(results: Path, capsys) -> dict[str, dict]:
    assert main(["runs", "--json", "--results", str(results)]) == 0
    return {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}


def _refused(results: Path, seed: int, capsys, pattern: str) -> None:
    assert main(_train(results, seed)) == 1
    captured = capsys.readouterr()
    assert "found finished" not in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("kdrepro: error")]
    assert len(errors) == 1 and re.search(pattern, errors[0]), captured.err


def test_swapped_folders_are_refused_and_listed_as_bad(results, capsys):
    runs = _folders(results)
    s0, s1 = runs[0], runs[1]
    tmp = s0.with_name("swap")
    s0.rename(tmp)
    s1.rename(s0)
    tmp.rename(s1)
    _refused(results, 0, capsys, rf"{s0.name}: the folder's name is not the run id its config.json computes "
                                 rf"\({s1.name}\)")
    rows = _rows(results, capsys)
    assert {r["status"] for r in rows.values()} == {"bad"}
    assert "renamed or swapped" in rows[s0.name]["problem"]


def test_a_renamed_folder_is_listed_as_bad_under_its_name(results, capsys):
    s0 = _folders(results)[0]
    renamed = s0.with_name("ce-digits-resnet8-s0-0000000000")
    s0.rename(renamed)
    rows = _rows(results, capsys)
    assert rows[renamed.name]["status"] == "bad" and s0.name in rows[renamed.name]["problem"]
    assert main(["show", renamed.name, "--results", str(results)]) == 1
    assert "renamed or swapped" in capsys.readouterr().err


def test_corrupt_metrics_make_train_refuse_the_finished_run(results, capsys):
    s0 = _folders(results)[0]
    metrics = s0 / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n{broken\n")
    _refused(results, 0, capsys, r"metrics.jsonl: line 2 is not valid JSON")
    assert _rows(results, capsys)[s0.name]["status"] == "bad"


def test_a_finished_run_missing_its_last_metrics_row_is_flagged(results, capsys):
    s0 = _folders(results)[0]
    metrics = s0 / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n")
    row = _rows(results, capsys)[s0.name]
    assert row["status"] == "bad" and "holds 1 epoch rows, not epochs 1..2" in row["problem"]
    _refused(results, 0, capsys, r"metrics.jsonl: holds 1 epoch rows")


@pytest.mark.parametrize("key, value, pattern", [
    ("last_top1", "80.0", r"last_top1='80.0' is not a number"),
    ("last_top1", 12.5, r"last_top1=12.5 disagrees with metrics.jsonl"),
    ("best_top1", 0.0, r"best_top1=0.0 disagrees with metrics.jsonl"),
    ("epochs", 3, r"epochs=3 disagrees with metrics.jsonl \(2\)"),
    ("run_id", "ce-digits-resnet8-s1-x", r"names run 'ce-digits-resnet8-s1-x'"),
])
def test_a_summary_that_disagrees_with_its_metrics_is_flagged_and_the_table_goes_on(results, capsys, key, value,
                                                                                   pattern):
    s0, s1 = _folders(results)[0], _folders(results)[1]
    summary = json.loads((s0 / "summary.json").read_text())
    summary[key] = value
    (s0 / "summary.json").write_text(json.dumps(summary))
    rows = _rows(results, capsys)
    assert rows[s0.name]["status"] == "bad" and re.search(pattern, rows[s0.name]["problem"])
    assert rows[s1.name]["status"] == "finished"
    assert main(["runs", "--results", str(results)]) == 0  # the table prints every row
    out = capsys.readouterr().out
    assert s0.name in out and s1.name in out
    _refused(results, 0, capsys, pattern)


def test_a_finished_run_without_its_config_is_listed_as_bad(results, capsys):
    s0 = _folders(results)[0]
    (s0 / "config.json").unlink()
    row = _rows(results, capsys)[s0.name]
    assert row["status"] == "bad" and "config.json: missing" in row["problem"]


def test_every_committed_run_passes_the_checks():
    rows = RunStore(ROOT / "results").list()
    assert len(rows) >= 36
    assert [r for r in rows if r["status"] != "finished" or r["problem"]] == []
    migrated = [json.loads(line)["new"] for line in
                (ROOT / "results" / "runs" / "migrations.jsonl").read_text().splitlines()]
    assert migrated and set(migrated) <= {r["run_id"] for r in rows}
