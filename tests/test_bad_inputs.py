"""A table of bad inputs and faults, as a new user meets them (issues 13 and 15).

Every row goes through the real command line (``kdrepro.cli.main``, in process; a few in a subprocess) and
must give a non-zero exit, one error line that names the problem (detail lines below it are indented),
no traceback, and nothing left behind: no run folder that was not there before, no temporary file.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kdrepro.cli import main

DIGITS = ["--set", "method=ce", "--set", "dataset=digits", "--set", "epochs=1", "--set", "num_threads=1", "--set", "progress=false",
          "--set", "crop_padding=1", "--set", "hflip=false"]
STUDENT = [*DIGITS, "--set", "method=kd", "--set", "teacher.model=resnet8", "--set", "teacher.epochs=2"]


def _npz(path: Path, n_train=20, n_test=10, labels=None, empty=False) -> Path:
    rng = np.random.default_rng(0)
    if empty:
        x_train = np.zeros((0, 3, 8, 8), np.uint8)
        y_train = np.zeros((0,), np.int64)
    else:
        x_train = rng.integers(0, 255, (n_train, 3, 8, 8), dtype=np.uint8)
        y_train = np.arange(n_train) % 2 if labels is None else np.asarray(labels)
    x_test = rng.integers(0, 255, (n_test, 3, 8, 8), dtype=np.uint8)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=np.arange(n_test) % 2)
    return path


def _profile(tmp: Path, **changes) -> str:
    import yaml

    from kdrepro.experiments import PROFILE_DIR

    data = yaml.safe_load((PROFILE_DIR / "smoke.yaml").read_text())
    for key, value in changes.items():
        target = data
        parts = key.split(".")
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = value
    path = tmp / "smoke.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def S(*pairs: str) -> list[str]:
    out = []
    for p in pairs:
        out += ["--set", p]
    return out


# (id, argv builder (tmp, results) -> argv, exit code, pattern in the error line)
CASES = [
    # ---- --set values: types and ranges
    ("lr-not-a-number", lambda t, r: ["train", *DIGITS, *S("lr=abc")], 2, r"lr='abc': must be a number"),
    ("lr-infinite", lambda t, r: ["train", *DIGITS, *S("lr=.inf")], 2, r"lr=inf: must be a finite number"),
    ("lr-nan", lambda t, r: ["train", *DIGITS, *S("lr=.nan")], 2, r"lr=nan: must be a finite number"),
    ("lr-huge-integer", lambda t, r: ["train", *DIGITS, *S("lr=1" + "0" * 400)], 2, r"lr=10+: must be a finite number"),
    ("dataset-option-bool", lambda t, r: ["train", *DIGITS, *S("dataset_options.seed=true")], 2,
     r"dataset_options.seed=True: must be an integer, not a boolean"),
    ("dataset-option-text", lambda t, r: ["train", *DIGITS, *S("dataset_options.test_fraction=abc")], 2,
     r"dataset_options.test_fraction='abc': must be a number"),
    ("dataset-option-unknown", lambda t, r: ["train", *DIGITS, *S("dataset_options.tst_fraction=0.1")], 2,
     r"takes no option 'tst_fraction'.*did you mean 'test_fraction'"),
    # a student's bad model option is refused before its teacher trains (nothing is left behind)
    ("model-option-value", lambda t, r: ["train", *STUDENT, *S("model_options.shortcut=bogus")], 2,
     r"model_options.shortcut='bogus': choose one of conv, pad"),
    ("model-option-unknown", lambda t, r: ["train", *STUDENT, *S("model_options.foo=1")], 2,
     r"model 'resnet8' takes no option 'foo'"),
    ("epochs-boolean", lambda t, r: ["train", *DIGITS, *S("epochs=true")], 2, r"epochs=True: must be an integer, not a boolean"),
    ("epochs-zero", lambda t, r: ["train", *DIGITS, *S("epochs=0")], 2, r"epochs=0: must be an integer >= 1"),
    ("epochs-empty", lambda t, r: ["train", *DIGITS, *S("epochs=")], 2, r"--set epochs=: empty value"),
    ("teacher-weights-empty", lambda t, r: ["train", *DIGITS, *S("teacher_weights=")], 2, r"--set teacher_weights=: empty value"),
    ("gamma-negative", lambda t, r: ["train", *DIGITS, *S("gamma=-1")], 2, r"gamma=-1: must be > 0"),
    ("gamma-text", lambda t, r: ["train", *DIGITS, *S("gamma=abc")], 2, r"gamma='abc': must be a number"),
    ("hflip-text", lambda t, r: ["train", *DIGITS, *S("hflip=abc")], 2, r"hflip='abc': must be true or false"),
    ("augment-maybe", lambda t, r: ["train", *DIGITS, *S("augment=maybe")], 2, r"augment='maybe': must be true or false"),
    ("seed-too-large", lambda t, r: ["train", *DIGITS, *S("seed=1180591620717411303424")], 2, r"seed=1180591620717411303424: must be an integer in"),
    ("num-threads-negative", lambda t, r: ["train", *DIGITS, *S("num_threads=-1")], 2, r"num_threads=-1: must be an integer >= 1"),
    ("momentum-above-one", lambda t, r: ["train", *DIGITS, *S("momentum=1.5")], 2, r"momentum=1.5: must be in \[0, 1\)"),
    ("batch-size-zero", lambda t, r: ["train", *DIGITS, *S("batch_size=0")], 2, r"batch_size=0: must be an integer >= 1"),
    ("milestones-text", lambda t, r: ["train", *DIGITS, *S("milestones=abc")], 2, r"milestones='abc': must be a list"),
    ("milestones-decreasing", lambda t, r: ["train", *DIGITS, *S("milestones=[290, 260]")], 2, r"milestones=\[290, 260\]: must be increasing"),
    ("weight-decay-negative", lambda t, r: ["train", *DIGITS, *S("weight_decay=-1")], 2, r"weight_decay=-1: must be >= 0"),
    ("device-unknown", lambda t, r: ["train", *DIGITS, *S("device=tpu")], 2, r"device='tpu': use auto, cpu, cuda or cuda:N"),
    # ---- --set keys
    ("legacy-key", lambda t, r: ["train", *DIGITS, *S("kd_weight=0.2")], 2, r"unknown key 'kd_weight': it is now losses.kd.weight"),
    ("typo-key", lambda t, r: ["train", *DIGITS, *S("learning_rate=0.1")], 2, r"unknown key 'learning_rate'"),
    ("near-key", lambda t, r: ["train", *DIGITS, *S("epoch=3")], 2, r"unknown key 'epoch' \(did you mean 'epochs'\?\)"),
    ("no-equals", lambda t, r: ["train", *DIGITS, "--set", "epochs"], 2, r"--set 'epochs': expected key=value"),
    ("nested-under-scalar", lambda t, r: ["train", *DIGITS, *S("seed=3", "seed.x=1")], 2, r"--set seed.x: 'seed' is not a mapping"),
    ("method-unknown", lambda t, r: ["train", *DIGITS, *S("method=dkd")], 2, r"method='dkd'"),
    ("model-typo", lambda t, r: ["train", *DIGITS, *S("model=resnet9")], 2, r"model='resnet9': choose one of .*did you mean"),
    ("dataset-unknown", lambda t, r: ["train", *DIGITS, *S("dataset=mnist")], 2, r"dataset='mnist': choose one of"),
    # ---- loss terms and curriculum
    ("kd-T-zero", lambda t, r: ["train", *STUDENT, *S("losses.kd.T=0")], 2, r"losses.kd.T=0: must be > 0"),
    ("kd-T-text", lambda t, r: ["train", *STUDENT, *S("losses.kd.T=abc")], 2, r"losses.kd.T='abc': must be a number"),
    ("term-unknown", lambda t, r: ["train", *STUDENT, *S("losses.dkdd.weight=1")], 2, r"losses.dkdd: unknown loss term \(did you mean 'dkd'\?\)"),
    ("term-param-unknown", lambda t, r: ["train", *STUDENT, *S("losses.kd.temperature=3")], 2, r"unknown key 'losses.kd.temperature'"),
    ("term-not-a-mapping", lambda t, r: ["train", *STUDENT, *S("losses.kd=3")], 2, r"losses.kd=3: must be a mapping"),
    ("fitnet-stage-out-of-range", lambda t, r: ["train", *STUDENT, *S("losses.fitnet.weight=100", "losses.fitnet.stage=99")], 2,
     r"losses.fitnet.stage=99: out of range for the student resnet8"),
    ("at-p-negative", lambda t, r: ["train", *STUDENT, *S("losses.at.weight=1000", "losses.at.p=-2")], 2, r"losses.at.p=-2: must be > 0"),
    ("dkd-beta-text", lambda t, r: ["train", *STUDENT, *S("losses.dkd.beta=abc")], 2, r"losses.dkd.beta='abc'"),
    ("crd-negatives-zero", lambda t, r: ["train", *STUDENT, *S("losses.crd.negatives=0")], 2, r"losses.crd.negatives=0"),
    ("score-unknown", lambda t, r: ["train", *STUDENT, *S("method=slkd", "curriculum.score=entropy")], 2, r"curriculum.score='entropy': choose one of"),
    ("order-unknown", lambda t, r: ["train", *STUDENT, *S("method=slkd", "curriculum.order=easiest")], 2, r"curriculum.order='easiest'"),
    ("pacing-none", lambda t, r: ["train", *STUDENT, *S("method=slkd", "curriculum.pacing=none")], 2, r"curriculum.pacing='none'"),
    ("pacing-option-bad", lambda t, r: ["train", *STUDENT, *S("method=slkd", "curriculum.pacing=linear", "curriculum.pacing_options.num_phases=0")], 2,
     r"curriculum.pacing_options.num_phases=0: must be an integer >= 1"),
    ("pacing-option-of-another-pacing", lambda t, r: ["train", *STUDENT, *S("method=slkd", "curriculum.pacing_options.num_phases=3")], 2,
     r"unknown key 'curriculum.pacing_options.num_phases'"),
    ("custom-pacing-incomplete", lambda t, r: ["train", *STUDENT, *S("method=slkd", "curriculum.pacing=custom")], 2,
     r"curriculum.pacing_options.phase_ends: missing"),
    ("schedule-too-short", lambda t, r: ["train", *STUDENT, *S("method=slkd", "epochs=3")], 2, r"curriculum: pacing 'authors' at epochs=3"),
    ("curriculum-without-slkd", lambda t, r: ["train", *STUDENT, *S("curriculum.order=random")], 2, r"curriculum is set but method=kd has none"),
    ("kd-without-teacher", lambda t, r: ["train", *DIGITS, *S("method=kd")], 2, r"method='kd' needs a teacher"),
    ("ce-with-kd-term", lambda t, r: ["train", *DIGITS, *S("method=ce", "losses.kd.weight=0.5")], 2, r"losses.kd reads the teacher, but method=ce"),
    ("every-term-off", lambda t, r: ["train", *DIGITS, *S("method=ce", "losses.ce.weight=0")], 2, r"every term has weight 0"),
    ("teacher-model-unknown", lambda t, r: ["train", *DIGITS, *S("method=kd", "teacher.model=nope")], 2, r"teacher: model='nope'"),
    ("teacher-weights-missing", lambda t, r: ["train", *DIGITS, *S("method=kd", "teacher.model=resnet8", f"teacher_weights={t}/none.pt")], 2,
     r"teacher_weights=.*none.pt': no such file"),
    ("teacher-weights-without-model", lambda t, r: ["train", *DIGITS, *S("method=kd", f"teacher_weights={t}/none.pt")], 2,
     r"teacher_weights needs the teacher's architecture"),
    # ---- data
    ("npz-missing", lambda t, r: ["train", *DIGITS, *S("dataset=npz", f"dataset_options.path={t}/missing.npz")], 2, r"not found"),
    ("npz-empty", lambda t, r: ["train", *DIGITS, *S("dataset=npz", f"dataset_options.path={_npz(t / 'e.npz', empty=True)}")], 2, r"e.npz"),
    ("npz-bad-labels", lambda t, r: ["train", *DIGITS, *S("dataset=npz", f"dataset_options.path={_npz(t / 'l.npz', labels=[-1] * 20)}")], 2, r"l.npz"),
    ("npz-not-a-zip", lambda t, r: ["train", *DIGITS, *S("dataset=npz", f"dataset_options.path={_write(t / 'z.npz', b'nope')}")], 2, r"z.npz"),
    ("digits-bad-option", lambda t, r: ["train", *DIGITS, *S("dataset_options.path=x")], 2, r"data set 'digits' takes no option 'path'; it accepts: test_fraction, seed"),
    # ---- files and folders
    ("config-missing", lambda t, r: ["train", "--config", f"{t}/missing.yaml"], 2, r"missing.yaml does not exist"),
    ("config-is-a-folder", lambda t, r: ["train", "--config", str(t)], 2, r"is a folder"),
    ("config-bad-yaml", lambda t, r: ["train", "--config", str(_write(t / "b.yaml", b"epochs: [1, 2"))], 2, r"b.yaml is not valid YAML"),
    ("config-a-list", lambda t, r: ["train", "--config", str(_write(t / "l.yaml", b"- 1\n- 2\n"))], 2, r"must hold a mapping"),
    ("config-legacy-key", lambda t, r: ["train", "--config", str(_write(t / "k.yaml", b"temperature: 4\n"))], 2, r"it is now losses.kd.T"),
    ("results-is-a-file", lambda t, r: ["train", *DIGITS, "--results", str(_write(t / "file", b"x"))], 1, r"is a file, not a results folder"),
    ("results-under-a-file", lambda t, r: ["train", *DIGITS, "--results", str(_write(t / "f2", b"x") / "sub")], 1, r"f2/sub.*(not a folder|is a file)"),
    ("show-empty", lambda t, r: ["show", "", "--results", str(r)], 1, r"no run given"),
    ("show-unknown", lambda t, r: ["show", "nope-", "--results", str(r)], 1, r"no run 'nope-'"),
    ("download-unknown", lambda t, r: ["download", "foo", "--root", str(t / "data")], 1, r"foo: unknown data set 'foo'"),
    ("download-needs-options", lambda t, r: ["download", "npz", "--root", str(t / "data")], 1,
     r"npz: data set 'npz' needs the option path="),
    ("download-root-is-a-file", lambda t, r: ["download", "cifar10", "--root", str(_write(t / "root.yaml", b"x"))], 1,
     r"root.yaml: File exists"),
    ("migrate-no-store", lambda t, r: ["migrate", "--results", f"{t}/nothing"], 1, r"no run store at"),
    # ---- profiles
    ("profile-unknown", lambda t, r: ["reproduce", "--profile", "nope", "--dry-run"], 1, r"unknown profile 'nope'"),
    ("profile-bad-value", lambda t, r: ["reproduce", "--profile", _profile(t, **{"base.lr": "abc"}), "--dry-run"], 1, r"lr='abc': must be a number"),
    ("profile-bad-variant", lambda t, r: ["reproduce", "--profile", _profile(t, **{"ablations.score": ["nope"]}), "--dry-run"], 1,
     r"ablations.score: 'nope' is not a variant"),
    ("profile-legacy-key", lambda t, r: ["reproduce", "--profile", _profile(t, **{"kd_baselines.fitnet": {"fitnet_weight": 100}}), "--dry-run"], 1,
     r"kd_baselines.fitnet: .*fitnet_weight"),
    ("notebook-unknown", lambda t, r: ["reproduce", "--profile", "smoke", "--notebook", "99", "--results", str(r)], 1, r"--notebook '99' matches no notebook"),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def _check_one_line(err: str, pattern: str) -> None:
    import re

    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("kdrepro")]
    errors = [line for line in lines if "error" in line]
    assert len(errors) == 1, err
    assert re.search(pattern, errors[0]), f"{pattern!r} not in {errors[0]!r}"


@pytest.mark.parametrize("name, argv, code, pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_leaves_nothing(name, argv, code, pattern, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ./results and ./data of the CLI are the test's own
    results = tmp_path / "results"
    args = argv(tmp_path, results)
    if "--results" not in args and args[0] in ("train",):
        args += ["--results", str(results)]
    before = _snapshot(tmp_path)
    got = main(args)
    err = capsys.readouterr().err
    assert got == code, err
    _check_one_line(err, pattern)
    after = _snapshot(tmp_path)
    new = {p for p in after - before if not p.endswith((".npz", ".yaml"))}
    assert not [p for p in new if "runs/" in p or p.endswith(".tmp")], new


def test_at_least_forty_cases():
    assert len(CASES) >= 40


# ------------------------------------------------------------------------------------- store and faults


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A store with one finished vanilla run and one finished KD run on digits (1 epoch each)."""
    root = tmp_path_factory.mktemp("store")
    assert main(["train", *DIGITS, "--set", "method=ce", "--results", str(root)]) == 0
    assert main(["train", *STUDENT, "--results", str(root)]) == 0
    return root


