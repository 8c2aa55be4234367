"""The engine and run store on the embedded digits data set: end to end, resume after a kill, reuse."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kdrepro import engine
from kdrepro.config import RunConfig
from kdrepro.resolution import resolve
from kdrepro.runs import RunStore, read_metrics

# Tiny but real: digits (8x8, 1 channel), resnet8 student, resnet14 teacher.
BASE = dict(dataset="digits", model="resnet8", epochs=10, batch_size=128, crop_padding=1, hflip=False,
            num_threads=1, progress=False)
TEACHER = dict(model="resnet14", epochs=3)
TIMING_KEYS = {"train_seconds", "wall_seconds"}


def _cfg(**kw) -> RunConfig:
    data = dict(BASE)
    data.update(kw)
    return RunConfig.from_dict(data)


def _strip_times(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return RunStore(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def slkd_result(store):
    return store.run(_cfg(method="slkd", teacher=TEACHER), log=lambda m: None)


def test_slkd_run_follows_the_authors_schedule(slkd_result, store):
    cfg = slkd_result.config
    rows = slkd_result.metrics()
    assert [r["epoch"] for r in rows] == list(range(1, 11))
    # authors' schedule scaled to 10 epochs: round(e * 10 / 300) for e in 40, 70, 110, 150, 200, 300
    ends = [round(e * 10 / 300) for e in (40, 70, 110, 150, 200, 300)]
    assert ends == [1, 2, 4, 5, 7, 10]
    from kdrepro.data import load_dataset

    train = load_dataset("digits", train=True)
    counts = torch.bincount(train.targets, minlength=10)
    expected_fraction = {0: 1.0, 1: 0.2, 2: 0.4, 3: 0.6, 4: 0.8, 5: 1.0}
    for r in rows:
        phase = next(i for i, end in enumerate(ends) if r["epoch"] <= end)
        assert r["phase"] == phase
        assert r["curriculum"] == (phase > 0)
        want = int(sum(math.ceil(expected_fraction[phase] * int(c)) for c in counts))
        assert r["pool_size"] == want
        # the MSE term exists only in curriculum phases
        assert ("train_mse" in r) == (phase > 0)
    # iterations: full batches of 128, plus the remainder as its own batch unless it is under 16 images
    # (then it joins the batch before it)
    its = 0
    for r in rows:
        full, rest = divmod(r["pool_size"], 128)
        its += full + (1 if rest >= 16 or full == 0 else 0)
        assert r["iterations"] == its
    # curriculum files: one per curriculum phase, pools class-balanced by fraction and nested by score
    records = slkd_result.curriculum()
    assert [rec["phase"] for rec in records] == [1, 2, 3, 4, 5]
    for rec in records:
        pool_counts = torch.bincount(rec["targets"][rec["pool"]], minlength=10)
        want = torch.tensor([math.ceil(rec["fraction"] * int(c)) for c in counts])
        assert torch.equal(pool_counts, want)
        # easy first with max logit: every selected image scores >= every unselected one of its class
        for c in range(10):
            in_c = rec["targets"] == c
            chosen = torch.zeros_like(in_c)
            chosen[rec["pool"]] = True
            if (in_c & ~chosen).any():
                assert rec["scores"][in_c & chosen].min() >= rec["scores"][in_c & ~chosen].max()
        assert 0.0 <= rec["snapshot_test_top1"] <= 100.0
    s = slkd_result.summary
    assert s["finished"] and s["epochs"] == 10
    assert s["last_top1"] == rows[-1]["test_top1"]
    assert s["best_top1"] == max(r["test_top1"] for r in rows)
    assert s["teacher_source"] == "cache"
    assert s["environment"]["torch"] == torch.__version__
    # lr follows the recipe's milestones scaled to 10 epochs: round(260/30)=9, round(290/30)=10
    assert cfg.milestones == (9, 10)
    assert [r["lr"] for r in rows] == pytest.approx([0.1] * 9 + [0.01])


def test_finished_run_is_returned_without_training(slkd_result, store, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a finished run must not be trained again")

    monkeypatch.setattr(engine.Trainer, "fit", boom)
    again = store.run(slkd_result.config)
    assert again.summary == slkd_result.summary


def test_teacher_trained_once_and_cache_reused(slkd_result, store):
    kd = store.run(_cfg(method="kd", teacher=TEACHER, epochs=2), log=lambda m: None)
    teachers = [d for d in store.runs_dir.iterdir() if d.name.startswith("ce-digits-resnet14")]
    assert len(teachers) == 1
    assert kd.config.teacher == slkd_result.config.teacher
    assert len(list(store.cache_dir.glob("teacher-logits-*.pt"))) == 1
    assert kd.summary["teacher_source"] == "cache"
    assert "train_kd" in kd.metrics()[0] and "train_mse" not in kd.metrics()[0]


def test_summaries_record_their_weights_and_the_teacher_weights_that_taught_them(slkd_result, store, tmp_path,
                                                                                  weights_file_hash):
    import shutil

    teacher_dir = store.runs_dir / slkd_result.config.teacher_config().run_id
    teacher = store.load(teacher_dir)
    taught_by = weights_file_hash(teacher_dir / "weights.pt")
    assert teacher.summary["weights_hash"] == taught_by and teacher.summary["teacher_weights_hash"] is None
    assert slkd_result.summary["teacher_weights_hash"] == taught_by
    assert slkd_result.summary["weights_hash"] == weights_file_hash(slkd_result.run_dir / "weights.pt")
    assert slkd_result.summary["weights_hash"] != taught_by
    assert "teacher_changed" not in store.load(slkd_result.run_id).summary["flags"]
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
             if line.split(":", 1)[0].strip() == "model name"]
    if names:  # the machine is named: CPU results are bit-exact on one CPU model only
        assert slkd_result.summary["environment"]["device_name"] == names[0]

    # the teacher run trained again elsewhere (other bits under the same id): its old students are flagged
    other = RunStore(tmp_path / "other")
    for d in (teacher_dir, slkd_result.run_dir):
        shutil.copytree(d, other.runs_dir / d.name)
    weights = torch.load(teacher_dir / "weights.pt", weights_only=True)
    first = sorted(k for k, v in weights.items() if v.is_floating_point())[0]
    weights[first] = weights[first] + 1e-3
    torch.save(weights, other.runs_dir / teacher_dir.name / "weights.pt")
    summary_path = other.runs_dir / teacher_dir.name / "summary.json"
    retrained = {**json.loads(summary_path.read_text()), "weights_hash": weights_file_hash(
        other.runs_dir / teacher_dir.name / "weights.pt")}
    assert retrained["weights_hash"] != taught_by
    summary_path.write_text(json.dumps(retrained))
    assert other.load(slkd_result.run_id).summary["flags"] == [*slkd_result.summary["flags"], "teacher_changed"]
    # summaries from before the hashes were kept are not judged
    student_summary = other.runs_dir / slkd_result.run_id / "summary.json"
    old = {k: v for k, v in json.loads(student_summary.read_text()).items() if k != "teacher_weights_hash"}
    student_summary.write_text(json.dumps(old))
    assert "teacher_changed" not in other.load(slkd_result.run_id).summary["flags"]


def test_a_teacher_run_without_its_weights_stops_a_student_with_what_to_do(slkd_result, store, tmp_path):
    import shutil

    teacher_id = slkd_result.config.teacher_config().run_id
    clone = RunStore(tmp_path / "clone")  # as in a fresh clone: the run's files without its weights
    shutil.copytree(store.runs_dir / teacher_id, clone.runs_dir / teacher_id, ignore=shutil.ignore_patterns("*.pt"))
    with pytest.raises(FileNotFoundError, match=rf"teacher run {teacher_id} is finished but its weights .* Restore "
                                                r"the file.*teacher_changed"):
        clone.run(_cfg(method="kd", teacher=TEACHER, epochs=1), log=lambda m: None)
    assert [p.name for p in clone.runs_dir.iterdir() if p.is_dir()] == [teacher_id]  # no half-made student


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    """Kill a real training process mid-run, resume it, and compare with a run never interrupted."""
    args = ["--set", "method=slkd", "--set", "epochs=8", "--set", "dataset=digits", "--set", "model=resnet8",
            "--set", "teacher.model=resnet8", "--set", "teacher.epochs=2", "--set", "crop_padding=1",
            "--set", "hflip=false", "--set", "num_threads=1", "--set", "batch_size=64", "--set", "curriculum.order=random"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "kdrepro", "train", *args]
    ref_root, killed_root = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(cmd + ["--results", str(ref_root)], check=True, env=env, capture_output=True, timeout=600)
    ref = RunStore(ref_root)
    run_dirs = [d for d in ref.runs_dir.iterdir() if d.name.startswith("slkd-")]
    assert len(run_dirs) == 1
    ref_rows = read_metrics(run_dirs[0])

    proc = subprocess.Popen(cmd + ["--results", str(killed_root)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics = killed_root / "runs" / run_dirs[0].name / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail("training finished before it could be killed")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(read_metrics(metrics.parent))
    assert 3 <= done < 8, "the kill must land mid-run"
    assert not (metrics.parent / "summary.json").exists()
    assert RunStore(killed_root).status(metrics.parent) == "partial"
    out = subprocess.run(cmd + ["--results", str(killed_root)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert "resumed" in out.stdout
    assert _strip_times(read_metrics(metrics.parent)) == _strip_times(ref_rows)
    a = json.loads((metrics.parent / "summary.json").read_text())
    b = json.loads((run_dirs[0] / "summary.json").read_text())
    for key in ("last_top1", "best_top1", "best_epoch", "iterations", "images_seen"):
        assert a[key] == b[key]
    # the same pools were selected in every phase (random order draws from the saved generator)
    for f in sorted((run_dirs[0] / "curriculum").glob("*.pt")):
        ra = torch.load(f, weights_only=True)
        rb = torch.load(metrics.parent / "curriculum" / f.name, weights_only=True)
        assert torch.equal(ra["pool"], rb["pool"])


def test_corrupt_and_mismatched_checkpoints_give_clear_errors(tmp_path):
    cfg = _cfg(method="ce", epochs=1).resolved()
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    latest = run_dir / "checkpoints" / "latest.pt"
    latest.write_bytes(b"not a checkpoint")
    with pytest.raises(engine.CheckpointError, match="latest.pt.*delete it"):
        engine.Trainer(cfg, run_dir, log=lambda m: None).fit()
    # a checkpoint written for another architecture
    other = engine.Trainer(cfg.with_overrides(model="resnet14"), tmp_path / "other", log=lambda m: None)
    counters = {"iterations": 0, "images_seen": 0, "train_seconds": 0.0, "total_seconds": 0.0}
    torch.save(other._state(0, 0, torch.arange(3), [], counters), latest)
    with pytest.raises(engine.CheckpointError, match="another architecture or number of classes"):
        engine.Trainer(cfg, run_dir, log=lambda m: None).fit()
    # a plain weights file where the training checkpoint should be
    torch.save(other.student.state_dict(), latest)
    with pytest.raises(engine.CheckpointError, match="not a kdrepro training checkpoint.*delete it"):
        engine.Trainer(cfg, run_dir, log=lambda m: None).fit()


def test_quirks_change_the_run(store):
    """The authors' quirks are options: no augmentation in the warm-up, MSE to the snapshot."""
    custom = {"pacing": "custom", "pacing_options": {"warmup": 1, "phase_ends": [2, 4], "fractions": [0.5, 1.0]}}
    base = _cfg(method="slkd", teacher=TEACHER, epochs=4, curriculum=custom)
    plain = store.run(base, log=lambda m: None).metrics()
    quirky = store.run(base.with_overrides(curriculum={**custom, "quirk_no_warmup_augment": True},
                                           losses={"mse": {"target": "snapshot"}}), log=lambda m: None).metrics()
    assert plain[0]["train_loss"] != quirky[0]["train_loss"]  # warm-up without augmentation
    assert plain[1]["train_mse"] != quirky[1]["train_mse"]
    assert [r["pool_size"] for r in plain] == [r["pool_size"] for r in quirky]
    assert plain[0]["pool_size"] > plain[1]["pool_size"]  # warm-up on all data, then half of each class


