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
    ("lr-huge-integer", lambda t, r: ["train", *DIGITS, *S("lr=1" + "0" * 400)], 2, r"lr=10+\.\.\.: must be a finite number"),
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
    ("num-threads-negative", lambda t, r: ["train", *DIGITS, *S("num_threads=-1")], 2, r"num_threads=-1: must be an integer in 1..1024"),
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
    ("kd-T-zero", lambda t, r: ["train", *STUDENT, *S("losses.kd.T=0")], 2, r"losses.kd.T=0: must be in \[0.1, 100\]"),
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
    ("profile-unknown", lambda t, r: ["reproduce", "--profile", "nope", "--dry-run"], 2, r"unknown profile 'nope'"),
    ("profile-bad-value", lambda t, r: ["reproduce", "--profile", _profile(t, **{"base.lr": "abc"}), "--dry-run"], 2, r"lr='abc': must be a number"),
    ("profile-bad-variant", lambda t, r: ["reproduce", "--profile", _profile(t, **{"ablations.score": ["nope"]}), "--dry-run"], 2,
     r"ablations.score: 'nope' is not a variant"),
    ("profile-legacy-key", lambda t, r: ["reproduce", "--profile", _profile(t, **{"kd_baselines.fitnet": {"fitnet_weight": 100}}), "--dry-run"], 2,
     r"kd_baselines.fitnet: .*fitnet_weight"),
    ("notebook-unknown", lambda t, r: ["reproduce", "--profile", "smoke", "--notebook", "99", "--results", str(r)], 1, r"--notebook '99' matches no notebook"),
]

# issue 28: every case of the issue, then further cases in the same spirit. A row may carry a fifth element,
# the environment variables it sets.
BOMB = "[" + ", ".join(["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]"
                                                                for i in range(1, 9)]) + "]"