def _copy(store: Path, tmp: Path) -> Path:
    out = tmp / "results"
    shutil.copytree(store, out)
    return out


def test_a_corrupt_file_marks_one_run_and_lists_the_others(finished, tmp_path, capsys):
    results = _copy(finished, tmp_path)
    runs = sorted(p for p in (results / "runs").iterdir() if p.is_dir())
    (runs[0] / "summary.json").write_text("{not json")
    lines = (runs[1] / "metrics.jsonl").read_text().splitlines()
    assert main(["runs", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert runs[0].name in out and "bad" in out and "summary.json" in out and "not valid JSON" in out
    assert runs[1].name in out
    (runs[1] / "metrics.jsonl").write_text(lines[0] + "\n{broken\n")
    assert main(["runs", "--json", "--results", str(results)]) == 0
    rows = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[runs[1].name]["status"] == "bad" and "metrics.jsonl" in rows[runs[1].name]["problem"]
    assert "line 2" in rows[runs[1].name]["problem"]
    # show names the file too
    assert main(["show", runs[0].name, "--results", str(results)]) == 1
    _check_one_line(capsys.readouterr().err, r"summary.json: not valid JSON")
    (runs[0] / "config.json").write_text("")
    assert main(["show", runs[0].name, "--results", str(results)]) == 1
    _check_one_line(capsys.readouterr().err, r"config.json: not valid JSON")


def test_a_corrupt_checkpoint_names_the_file_and_never_suggests_unsafe_loading(finished, tmp_path, capsys):
    results = tmp_path / "results"
    args = ["train", *DIGITS, "--set", "method=ce", "--set", "epochs=2", "--results", str(results)]
    # a partial run: copy the 1-epoch run's checkpoint under the 2-epoch run's id
    from kdrepro.cli import build_config

    cfg = build_config(None, [a for a in args[1:-2] if a != "--set"])
    run = results / "runs" / cfg.run_id
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    latest = run / "checkpoints" / "latest.pt"
    latest.write_bytes(b"\x80\x02garbage")
    assert main(args) == 1
    err = capsys.readouterr().err
    _check_one_line(err, r"latest.pt: cannot be read as a checkpoint")
    assert "weights_only=False" not in err and "weights_only" not in err
    import torch

    torch.save({"conv1.weight": torch.zeros(1)}, latest)  # a plain weights file
    assert main(args) == 1
    _check_one_line(capsys.readouterr().err, r"latest.pt is not a kdrepro training checkpoint")
    assert not list(results.rglob("*.tmp"))


def test_an_ambiguous_prefix_lists_the_runs_with_their_labels(finished, capsys):
    assert main(["show", "k", "--results", str(finished)]) == 0  # one KD run: a unique prefix
    assert json.loads(capsys.readouterr().out)["config"]["method"] == "kd"
    assert main(["show", "ce-digits-resnet8-s0-", "--results", str(finished)]) == 1  # the teacher and the vanilla run
    err = capsys.readouterr().err
    _check_one_line(err, r"is ambiguous: 2 runs start with it")
    assert err.count("ce-digits-resnet8-s0-") >= 3


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path, capsys, monkeypatch):
    import kdrepro.rundir as rundir

    real = rundir.os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir.os, "fsync", full)
    results = tmp_path / "results"
    assert main(["train", *DIGITS, "--set", "method=ce", "--results", str(results)]) == 1
    _check_one_line(capsys.readouterr().err, r"cannot write: no space left on the device")
    assert not list(results.rglob("*.tmp")) and not list(results.rglob(".*.tmp"))
    monkeypatch.setattr(rundir.os, "fsync", real)
    assert main(["train", *DIGITS, "--set", "method=ce", "--results", str(results)]) == 0  # resumes, finishes
    assert not list(results.rglob("*.tmp"))


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs /sys, where nobody may create folders")
def test_an_unwritable_results_folder_is_one_line(tmp_path, capsys):
    assert main(["train", *DIGITS, "--set", "method=ce", "--results", "/sys/kdrepro-results"]) == 1
    _check_one_line(capsys.readouterr().err, r"/sys/kdrepro-results.*(not writable|permitted)")