def test_full_pacing_is_kd_with_the_mse_term_after_the_warm_up(store):
    """Pacing ``full`` (a control): every image in every epoch, KD's steps, and the MSE term on exactly
    from the end of the authors' warm-up (epoch round(40 * 10 / 300) = 1 of 10)."""
    full = store.run(_cfg(method="slkd", teacher=TEACHER, curriculum={"pacing": "full"}), log=lambda m: None)
    kd = store.run(_cfg(method="kd", teacher=TEACHER), log=lambda m: None)
    rows = full.metrics()
    assert {r["pool_size"] for r in rows} == {1438}  # digits' training set, every epoch
    assert full.summary["iterations"] == kd.summary["iterations"] == 10 * 12
    assert [r["curriculum"] for r in rows] == [False] + [True] * 9
    assert "train_mse" not in rows[0] and all(r["train_mse"] > 0 for r in rows[1:])
    # the warm-up is plain KD: same loss as the KD run's first epoch (same seed, data order and teacher)
    assert rows[0]["train_loss"] == pytest.approx(kd.metrics()[0]["train_loss"], rel=1e-6)


def test_batches_merge_only_a_tiny_remainder():
    order = torch.arange(1154)  # digits' 80 % pool: 9 x 128 + 2
    sizes = [len(b) for b in engine.batches(order, 128)]
    assert sizes == [128] * 8 + [130]
    assert torch.equal(torch.cat(engine.batches(order, 128)), order)
    assert [len(b) for b in engine.batches(torch.arange(10016), 128)] == [128] * 78 + [32]  # 32 >= 16: kept
    assert [len(b) for b in engine.batches(torch.arange(5), 128)] == [5]