CASES += [
    # ---- empty strings where a path or a name is meant
    ("config-empty-path", lambda t, r: ["train", "--config", ""], 2, r"config file '': empty path"),
    ("device-empty", lambda t, r: ["train", *DIGITS, "--device", ""], 2, r"device='': use auto, cpu, cuda or cuda:N"),
    ("results-empty", lambda t, r: ["train", *DIGITS, "--results", ""], 2, r"--results '': empty path"),
    ("results-env-empty", lambda t, r: ["runs"], 2, r"KDREPRO_RESULTS is set but empty", {"KDREPRO_RESULTS": ""}),
    ("reproduce-results-env-empty", lambda t, r: ["reproduce", "--profile", "smoke", "--dry-run"], 2,
     r"KDREPRO_RESULTS is set but empty", {"KDREPRO_RESULTS": ""}),
    ("reproduce-results-empty", lambda t, r: ["reproduce", "--profile", "smoke", "--dry-run", "--results", ""], 2,
     r"--results '': empty path"),
    ("profile-empty-name", lambda t, r: ["reproduce", "--profile", "", "--dry-run"], 2, r"--profile '': empty"),
    ("method-empty", lambda t, r: ["train", *DIGITS, *S("method=''")], 2, r"method=''"),
    ("model-empty", lambda t, r: ["train", *DIGITS, *S("model=''")], 2, r"model='': choose one of"),
    ("dataset-empty", lambda t, r: ["train", *DIGITS, *S("dataset=''")], 2, r"dataset='': choose one of"),
    ("teacher-model-empty", lambda t, r: ["train", *STUDENT, *S("teacher.model=''")], 2, r"teacher: model='': choose one of"),
    ("recipe-empty", lambda t, r: ["train", *DIGITS, *S("recipe=''")], 2, r"recipe='': choose one of"),
    ("order-empty", lambda t, r: ["train", *STUDENT, *S("method=slkd", "curriculum.order=''")], 2, r"curriculum.order=''"),
    # ---- the teacher
    ("teacher-of-a-teacher", lambda t, r: ["train", *STUDENT, *S("teacher.teacher.model=resnet8")], 2,
     r"teacher.teacher: a teacher is trained with method=ce and has no teacher of its own"),
    ("teacher-weights-of-a-teacher", lambda t, r: ["train", *STUDENT, *S(f"teacher.teacher_weights={t}/x.pt")], 2,
     r"teacher.teacher_weights: a teacher is trained with method=ce"),
    ("teacher-on-other-data", lambda t, r: ["train", *STUDENT, *S("teacher.dataset=cifar10")], 2,
     r"teacher.dataset='cifar10': a teacher is trained on the student's data \(dataset='digits'\)"),
    # bad teacher checkpoints: issue 29's loader names them; the CLI gives exit 1 (a damaged file)
    ("teacher-checkpoint-text", lambda t, r: ["train", *STUDENT, *S(f"teacher_weights={_write(t / 'w.pt', b'hello')}")], 1,
     r"w.pt' is a text file, not a PyTorch checkpoint"),
    ("teacher-checkpoint-truncated", lambda t, r: ["train", *STUDENT, *S(f"teacher_weights={_truncated_checkpoint(t)}")], 1,
     r"t.pt' is a zip archive but not a readable PyTorch checkpoint"),
    ("teacher-checkpoint-pickled-code", lambda t, r: ["train", *STUDENT, *S(f"teacher_weights={_pickled_code(t)}")], 1,
     r"e.pt' with torch.load\(weights_only=True\): it holds a posix.system"),
    ("teacher-checkpoint-wrong-architecture", lambda t, r: ["train", *STUDENT, *S(f"teacher_weights={_plain_checkpoint(t)}")], 1,
     r"p.pt"),
    # ---- values that make no sense
    ("kd-T-tiny", lambda t, r: ["train", *STUDENT, *S("losses.kd.T=1e-30")], 2, r"losses.kd.T='1e-30': must be in \[0.1, 100\]"),
    ("kd-T-huge", lambda t, r: ["train", *STUDENT, *S("losses.kd.T=1000")], 2, r"losses.kd.T=1000: must be in \[0.1, 100\]"),
    ("dkd-T-tiny", lambda t, r: ["train", *STUDENT, *S("losses.dkd.weight=1", "losses.dkd.T=0.01")], 2, r"losses.dkd.T=0.01: must be in"),
    ("kd-weight-huge", lambda t, r: ["train", *STUDENT, *S("losses.kd.weight=1e9")], 2, r"losses.kd.weight='1e9': must be in \[0, 100000\]"),
    ("kd-weight-negative", lambda t, r: ["train", *STUDENT, *S("losses.kd.weight=-1")], 2, r"losses.kd.weight=-1: must be in \[0, 100000\]"),
    ("mse-weight-huge", lambda t, r: ["train", *STUDENT, *S("losses.mse.weight=1000000")], 2, r"losses.mse.weight=1000000: must be in"),
    ("dkd-beta-negative", lambda t, r: ["train", *STUDENT, *S("losses.dkd.weight=1", "losses.dkd.beta=-8")], 2, r"losses.dkd.beta=-8: must be in"),
    ("at-weight-huge", lambda t, r: ["train", *STUDENT, *S("losses.at.weight=1e6")], 2, r"losses.at.weight='1e6': must be in"),
    ("ce-weight-huge", lambda t, r: ["train", *DIGITS, *S("losses.ce.weight=200000")], 2, r"losses.ce.weight=200000: must be in"),
    ("milestones-repeated", lambda t, r: ["train", *DIGITS, *S("epochs=3", "milestones=[2, 2]")], 2,
     r"milestones=\[2, 2\]: must be increasing, each epoch once"),
    ("milestones-beyond-epochs", lambda t, r: ["train", *DIGITS, *S("epochs=3", "milestones=[2, 5]")], 2,
     r"milestones=\[2, 5\]: every milestone must be an epoch within epochs=3"),
    ("milestones-zero", lambda t, r: ["train", *DIGITS, *S("milestones=[0]")], 2, r"milestones.0=0: must be an integer >= 1"),
    ("num-threads-huge", lambda t, r: ["train", *DIGITS, *S("num_threads=100000")], 2, r"num_threads=100000: must be an integer in 1..1024"),
    ("cache-threads-huge", lambda t, r: ["train", *DIGITS, *S("cache_threads=5000")], 2, r"cache_threads=5000: must be an integer in 1..1024"),
    ("device-cuda-absent", lambda t, r: ["train", *DIGITS, *S("device=cuda")], 2, r"device='cuda': this machine has"),
    ("device-cuda-index", lambda t, r: ["train", *DIGITS, "--device", "cuda:99"], 2, r"device='cuda:99': this machine has"),
    ("nesterov-without-momentum", lambda t, r: ["train", *DIGITS, *S("nesterov=true", "momentum=0")], 2,
     r"nesterov=true with momentum=0: Nesterov momentum needs momentum > 0"),
    ("crop-padding-image-size", lambda t, r: ["train", *DIGITS, *S("crop_padding=8")], 2,
     r"crop_padding=8: must be smaller than the digits images' side \(8 pixels"),
    ("crd-negatives-huge", lambda t, r: ["train", *STUDENT, *S("losses.crd.weight=0.8", "losses.crd.negatives=100000000")], 2,
     r"losses.crd.negatives=100000000: must be an integer in 1..65536"),
    ("crd-negatives-float-text", lambda t, r: ["train", *STUDENT, *S("losses.crd.negatives=1e8")], 2,
     r"losses.crd.negatives='1e8': must be an integer"),
    # ---- npz labels
    ("npz-test-label-unseen", lambda t, r: ["train", *DIGITS, *S("dataset=npz", f"dataset_options.path={_labels(t, 'u', [0, 1] * 10, [0, 1, 2])}")], 2,
     r"u.npz: labels must lie in \[0, 2\), found range \[0, 2\]"),
    ("npz-label-255", lambda t, r: ["train", *DIGITS, *S("dataset=npz", f"dataset_options.path={_labels(t, 'b', [0, 1] * 9 + [0, 255], [0, 1])}")], 2,
     r"b.npz: the training labels must use every class 0..255; 253 class\(es\) have no training image"),
    ("npz-label-huge", lambda t, r: ["train", *DIGITS, *S("dataset=npz", f"dataset_options.path={_labels(t, 'h', [0, 1] * 9 + [0, 10 ** 8], [0, 1])}")], 2,
     r"h.npz: the training labels must use every class 0..100000000"),
    ("npz-label-huge-dry-run", lambda t, r: ["train", *DIGITS, "--dry-run", *S("dataset=npz", f"dataset_options.path={_labels(t, 'h', [0, 1] * 9 + [0, 10 ** 8], [0, 1])}")], 2,
     r"h.npz: the training labels must use every class"),
    ("npz-class-missing-in-training", lambda t, r: ["train", *DIGITS, *S("dataset=npz", f"dataset_options.path={_labels(t, 'g', [0, 2] * 10, [0, 1])}")], 2,
     r"g.npz: the training labels must use every class 0..2; 1 class\(es\) have no training image \(first: \[1\]\)"),
    ("npz-float-labels", lambda t, r: ["train", *DIGITS, *S("dataset=npz", f"dataset_options.path={_labels(t, 'f', [0.0, 1.0] * 10, [0, 1])}")], 2,
     r"f.npz: labels must be integers"),
    # ---- config files: bounded, regular, no duplicate keys
    ("config-duplicate-key", lambda t, r: ["train", "--config", str(_write(t / "d.yaml", b"epochs: 1\nlr: 0.1\nepochs: 3\n"))], 2,
     r"d.yaml line 3: the key 'epochs' appears twice in one mapping"),
    ("config-duplicate-nested-key", lambda t, r: ["train", "--config", str(_write(t / "n.yaml", b"losses:\n  kd: {T: 3, T: 4}\n"))], 2,
     r"n.yaml line 2: the key 'T' appears twice"),
    ("config-fifo", lambda t, r: ["train", "--config", _fifo(t)], 2, r"fifo.yaml is not a regular file"),
    ("config-device-file", lambda t, r: ["train", "--config", "/dev/zero"], 2, r"/dev/zero is not a regular file"),
    ("config-alias-bomb", lambda t, r: ["train", "--config", str(_write(t / "bomb.yaml", f"milestones: {BOMB}\n".encode()))], 2,
     r"bomb.yaml expands to more than 100000 values"),
    ("config-too-many-aliases", lambda t, r: ["train", "--config", str(_write(t / "al.yaml", ("a: &x 1\nm: [" + ", ".join(["*x"] * 150) + "]\n").encode()))], 2,
     r"al.yaml uses more than 100 YAML aliases"),
    ("config-nested-deep", lambda t, r: ["train", "--config", str(_write(t / "deep.yaml", b"[" * 20000 + b"]" * 20000))], 2,
     r"deep.yaml nests deeper than 32 levels"),
    ("config-nested-deep-mapping", lambda t, r: ["train", "--config", str(_write(t / "deepm.yaml", b"a: {" * 40 + b"b: 1" + b"}" * 40))], 2,
     r"deepm.yaml nests deeper than 32 levels"),
    ("config-integer-key", lambda t, r: ["train", "--config", str(_write(t / "ik.yaml", b"1: 2\n"))], 2, r"ik.yaml line 1: the key 1 is not a name"),
    ("config-null-key", lambda t, r: ["train", "--config", str(_write(t / "nk.yaml", b"~: 2\n"))], 2, r"nk.yaml line 1: the key None is not a name"),
    ("config-empty-key", lambda t, r: ["train", "--config", str(_write(t / "ek.yaml", b"'': 2\n"))], 2, r"ek.yaml line 1: the key '' is not a name"),
    ("config-too-large", lambda t, r: ["train", "--config", str(_write(t / "big.yaml", b"# x\n" * 300000))], 2,
     r"big.yaml is 1200000 bytes, more than the 1048576"),
    ("config-not-utf8", lambda t, r: ["train", "--config", str(_write(t / "bin.yaml", b"\xff\xfe\x00epochs"))], 2, r"bin.yaml cannot be read"),
    ("config-a-number", lambda t, r: ["train", "--config", str(_write(t / "num.yaml", b"3\n"))], 2, r"must hold a mapping of run-config keys, not a int"),
    ("config-tab-indent", lambda t, r: ["train", "--config", str(_write(t / "tab.yaml", b"losses:\n\tkd: 1\n"))], 2, r"tab.yaml is not valid YAML/JSON"),
    ("config-unknown-key", lambda t, r: ["train", "--config", str(_write(t / "uk.yaml", b"epochz: 3\n"))], 2, r"unknown key 'epochz'"),
    # ---- --set: bounded keys and values
    ("set-alias-bomb", lambda t, r: ["train", *DIGITS, "--set", f"milestones={BOMB}"], 2, r"--set milestones=.*expands to more than 100000"),
    ("set-deep-value", lambda t, r: ["train", *DIGITS, "--set", "milestones=" + "[" * 100 + "]" * 100], 2, r"nests deeper than 32 levels"),
    ("set-deep-key", lambda t, r: ["train", *DIGITS, "--set", ".".join(["a"] * 50) + "=1"], 2, r"the key is too long or too deeply nested"),
    ("set-empty-key", lambda t, r: ["train", *DIGITS, "--set", "=3"], 2, r"--set '=3': empty key"),
    ("set-empty-key-part", lambda t, r: ["train", *DIGITS, "--set", "losses..kd=3"], 2, r"empty key"),
    ("set-long-value-cut", lambda t, r: ["train", *DIGITS, "--set", "lr=" + "x" * 100000], 2, r"lr='xxxx.*\.\.\.: must be a number"),
    ("set-long-list-cut", lambda t, r: ["train", *DIGITS, "--set", "milestones=[" + ", ".join(["1"] * 5000) + "]"], 2,
     r"milestones=\[1, 1, .*\.\.\.: must be increasing"),
    ("set-bad-yaml", lambda t, r: ["train", *DIGITS, "--set", "milestones=[1, 2"], 2, r"--set milestones=.*is not valid YAML/JSON"),
    # ---- other values
    ("lr-negative", lambda t, r: ["train", *DIGITS, *S("lr=-1")], 2, r"lr=-1: must be > 0"),
    ("lr-zero", lambda t, r: ["train", *DIGITS, *S("lr=0")], 2, r"lr=0: must be > 0"),
    ("gamma-zero", lambda t, r: ["train", *DIGITS, *S("gamma=0")], 2, r"gamma=0: must be > 0"),
    ("momentum-negative", lambda t, r: ["train", *DIGITS, *S("momentum=-0.1")], 2, r"momentum=-0.1: must be in \[0, 1\)"),
    ("epochs-fraction", lambda t, r: ["train", *DIGITS, *S("epochs=1.5")], 2, r"epochs=1.5: must be an integer"),
    ("batch-size-text", lambda t, r: ["train", *DIGITS, *S("batch_size=lots")], 2, r"batch_size='lots': must be an integer"),
    ("seed-text", lambda t, r: ["train", *DIGITS, *S("seed=abc")], 2, r"seed='abc': must be an integer"),
    ("recipe-unknown", lambda t, r: ["train", *DIGITS, *S("recipe=paper")], 2, r"recipe='paper': choose one of"),
    ("teacher-not-a-mapping", lambda t, r: ["train", *DIGITS, *S("method=kd", "teacher=resnet8")], 2, r"teacher"),
    ("losses-not-a-mapping", lambda t, r: ["train", *DIGITS, *S("losses=3")], 2, r"losses"),
    ("wait-negative", lambda t, r: ["train", *DIGITS, "--wait", "-1"], 2, r"argument --wait: must be a number of seconds >= 0"),
    ("wait-nan", lambda t, r: ["train", *DIGITS, "--wait", "nan"], 2, r"argument --wait: must be a number of seconds >= 0"),
    ("lock-stale-env-bad", lambda t, r: ["runs", "--results", str(r)], 2, r"KDREPRO_LOCK_STALE='0': must be a positive number",
     {"KDREPRO_LOCK_STALE": "0"}),
    # ---- profiles
    ("profile-duplicate-key", lambda t, r: ["reproduce", "--profile", _profile_text(t, "seeds: [0]\n"), "--dry-run"], 2,
     r"line \d+: the key 'seeds' appears twice"),
    ("profile-no-datasets", lambda t, r: ["reproduce", "--profile", _profile(t, datasets=[]), "--dry-run"], 2, r"datasets: empty"),
    ("profile-fifo", lambda t, r: ["reproduce", "--profile", _fifo(t), "--dry-run"], 2, r"fifo.yaml is not a regular file"),
    ("profile-alias-bomb", lambda t, r: ["reproduce", "--profile", _profile_text(t, f"extra: {BOMB}\n"), "--dry-run"], 2,
     r"expands to more than 100000 values"),
    ("profile-null-key", lambda t, r: ["reproduce", "--profile", _profile_text(t, "~: 1\n"), "--dry-run"], 2,
     r"the key None is not a name; keys are non-empty text or integers"),
    ("profile-empty-file", lambda t, r: ["reproduce", "--profile", str(_write(t / "e.yaml", b"")), "--dry-run"], 2, r"e.yaml: a profile must be a mapping"),
    ("profile-seeds-text", lambda t, r: ["reproduce", "--profile", _profile(t, seeds="abc"), "--dry-run"], 2, r"seeds"),
    ("profile-missing-file", lambda t, r: ["reproduce", "--profile", f"{t}/none.yaml", "--dry-run"], 2, r"none.yaml does not exist"),
    ("reproduce-jobs-negative", lambda t, r: ["reproduce", "--profile", "smoke", "--jobs", "-1", "--dry-run"], 1, r"--jobs must be 0 or more"),
    # ---- show, runs and other commands
    ("show-a-system-file", lambda t, r: ["show", "/etc/passwd", "--results", str(r)], 1, r"/etc/passwd is not a run folder"),
    ("show-a-folder-not-a-run", lambda t, r: ["show", str(t), "--results", str(r)], 1, r"is not a run folder \(no config.json"),
    ("show-parent-path", lambda t, r: ["show", "../x", "--results", str(r)], 1, r"\.\./x is not a run folder"),
    ("runs-results-is-a-file", lambda t, r: ["runs", "--results", str(_write(t / "rf", b"x"))], 1, r"is a file, not a results folder"),
    ("migrate-results-empty", lambda t, r: ["migrate", "--results", ""], 2, r"--results '': empty path"),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _fifo(tmp: Path) -> str:
    path = tmp / "fifo.yaml"
    os.mkfifo(path)
    return str(path)


def _labels(tmp: Path, name: str, train: list, test: list) -> Path:
    rng = np.random.default_rng(0)
    path = tmp / f"{name}.npz"
    np.savez(path, x_train=rng.integers(0, 255, (len(train), 3, 8, 8), dtype=np.uint8), y_train=np.asarray(train),
             x_test=rng.integers(0, 255, (len(test), 3, 8, 8), dtype=np.uint8), y_test=np.asarray(test))
    return path


def _plain_checkpoint(tmp: Path) -> Path:
    import torch

    torch.save({"conv.weight": torch.zeros(3)}, tmp / "p.pt")
    return tmp / "p.pt"


def _truncated_checkpoint(tmp: Path) -> Path:
    data = _plain_checkpoint(tmp).read_bytes()
    return _write(tmp / "t.pt", data[: len(data) // 2])


class _Code:
    def __reduce__(self):
        return (os.system, ("true",))


def _pickled_code(tmp: Path) -> Path:
    import torch

    torch.save({"x": _Code()}, tmp / "e.pt")
    return tmp / "e.pt"


def _profile_text(tmp: Path, extra: str) -> str:
    """The smoke profile's text with ``extra`` appended (a duplicate key, an unknown one)."""
    from kdrepro.experiments import PROFILE_DIR

    path = tmp / "p.yaml"
    path.write_text((PROFILE_DIR / "smoke.yaml").read_text() + extra)
    return str(path)


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def _check_one_line(err: str, pattern: str) -> None:
    import re

    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("kdrepro")]
    errors = [line for line in lines if "error" in line]
    assert len(errors) == 1, err
    assert re.search(pattern, errors[0]), f"{pattern!r} not in {errors[0]!r}"


#: seconds one row may take (a hang fails the row instead of the whole run)
TIME_LIMIT = 120


class _TimeLimit(BaseException):
    """Raised by the alarm inside a row that runs past :data:`TIME_LIMIT` (not an Exception: the CLI must not
    turn it into an exit status)."""


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_leaves_nothing(case, tmp_path, capsys, monkeypatch):
    import signal

    name, argv, code, pattern, *env = case
    for key, value in (env[0] if env else {}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # ./results and ./data of the CLI are the test's own
    results = tmp_path / "results"
    args = argv(tmp_path, results)
    if "--results" not in args and args[0] in ("train",):
        args += ["--results", str(results)]
    before = _snapshot(tmp_path)

    def too_long(signum, frame):
        raise _TimeLimit(f"{name} ran past {TIME_LIMIT} s")

    old = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(TIME_LIMIT)
    try:
        got = main(args)
    except SystemExit as exit:  # argparse's own refusals (exit 2, a usage line)
        got = exit.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    err = capsys.readouterr().err
    assert got == code, err
    _check_one_line(err, pattern)
    assert max(len(line) for line in err.splitlines()) < 2100, "an error line longer than the message limit"
    after = _snapshot(tmp_path)
    new = {p for p in after - before if not p.endswith((".npz", ".yaml"))}
    assert not [p for p in new if "runs/" in p or p.endswith((".tmp", ".lock", ".running.ipynb"))], new


def test_at_least_forty_cases():
    assert len(CASES) >= 40 + 37 + 50  # issues 13/15, issue 28's cases, 50 more of issue 28


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


def test_a_run_that_fails_before_its_first_epoch_leaves_no_folder(tmp_path, monkeypatch, capsys):
    """A crash inside the first epoch (here: an error raised by the training step) removes the new run's
    config-only folder; the lock is released."""
    from kdrepro.engine import Trainer

    def broken(self, *args, **kwargs):
        raise RuntimeError("boom in the first epoch")

    monkeypatch.setattr(Trainer, "train_epoch", broken)
    results = tmp_path / "results"
    assert main(["train", *DIGITS, "--results", str(results)]) == 3  # an unexpected error: a bug
    assert "boom in the first epoch" in capsys.readouterr().err
    runs = results / "runs"
    assert not runs.exists() or not any(runs.iterdir()), sorted(runs.iterdir())


def test_a_killed_reproduce_leaves_no_running_notebook_for_long(tmp_path):
    """A ``.running.ipynb`` whose process is gone (a killed ``reproduce``) is removed when the notebook runs
    next; one of a live process is kept."""
    from kdrepro.reproduce import remove_abandoned

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f".01_teachers.{dead.pid}.running.ipynb"
    live = tmp_path / f".01_teachers.{os.getppid()}.running.ipynb"
    other = tmp_path / f".02_kd.{dead.pid}.running.ipynb"
    for p in (gone, live, other):
        p.write_text("{}")
    assert remove_abandoned(tmp_path, "01_teachers") == [gone]
    assert not gone.exists() and live.exists() and other.exists()


def test_every_shipped_profile_passes_the_bounded_reader():
    from kdrepro.experiments import list_profiles, load_profile

    assert len(list_profiles()) >= 5
    for name in list_profiles():
        assert load_profile(name).name == name


def test_every_terms_published_default_weight_is_accepted():
    """The weight bound admits every term's default (RepDistiller's published weights, PKT's 30,000 the largest)."""
    from kdrepro.terms import TERMS

    assert len(TERMS.names()) >= 15
    for name in TERMS.names():
        params = TERMS.get(name).Params
        defaults = params().model_dump()
        assert params(**defaults).model_dump() == defaults  # validated, not only constructed