def test_a_download_without_internet_is_one_line(tmp_path, capsys, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(urllib.request.OpenerDirector, "open", offline)
    assert main(["download", "cifar10", "--root", str(tmp_path / "data")]) == 1
    _check_one_line(capsys.readouterr().err, r"cifar10: the download failed .*name resolution")


def test_two_npz_files_give_two_runs(tmp_path, capsys):
    """The data's content is part of the run id: the same command on other data is another run."""
    a, b = _npz(tmp_path / "a.npz"), _npz(tmp_path / "b.npz", n_train=22)
    results = tmp_path / "results"
    common = ["train", *DIGITS, "--set", "method=ce", "--set", "dataset=npz", "--results", str(results)]
    assert main(common + ["--set", f"dataset_options.path={a}"]) == 0
    first = capsys.readouterr().out
    assert main(common + ["--set", f"dataset_options.path={b}"]) == 0
    second = capsys.readouterr().out
    assert "trained" in second and "found finished" not in second
    # the same content at another path is the same run
    shutil.copy(a, tmp_path / "a-copy.npz")
    assert main(common + ["--set", f"dataset_options.path={tmp_path / 'a-copy.npz'}"]) == 0
    assert "found finished" in capsys.readouterr().out
    # the same path with other content is another run
    _npz(a, n_train=24)
    assert main(common + ["--set", f"dataset_options.path={a}"]) == 0
    assert "trained" in capsys.readouterr().out
    assert len([p for p in (results / "runs").iterdir() if p.is_dir()]) == 3
    assert first


def test_a_stored_config_refuses_data_that_changed(tmp_path, capsys):
    """A config that records a data fingerprint never trains on other data."""
    a = _npz(tmp_path / "a.npz")
    results = tmp_path / "results"
    common = ["train", *DIGITS, "--set", "method=ce", "--set", "dataset=npz", "--set", f"dataset_options.path={a}",
              "--results", str(results)]
    assert main(common + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    stored = json.loads(out[out.index("\n{") + 1:])["config"]
    (tmp_path / "run.json").write_text(json.dumps(stored))
    _npz(a, n_train=24)  # the file changes
    assert main(["train", "--config", str(tmp_path / "run.json"), "--results", str(results)]) == 1
    _check_one_line(capsys.readouterr().err, r"are not the data this run was configured for")
    assert not (results / "runs").exists() or not any((results / "runs").iterdir())


def test_help_and_closed_pipe_need_no_traceback(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(f"{sys.executable} -m kdrepro runs --results {tmp_path} | head -c 0", shell=True,
                          capture_output=True, text=True, env=env)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_a_bug_keeps_its_traceback_in_a_log_file(monkeypatch, capsys):
    import kdrepro.cli as cli

    def broken(args):
        raise ZeroDivisionError("division by zero")

    parser = cli.make_parser()
    monkeypatch.setattr(cli, "cmd_runs", broken)
    monkeypatch.setattr(cli, "make_parser", lambda: _with(parser, "runs", broken))
    assert cli.main(["runs"]) == 3
    err = capsys.readouterr().err
    assert "probably a bug" in err and "Traceback" not in err
    log = Path(err.split("full report: ")[1].split(" (or run")[0])
    assert "ZeroDivisionError" in log.read_text() and "Traceback" in log.read_text()
    assert cli.main(["--debug", "runs"]) == 3
    assert "Traceback" in capsys.readouterr().err


def _with(parser, command, func):
    for action in parser._subparsers._group_actions:
        action.choices[command].set_defaults(func=func)
    return parser


def test_a_crash_between_the_last_checkpoint_and_its_metrics_loses_no_epoch(tmp_path, monkeypatch):
    """Killed after the last epoch's checkpoint was saved but before metrics.jsonl was rewritten, a run
    resumes to a summary and a metrics file that both have every epoch."""
    from kdrepro import rundir
    from kdrepro.config import RunConfig
    from kdrepro.runs import RunStore

    cfg = RunConfig.from_dict(dict(method="ce", dataset="digits", model="resnet8", epochs=2, num_threads=1,
                                   progress=False, crop_padding=1, hflip=False))
    store = RunStore(tmp_path)
    original = rundir.RunDir.write_metrics

    def dies_at_the_last_epoch(self, rows):
        if len(rows) == 2:
            raise KeyboardInterrupt("killed")
        original(self, rows)

    monkeypatch.setattr(rundir.RunDir, "write_metrics", dies_at_the_last_epoch)
    with pytest.raises(KeyboardInterrupt):
        store.run(cfg, log=lambda m: None)
    assert len((store.run_dir(cfg) / "metrics.jsonl").read_text().splitlines()) == 1
    monkeypatch.setattr(rundir.RunDir, "write_metrics", original)
    result = store.run(cfg, log=lambda m: None)
    rows = result.metrics()
    assert result.summary["epochs"] == 2 and [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["test_top1"] == result.summary["last_top1"]


@pytest.mark.parametrize("crash_at", ["log", "rename", "summary", "config"])
def test_a_migration_interrupted_anywhere_finishes_when_run_again(crash_at, tmp_path, monkeypatch):
    """``kdrepro migrate`` killed at any step: the re-run finishes the folder, and the old id still finds
    the run through exactly one log row."""
    from kdrepro import migrate, rundir
    from kdrepro.runs import RunStore

    src = sorted((Path(__file__).parent / "data" / "v1_engine").glob("kd-*"))[0]
    root = tmp_path / "results"
    shutil.copytree(src, root / "runs" / src.name)
    (root / "runs" / src.name / "summary.json").write_text(json.dumps({"run_id": src.name, "last_top1": 1.0}))

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    target = {"log": (migrate, "atomic_write"), "rename": (migrate.os, "rename"),
              "summary": (rundir.RunDir, "write_summary"), "config": (rundir.RunDir, "write_config")}[crash_at]
    with monkeypatch.context() as m:
        m.setattr(*target, boom)
        with pytest.raises(KeyboardInterrupt):
            migrate.migrate_store(root, log=lambda line: None)
    again = migrate.migrate_store(root, log=lambda line: None)
    assert [m.action for m in again] == ["migrated"]
    new_id = again[0].new
    folder = root / "runs" / new_id
    assert json.loads((folder / "config.json").read_text())["schema"] == 2
    assert json.loads((folder / "summary.json").read_text())["run_id"] == new_id
    rows = [json.loads(line) for line in (root / "runs" / "migrations.jsonl").read_text().splitlines()]
    assert [(r["old"], r["new"]) for r in rows] == [(src.name, new_id)]
    assert RunStore(root).resolve(src.name) == folder
    assert [m.action for m in migrate.migrate_store(root, log=lambda line: None)] == ["current"]


def test_a_killed_train_command_releases_its_lock_and_resumes(tmp_path):
    """``kill`` (SIGTERM) stops ``kdrepro train`` as Ctrl-C does: exit 130, no lock left behind, the run
    partial, and the same command then resumes it and finishes."""
    import signal
    import time

    argv = [sys.executable, "-m", "kdrepro", "train", *DIGITS[:4], *S("epochs=40", "num_threads=1",
            "progress=false"), "--results", str(tmp_path)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = tmp_path / "runs"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # wait for its first checkpoint
        if list(runs.glob("*/checkpoints/latest.pt")) and list(runs.glob("*.lock")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and not list(runs.glob("*.lock")), err
    run_dir, = [d for d in runs.iterdir() if d.is_dir()]
    assert not (run_dir / "summary.json").exists()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "resumed and finished" in done.stdout, done.stderr


def test_only_the_first_termination_signal_interrupts_so_cleanup_finishes():
    """A second SIGTERM (a process-group kill, then the scheduler stopping its worker) arrives while the
    first one's cleanup runs: it is ignored until the block ends, then the old handler is back."""
    import os
    import signal

    from kdrepro.executors import _terminate_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    cleaned = False
    with pytest.raises(KeyboardInterrupt):
        with _terminate_as_interrupt():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the signal interrupts this at once
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # ignored: the cleanup below still runs
                os.kill(os.getpid(), signal.SIGHUP)
                time.sleep(0.05)
                cleaned = True
    assert cleaned and signal.getsignal(signal.SIGTERM) is before
