"""kdrepro export: a finished run's record copied into another store, teacher weights on request, nothing
overwritten by accident, nothing half-copied after a crash."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kdrepro import export as export_module
from kdrepro.config import RunConfig
from kdrepro.export import export_runs
from kdrepro.runs import RunStore

BASE = dict(dataset="digits", model="resnet8", epochs=2, batch_size=128, crop_padding=1, hflip=False,
            num_threads=1, progress=False)
TEACHER = dict(model="resnet14", epochs=2)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("scratch"))
    slkd = store.run(RunConfig.from_dict(dict(BASE, method="slkd", teacher=TEACHER, epochs=7)), log=lambda m: None)
    vanilla = store.run(RunConfig.from_dict(dict(BASE, method="ce")), log=lambda m: None)
    partial = RunConfig.from_dict(dict(BASE, method="ce", seed=7))
    d = store.run_dir(partial)
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(partial.to_dict()))  # a run that never finished
    return store, slkd, vanilla, partial


def _files(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()}


def test_export_copies_the_record_and_only_the_teachers_weights(source, tmp_path):
    store, slkd, vanilla, partial = source
    teacher_id = slkd.config.teacher_config().run_id
    done = {e.run_id: e.action for e in export_runs(store.root, tmp_path / "repo", teacher_weights=True)}
    assert done == {slkd.run_id: "exported", vanilla.run_id: "exported", teacher_id: "exported",
                    partial.run_id: "skipped"}
    out = tmp_path / "repo" / "runs"
    assert sorted(p.name for p in out.iterdir()) == sorted([slkd.run_id, vanilla.run_id, teacher_id])
    src_files = _files(slkd.run_dir)
    assert {"weights.pt", "checkpoints/latest.pt"} <= src_files and any(f.startswith("snapshots/") for f in src_files)
    expected = {f for f in src_files if f.split("/")[0] not in ("checkpoints", "snapshots") and f != "weights.pt"}
    assert _files(out / slkd.run_id) == expected and any(f.startswith("curriculum/") for f in expected)
    assert (out / teacher_id / "weights.pt").read_bytes() == (store.runs_dir / teacher_id / "weights.pt").read_bytes()
    assert "weights.pt" not in _files(out / vanilla.run_id)
    for rel in expected:
        assert (out / slkd.run_id / rel).read_bytes() == (slkd.run_dir / rel).read_bytes(), rel
    # the exported store is a working store: the student loads, with its teacher's weights beside it
    assert RunStore(tmp_path / "repo").load(slkd.run_id).summary == slkd.summary
    (out / teacher_id / "scores").mkdir(exist_ok=True)
    (out / teacher_id / "scores" / "max_logit.pt").write_bytes(b"scores written at the target")  # more there
    again = export_runs(store.root, tmp_path / "repo", teacher_weights=True)
    assert {e.run_id: e.action for e in again if e.action != "skipped"} == dict.fromkeys(
        [slkd.run_id, vanilla.run_id, teacher_id], "unchanged")
    # a teacher exported alone keeps its weights while a student of it is in either store (here: the source)
    alone = {e.run_id: e.note for e in export_runs(store.root, tmp_path / "alone", [teacher_id], teacher_weights=True)}
    assert alone == {teacher_id: "with weights"} and (tmp_path / "alone" / "runs" / teacher_id / "weights.pt").exists()
    # --weights: every exported run's weights
    asked = export_runs(store.root, tmp_path / "asked", [vanilla.run_id], weights=True)
    assert [e.note for e in asked] == ["with weights"]
    assert (tmp_path / "asked" / "runs" / vanilla.run_id / "weights.pt").read_bytes() == \
        (vanilla.run_dir / "weights.pt").read_bytes()
    # without the option, weights stay behind
    plain = {e.run_id: e.action for e in export_runs(store.root, tmp_path / "plain", [slkd.run_id[:20]])}
    assert plain == {slkd.run_id: "exported"} and not (tmp_path / "plain" / "runs" / teacher_id).exists()


def test_another_record_of_the_same_id_is_refused_unless_replaced(source, tmp_path):
    store, slkd, vanilla, _ = source
    export_runs(store.root, tmp_path / "repo", [vanilla.run_id])
    target = tmp_path / "repo" / "runs" / vanilla.run_id / "summary.json"
    other = {**json.loads(target.read_text()), "last_top1": 12.5}
    target.write_text(json.dumps(other))  # the same id, another result (say, trained on another machine)
    refused, = export_runs(store.root, tmp_path / "repo", [vanilla.run_id])
    assert refused.action == "refused" and "--replace" in refused.note and "12.50" in refused.note
    assert json.loads(target.read_text())["last_top1"] == 12.5  # untouched
    replaced, = export_runs(store.root, tmp_path / "repo", [vanilla.run_id], replace=True)
    assert replaced.action == "replaced"
    assert target.read_bytes() == (vanilla.run_dir / "summary.json").read_bytes()
    assert not [p for p in (tmp_path / "repo" / "runs").iterdir() if p.name.startswith(".")]


def test_a_crash_mid_copy_leaves_the_previous_record_whole(source, tmp_path, monkeypatch):
    store, slkd, vanilla, _ = source
    export_runs(store.root, tmp_path / "repo", [vanilla.run_id])
    target = tmp_path / "repo" / "runs" / vanilla.run_id
    (target / "summary.json").write_text(json.dumps({**json.loads((target / "summary.json").read_text()),
                                                     "last_top1": 1.0}))
    before = {f: (target / f).read_bytes() for f in _files(target)}

    def crash(src, dst, weights):
        Path(dst).mkdir(parents=True)
        (Path(dst) / "config.json").write_text("{")
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "_copy_record", crash)
    with pytest.raises(KeyboardInterrupt):
        export_runs(store.root, tmp_path / "repo", [vanilla.run_id], replace=True)
    assert {f: (target / f).read_bytes() for f in _files(target)} == before
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]

    # a crash between moving the old record aside and renaming the new one in: the next export recovers
    monkeypatch.undo()
    aside = target.parent / f".{vanilla.run_id}.replaced"
    target.rename(aside)
    assert RunStore(tmp_path / "repo").list() == []  # the folder aside is not listed as a run
    export_runs(store.root, tmp_path / "repo", [slkd.run_id])  # any export recovers first
    assert {f: (target / f).read_bytes() for f in _files(target)} == before and not aside.exists()


def test_the_command_line_says_what_it_did_and_fails_on_refusals(source, tmp_path):
    store, slkd, vanilla, _ = source
    cmd = [sys.executable, "-m", "kdrepro", "export", "--results", str(store.root), "--to", str(tmp_path / "repo"),
           vanilla.run_id]
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 0 and first.stdout.splitlines() == [f"exported  {vanilla.run_id}", "1 exported"]
    summary = tmp_path / "repo" / "runs" / vanilla.run_id / "summary.json"
    summary.write_text(summary.read_text().replace('"finished": true', '"finished": true, "note": "edited"'))
    second = subprocess.run(cmd, capture_output=True, text=True)
    assert second.returncode == 1 and second.stdout.startswith(f"refused   {vanilla.run_id}")
    same = subprocess.run([*cmd[:6], "--to", str(store.root)], capture_output=True, text=True)
    assert same.returncode != 0 and "same run store" in same.stderr and "Traceback" not in same.stderr
    missing = subprocess.run([*cmd[:5], str(tmp_path / "nowhere"), "--to", str(tmp_path / "repo")],
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "no run store" in missing.stderr and "Traceback" not in missing.stderr


def test_a_teacher_whose_weights_are_missing_is_refused_unless_its_record_is_already_there(source, tmp_path):
    store, slkd, vanilla, _ = source
    teacher_id = slkd.config.teacher_config().run_id
    lost = tmp_path / "lost"  # a store whose teacher lost its weights (say, a clone without them)
    shutil.copytree(store.root / "runs", lost / "runs", ignore=shutil.ignore_patterns("checkpoints", "snapshots"))
    (lost / "runs" / teacher_id / "weights.pt").unlink()
    refused, = export_runs(lost, tmp_path / "empty", [teacher_id], teacher_weights=True)
    assert refused.action == "refused" and "weights.pt is missing" in refused.note
    assert not (tmp_path / "empty" / "runs" / teacher_id).exists()
    export_runs(store.root, tmp_path / "repo", [teacher_id], teacher_weights=True)  # the record, with weights
    same, = export_runs(lost, tmp_path / "repo", [teacher_id], teacher_weights=True)
    assert (same.action, same.note) == ("unchanged", "")
    export_runs(lost, tmp_path / "plain", [teacher_id])  # the record only
    noted, = export_runs(lost, tmp_path / "plain", [teacher_id], teacher_weights=True)
    assert (noted.action, noted.note) == ("unchanged", "its weights are in neither store")