def test_a_diverging_run_stops_and_is_recorded_as_diverged(tmp_path):
    cfg = _cfg(method="ce", epochs=2, lr=1e6).resolved()
    logged = []
    trainer = engine.Trainer(cfg, tmp_path / "run", log=logged.append)
    summary = trainer.fit()
    assert summary["flags"] == ["diverged"] and summary["diverged"]["epoch"] == 1 and summary["epochs"] == 0
    assert summary["last_top1"] is None
    assert read_metrics(tmp_path / "run") == []  # nothing of the diverged epoch was saved
    assert any("diverged in epoch 1" in m for m in logged)


def test_planned_steps_are_the_steps_a_run_takes(slkd_result, store):
    """``engine.planned_steps`` (used to match KD's budget to SLKD's steps) against what training counted."""
    from kdrepro.data import load_dataset

    targets = load_dataset("digits", train=True).targets
    assert engine.planned_steps(slkd_result.config, targets) == slkd_result.summary["iterations"]
    kd = store.run(_cfg(method="kd", teacher=TEACHER, epochs=3), log=lambda m: None)
    assert engine.planned_steps(kd.config, targets) == kd.summary["iterations"] == 3 * 12  # 1,438 images / 128


@pytest.mark.slow
def test_two_students_sharing_an_untrained_teacher_train_it_once(tmp_path):
    """Started side by side, the second student waits for the teacher the first is training, then reuses it."""
    common = [sys.executable, "-m", "kdrepro", "train", "--results", str(tmp_path), "--set", "dataset=digits",
              "--set", "epochs=7", "--set", "crop_padding=1", "--set", "hflip=false", "--set", "num_threads=1",
              "--set", "progress=false", "--set", "teacher.model=resnet14", "--set", "teacher.epochs=60"]
    # 60 teacher epochs (about 17 s on one core): at 6 epochs the teacher took 1.7 s on a fast CPU, less than
    # the second process needs to start, so it sometimes found the teacher already finished
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    first = subprocess.Popen(common + ["--set", "method=kd"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    lock_glob = lambda: list((tmp_path / "runs").glob("ce-digits-resnet14-*.lock"))  # noqa: E731
    deadline = time.time() + 120
    while not lock_glob() and time.time() < deadline:
        time.sleep(0.05)
    assert lock_glob(), "the first student never started its teacher"
    second = subprocess.run(common + ["--set", "method=slkd"], env=env, capture_output=True, text=True, timeout=600)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert second.returncode == 0, second.stderr
    assert "is being trained by process" in second.stderr and "waiting for it" in second.stderr
    teachers = [d for d in (tmp_path / "runs").iterdir() if d.is_dir() and d.name.startswith("ce-digits-resnet14")]
    assert len(teachers) == 1
    assert "resuming" not in second.stderr  # the second process never trained (or resumed) the teacher


def test_float32_on_cuda_turns_tf32_off_for_convolutions_and_matrix_products():
    """A float32 run on a GPU must not silently compute in TF32 (cuDNN's convolutions do by default)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        engine.float32_on_cuda()
        assert torch.backends.cudnn.allow_tf32 is False
        assert torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_a_users_curriculum_object_scores_and_pools_as_the_engine(slkd_result):
    """A user's :class:`kdrepro.Curriculum` over a plain TensorDataset of the same images (normalised as the
    engine does), with the same pacing, has the engine's schedule; scoring the engine's saved snapshots gives
    the engine's recorded scores, and for those scores its pools are the engine's pools."""
    from torch.utils.data import TensorDataset

    from kdrepro.curriculum import Curriculum
    from kdrepro.data import load_dataset
    from kdrepro.models import create_model

    train = load_dataset("digits", train=True)
    view = TensorDataset(train.normalize(train.images), train.targets.clone())
    cur = Curriculum(view, epochs=10)
    assert list(cur.schedule) == list(resolve(slkd_result.config).schedule)
    records = slkd_result.curriculum()
    assert records
    for rec in records:
        phase = cur.schedule[rec["phase"]]
        snapshot = create_model("resnet8", 10, in_channels=1)
        snapshot.load_state_dict(torch.load(slkd_result.run_dir / "snapshots" / f"phase{rec['phase']}.pt",
                                            weights_only=True))
        scores = cur.scores(snapshot, device="cpu")
        assert torch.allclose(scores, rec["scores"], rtol=0, atol=1e-4)
        assert torch.equal(cur.select(phase, rec["scores"]), rec["pool"])


def test_cpu_model_names_family_model_and_the_widest_vector_extension(monkeypatch):
    """Two CPUs reported as "AMD EPYC" rounded differently (tests/data/v1_engine/README.md): a CPU run's summary
    records the family, model and widest vector extension beside the name."""
    from kdrepro import engine

    monkeypatch.setattr(engine, "_cpuinfo", lambda: {"cpu family": "25", "model": "17",
                                                     "flags": "fpu sse4_2 avx avx2 avx512f avx512bw"})
    assert engine.cpu_model() == "family 25 model 17 avx512f"
    monkeypatch.setattr(engine, "_cpuinfo", lambda: {"cpu family": "6", "model": "85", "flags": "fpu sse4_2 avx"})
    assert engine.cpu_model() == "family 6 model 85 avx"
    monkeypatch.setattr(engine, "_cpuinfo", lambda: {})
    assert engine.cpu_model() == "unknown"
    env = engine.environment(engine.torch.device("cpu"))
    assert env["cpu_model"] == "unknown" and env["device_name"] == engine.cpu_name()
