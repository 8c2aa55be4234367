"""Executors (kdrepro.executors): a profile's runs through submitit (its LocalExecutor here, a Slurm cluster
through fake sbatch/sacct commands), preemption and kills, the run store's locks across processes and
hosts, job records and states, ``--dry-run`` and the command line's one-line errors."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import kdrepro  # noqa: F401  (the torchvision guard)
from kdrepro import reproduce
from kdrepro.executors import (JobRecord, LocalExecutor, RunsFailedError, SlurmExecutor, SlurmOptions, TrainRun,
                               annotate_run_rows, job_state, launch, plan_jobs, read_records, slurm_states,
                               submission_groups, train_run_for)
from kdrepro.experiments import Experiment
from kdrepro.runs import RunLockedError, RunStore

try:
    import submitit
except ImportError:  # the cluster extra is missing: the tests of the submitit code path are skipped
    submitit = None
needs_submitit = pytest.mark.skipif(submitit is None, reason="needs the cluster extra: pip install -e '.[cluster]'")

TIMING_KEYS = {"train_seconds", "wall_seconds"}
SUMMARY_KEYS = ("last_top1", "best_top1", "best_epoch", "iterations", "images_seen")


def train_locally(configs, results, jobs=1, launcher="process", poll=2.0, **kwargs):
    """Every unfinished run of ``configs`` trained by the local executor (``kdrepro reproduce --jobs``)."""
    return launch(configs, results, LocalExecutor(jobs, launcher=launcher, poll=poll), **kwargs)


def _strip_times(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _smoke_subset(results) -> tuple[Experiment, list]:
    """The teacher, two KD students sharing its logit cache and one SLKD student of the smoke profile."""
    exp = Experiment("smoke", results_dir=results)
    pair = exp.profile.pairs[0]
    students = [exp.student_config("digits", pair, m, s) for m, s in (("kd", 0), ("kd", 1), ("slkd", 0))]
    return exp, [students[0].teacher, *students]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Today's local path, one run at a time in this process (RunStore.run): the reference metrics."""
    root = tmp_path_factory.mktemp("reference")
    exp, configs = _smoke_subset(root)
    for cfg in configs:
        exp.store.run(cfg)
    return exp.store, configs


def _wait_for_epochs(run_dir: Path, n: int, timeout: float = 300) -> None:
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= n:
            return
        time.sleep(0.02)
    pytest.fail(f"{run_dir.name} did not reach epoch {n}")


def _holder_pid(store: RunStore, cfg) -> int:
    """The pid in the run's lock: the job's own training process."""
    return int(json.loads(store.lock_path(cfg).read_text())["pid"])


# --------------------------------------------------------------------------------- submitit, end to end


@needs_submitit
@pytest.mark.slow
def test_submitit_local_executor_trains_the_same_runs_as_the_local_path(tmp_path, reference):
    ref_store, configs = reference
    exp, _ = _smoke_subset(tmp_path)
    logs, jobs_dir = tmp_path / "smoke" / "logs", tmp_path / "smoke" / "jobs"
    lines = []
    trained = train_locally(configs, tmp_path, jobs=2, logs_dir=logs, jobs_dir=jobs_dir, launcher="submitit",
                            log=lines.append, poll=0.2)
    assert sorted(trained) == sorted(c.run_id for c in configs)
    assert not list(exp.store.runs_dir.glob("*.lock"))
    # the summary table, run by run, equals the one of the runs trained one at a time
    for cfg in configs:
        a, b = exp.store.load(cfg.run_id).summary, ref_store.load(cfg.run_id).summary
        assert {k: a[k] for k in SUMMARY_KEYS} == {k: b[k] for k in SUMMARY_KEYS}, cfg.run_id
        assert _strip_times(_metrics(exp.store.run_dir(cfg))) == _strip_times(_metrics(ref_store.run_dir(cfg)))
    # the teacher ran first, then one cache builder; the other cached students hit its file
    started = [line.split()[1] for line in lines if line.strip().startswith("start ")]
    assert started[:2] == [configs[0].run_id, configs[1].run_id]
    assert len(list((tmp_path / "cache").glob("teacher-logits-*.pt"))) == 1
    built = [c.run_id for c in configs if "logit cache built" in (logs / f"{c.run_id}.log").read_text()]
    assert built == [configs[1].run_id]
    # every run went through a real submitit job, recorded with its logs
    records = read_records(jobs_dir)
    assert set(records) == {c.run_id for c in configs}
    for cfg in configs:
        rec = records[cfg.run_id]
        assert rec.executor == "submitit-local" and rec.outcome == "finished" and rec.job_id
        assert Path(rec.stdout).exists() and Path(rec.result).exists()
        assert f"run {cfg.run_id}" in Path(rec.log).read_text()
    # planned to wait for the teacher and the cache builder; the builder's wait is dropped, whether it had
    # finished by then or not, once the cache file it wrote is there
    assert records[configs[2].run_id].needs == [configs[0].run_id]


@needs_submitit
@pytest.mark.slow
def test_a_preempted_job_is_requeued_and_ends_with_the_metrics_of_an_uninterrupted_run(tmp_path, reference):
    """SIGUSR2 is submitit's preemption/timeout signal: TrainRun.checkpoint() requeues the job, which
    resumes from the run's last epoch checkpoint."""
    ref_store, configs = reference
    teacher, kd = configs[0], configs[2]  # a KD student that reads the teacher's logit cache
    store = RunStore(tmp_path)
    shutil.copytree(ref_store.run_dir(teacher), store.run_dir(teacher))
    shutil.copytree(ref_store.cache_dir, store.cache_dir)
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit" / "%j", max_num_timeout=3)
    executor.update_parameters(timeout_min=60)
    log = tmp_path / "logs" / f"{kd.run_id}.log"
    job = executor.submit(train_run_for(kd, tmp_path, log))
    _wait_for_epochs(store.run_dir(kd), 2)
    os.kill(_holder_pid(store, kd), signal.SIGUSR2)
    result = job.result()  # waits for the requeued job
    text = log.read_text()
    assert "this job is preempted" in text and "Requeued job" in text
    done = int(re.search(r"resuming \S+ after epoch (\d+)/7", text).group(1))
    assert 2 <= done < 7, "the signal must land mid-run"
    assert text.count(f"run {kd.run_id}") == 2  # two starts of the same job
    assert result["last_top1"] == ref_store.load(kd.run_id).summary["last_top1"]
    assert _strip_times(_metrics(store.run_dir(kd))) == _strip_times(_metrics(ref_store.run_dir(kd)))


@needs_submitit
@pytest.mark.slow
def test_a_killed_job_fails_and_its_resubmission_resumes_to_the_same_metrics(tmp_path, reference):
    ref_store, configs = reference
    teacher, slkd = configs[0], configs[3]
    store = RunStore(tmp_path)
    shutil.copytree(ref_store.run_dir(teacher), store.run_dir(teacher))  # the finished teacher, weights included
    logs, jobs_dir = tmp_path / "logs", tmp_path / "jobs"
    lines, errors = [], []

    def first_submission():
        try:
            train_locally([teacher, slkd], tmp_path, jobs=1, logs_dir=logs, jobs_dir=jobs_dir, launcher="submitit",
                          log=lines.append, poll=0.2)
        except RunsFailedError as err:
            errors.append(err)

    worker = threading.Thread(target=first_submission)
    worker.start()
    _wait_for_epochs(store.run_dir(slkd), 2)
    os.kill(_holder_pid(store, slkd), signal.SIGKILL)  # no signal handler runs: the lock stays behind
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert errors and slkd.run_id in str(errors[0]), lines
    assert any("FAILED" in line and slkd.run_id in line for line in lines)
    assert store.status(slkd) == "partial" and store.lock_path(slkd).exists()
    rec = read_records(jobs_dir)[slkd.run_id]
    assert rec.outcome == "failed"
    assert job_state(rec, "partial", store.owner(slkd)) == ("failed", rec.note)

    # submitted again: the dead process's lock is taken over and the run resumes from its checkpoint
    assert train_locally([teacher, slkd], tmp_path, jobs=1, logs_dir=logs, jobs_dir=jobs_dir, launcher="submitit",
                         log=lines.append, poll=0.2) == [slkd.run_id]
    text = (logs / f"{slkd.run_id}.log").read_text()
    done = int(re.search(r"resuming \S+ after epoch (\d+)/7", text).group(1))
    assert 2 <= done < 7
    assert _strip_times(_metrics(store.run_dir(slkd))) == _strip_times(_metrics(ref_store.run_dir(slkd)))
    a, b = store.load(slkd.run_id).summary, ref_store.load(slkd.run_id).summary
    assert {k: a[k] for k in SUMMARY_KEYS} == {k: b[k] for k in SUMMARY_KEYS}


# ------------------------------------------------------------------------------------ locks in the store

_ASK = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from kdrepro.config import RunConfig
    from kdrepro.runs import RunStore
    cfg = RunConfig.from_dict(json.loads(Path(sys.argv[1]).read_text()))
    go, ready = Path(sys.argv[3]), Path(sys.argv[4])
    ready.touch()
    while not go.exists():
        time.sleep(0.01)
    result = RunStore(sys.argv[2]).run(cfg, wait=120, log=lambda m: print(m, flush=True))
    print("SUMMARY " + json.dumps(result.summary))
""")


@pytest.mark.slow
def test_two_processes_asking_for_the_same_run_train_it_once(tmp_path):
    exp = Experiment("smoke", results_dir=tmp_path)
    cfg = exp.student_config("digits", exp.profile.pairs[0], "ce", 0, epochs=3)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    (tmp_path / "ask.py").write_text(_ASK)
    go = tmp_path / "go"
    procs = []
    for i in range(2):
        procs.append(subprocess.Popen([sys.executable, str(tmp_path / "ask.py"), str(tmp_path / "cfg.json"),
                                       str(tmp_path), str(go), str(tmp_path / f"ready{i}")],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.time() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    go.touch()  # both ask at the same moment, with everything imported
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    waited = [out for out in outs if f"run {cfg.run_id} is being trained by process" in out]
    assert len(waited) == 1, outs  # one trained, the other waited for it ...
    summaries = [json.loads(out.split("SUMMARY ", 1)[1]) for out in outs]
    assert summaries[0] == summaries[1]  # ... and reused its result: one training, one summary
    assert len(_metrics(exp.store.run_dir(cfg))) == cfg.epochs
    assert not exp.store.lock_path(cfg).exists()


def test_a_lock_left_on_another_host_is_taken_over_after_its_stale_timeout(tmp_path, monkeypatch):
    exp = Experiment("smoke", results_dir=tmp_path)
    cfg = exp.student_config("digits", exp.profile.pairs[0], "ce", 0, epochs=1)
    lock = RunStore(tmp_path).lock_path(cfg)
    lock.parent.mkdir(parents=True)
    dead = {"host": "gpu-node-17-gone", "pid": 4242, "token": "feedface"}  # a killed job on another machine

    # a heartbeat 10 minutes old, beyond stale_after: taken over at once
    lock.write_text(json.dumps(dead))
    old = time.time() - 600
    os.utime(lock, (old, old))
    assert RunStore(tmp_path, stale_after=300).run(cfg, wait=0).summary["epochs"] == 1
    assert not lock.exists()

    # a fresh heartbeat: the holder counts as alive (another host's pid cannot be checked) until it goes stale
    cfg2 = exp.student_config("digits", exp.profile.pairs[0], "ce", 1, epochs=1)
    lock2 = RunStore(tmp_path).lock_path(cfg2)
    lock2.write_text(json.dumps(dead))
    monkeypatch.setenv("KDREPRO_LOCK_STALE", "3")
    store = RunStore(tmp_path)
    with pytest.raises(RunLockedError, match="process 4242 on gpu-node-17-gone"):
        store.run(cfg2, wait=0)
    t0 = time.time()
    assert store.run(cfg2, wait=60).summary["epochs"] == 1
    assert time.time() - t0 >= 2.0  # it waited for the heartbeat to go stale
    assert not lock2.exists()


# -------------------------------------------------------------------- Slurm, through fake sbatch / sacct

_SBATCH = """#!/bin/bash
n=$(( $(cat "$FAKE_SLURM/counter" 2>/dev/null || echo 100) + 1 ))
echo $n > "$FAKE_SLURM/counter"
cp "$1" "$FAKE_SLURM/sbatch-$n.sh"
echo "Submitted batch job $n"
"""
_SACCT = """#!/bin/bash
echo "$@" >> "$FAKE_SLURM/sacct-calls"
cat "$FAKE_SLURM/sacct.txt" 2>/dev/null
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch, srun and sacct on PATH: sbatch keeps each script and answers with job ids 101, 102, ...;
    sacct prints ``sacct.txt``."""
    bin_dir, state = tmp_path / "fakebin", tmp_path / "fake-slurm"
    bin_dir.mkdir()
    state.mkdir()
    for name, text in (("sbatch", _SBATCH), ("sacct", _SACCT), ("srun", "#!/bin/bash\nexit 0\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(state))
    return state


def _sbatch_options(script: Path) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script.read_text(), flags=re.M))


@needs_submitit
def test_slurm_submits_job_arrays_with_afterok_dependencies_and_reports_their_states(tmp_path, fake_slurm):
    exp = Experiment("smoke", results_dir=tmp_path)
    pair = exp.profile.pairs[0]
    kd0, kd1, slkd = (exp.student_config("digits", pair, m, s) for m, s in (("kd", 0), ("kd", 1), ("slkd", 0)))
    fitnet = exp.student_config("digits", pair, "kd", 0, losses={"fitnet": {"weight": 100.0}, "kd": {"weight": 0.0}})
    vanilla = exp.student_config("digits", pair, "ce", 0)
    teacher = kd0.teacher
    configs = [teacher, vanilla, kd0, kd1, slkd, fitnet]
    options = SlurmOptions("gpu", gpus_per_job=1, cpus_per_job=2, time_min=30, extra={"account": "proj"})
    logs, jobs_dir = tmp_path / "smoke" / "logs", tmp_path / "smoke" / "jobs"
    lines = []
    submitted = launch(configs, tmp_path, SlurmExecutor(options), logs_dir=logs, jobs_dir=jobs_dir, log=lines.append)
    assert sorted(submitted) == sorted(c.run_id for c in configs)
    assert not exp.store.runs_dir.exists()  # nothing trained here

    records = read_records(jobs_dir)
    ids = {c.run_id: records[c.run_id].job_id for c in configs}
    # three submissions: what waits for nothing, what waits for the teacher, what waits for the cache builder too
    scripts = sorted(fake_slurm.glob("sbatch-*.sh"))
    assert len(scripts) == 3
    opts = [_sbatch_options(s) for s in scripts]
    for o in opts:
        assert o["partition"] == "gpu" and o["time"] == "30" and o["gpus-per-node"] == "1"
        assert o["cpus-per-task"] == "2" and o["account"] == "proj" and o["signal"] == "USR2@90"
        assert o["array"].startswith("0-1%")  # every group here has two runs: one job array each
    assert "dependency" not in opts[0]
    assert {ids[teacher.run_id], ids[vanilla.run_id]} == {"101_0", "101_1"}
    assert opts[1]["dependency"] == f"afterok:{ids[teacher.run_id]}" and opts[1]["kill-on-invalid-dep"] == "yes"
    assert {ids[kd0.run_id], ids[fitnet.run_id]} == {"102_0", "102_1"}
    assert opts[2]["dependency"] == "afterok:" + ":".join(sorted([ids[teacher.run_id], ids[kd0.run_id]]))
    assert {ids[kd1.run_id], ids[slkd.run_id]} == {"103_0", "103_1"}
    rec = records[kd1.run_id]
    assert rec.executor == "slurm" and rec.after == sorted([ids[teacher.run_id], ids[kd0.run_id]])
    assert rec.resources["partition"] == "gpu" and rec.log == str((logs / f"{kd1.run_id}.log").absolute())
    assert "103_1" in rec.stdout or "103_0" in rec.stdout
    # each job pickles the run's TrainRun (config, results, log), which a node unpickles and calls
    job_pickle = Path(rec.stdout).parent / f"{rec.job_id}_submitted.pkl"
    delayed = submitit.helpers.DelayedSubmission.load(job_pickle)
    assert isinstance(delayed.function, TrainRun) and delayed.function.config["seed"] == 1
    assert delayed.function.results == str(tmp_path.absolute())

    # a second call: Slurm says the teacher runs, the vanilla run failed, the rest waits
    (fake_slurm / "sacct.txt").write_text("101_0|RUNNING\n101_1|FAILED\n102_0|PENDING\n102_1|PENDING\n"
                                          "103_[0-1%256]|PENDING\n")
    lines.clear()
    again = launch(configs, tmp_path, SlurmExecutor(options), logs_dir=logs, jobs_dir=jobs_dir, log=lines.append)
    assert again == [vanilla.run_id]  # only the failed run is submitted again; queued ones are not
    assert any("1 running, 4 pending, 1 failed" in line for line in lines), lines
    assert any(line.strip().startswith(f"failed: {vanilla.run_id}") for line in lines)
    fourth = _sbatch_options(sorted(fake_slurm.glob("sbatch-*.sh"))[-1])
    assert "array" not in fourth and "dependency" not in fourth
    assert read_records(jobs_dir)[vanilla.run_id].job_id == "104"

    # kdrepro runs: every submitted run, none of which has a folder yet, with its job's state and log
    (fake_slurm / "sacct.txt").write_text("101_0|RUNNING\n104|PENDING\n102_0|CANCELLED by 0\n102_1|PENDING\n"
                                          "103_[0-1%256]|PENDING\n")
    rows = {r["run_id"]: r for r in annotate_run_rows(RunStore(tmp_path).list(), tmp_path)}
    assert {k: r["status"] for k, r in rows.items()} == {
        teacher.run_id: "running", vanilla.run_id: "pending", kd0.run_id: "failed", fitnet.run_id: "pending",
        kd1.run_id: "pending", slkd.run_id: "pending"}
    assert rows[kd0.run_id]["job"] == "slurm 102_0 (CANCELLED)" and rows[kd0.run_id]["log"].endswith(".log")
    assert rows[kd1.run_id]["method"] == "kd" and rows[kd1.run_id]["epochs"] == "0/7"


def test_slurm_states_reads_sacct_and_expands_pending_arrays(fake_slurm):
    (fake_slurm / "sacct.txt").write_text("7|COMPLETED\n8_[0-2,5%4]|PENDING\n8_3|RUNNING\n9|CANCELLED by 12\n")
    assert slurm_states(["7", "8_1", "8_3", "8_5", "9", "10"]) == {
        "7": "COMPLETED", "8_1": "PENDING", "8_3": "RUNNING", "8_5": "PENDING", "9": "CANCELLED"}
    assert "-j 10,7,8,9" in (fake_slurm / "sacct-calls").read_text()


# ------------------------------------------------------------------------------------------------ dry run


def test_dry_run_of_the_paper_profile_lists_every_run_with_its_dependencies(tmp_path, capsys):
    exp = Experiment("paper", results_dir=tmp_path)
    configs = exp.all_configs()
    assert reproduce.main(["--profile", "paper", "--results", str(tmp_path), "--dry-run", "--executor", "slurm",
                           "--slurm-partition", "gpu", "--gpus-per-job", "1", "--time", "240"]) == 0
    out = capsys.readouterr().out
    rows = {m.group(2): m.group(3) for m in re.finditer(r"^  (new|partial|finished)\s+(\S+)\s+\d+  after (.*)$",
                                                        out, flags=re.M)}
    assert set(rows) == {c.run_id for c in configs} and len(rows) == len(configs)
    for cfg in configs:
        after = rows[cfg.run_id].split("  [")[0]
        if cfg.has_teacher_run:
            assert cfg.teacher.run_id in after  # every student waits for its teacher
        else:
            assert after == "-"
    assert "Slurm partition gpu: per run one job of 1 GPU, 4 CPUs, 240 min" in out
    total, arrays = map(int, re.search(r"would submit (\d+) run\(s\) as (\d+) Slurm job", out).groups())
    sizes = [int(n) for n in re.findall(r"^  \d+\. (\d+) run\(s\), (?:no dependency|after )", out, flags=re.M)]
    assert total == len(configs) == sum(sizes) and len(sizes) == arrays
    assert arrays < len(configs) // 5  # job arrays, not one job per run
    assert not (tmp_path / "runs").exists() and not (tmp_path / "paper" / "jobs").exists()  # nothing submitted


def test_submission_groups_come_after_the_groups_they_wait_for(tmp_path):
    _, configs = _smoke_subset(tmp_path)
    groups = submission_groups(plan_jobs(configs, RunStore(tmp_path)))
    # teacher; the KD student that builds the logit cache; then the two that read it, seed 0 (SLKD) before
    # seed 1 (KD) as plan_jobs orders equal-length runs
    assert [[j.run_id for j in g] for g in groups] == [[configs[0].run_id], [configs[1].run_id],
                                                       [configs[3].run_id, configs[2].run_id]]


# ----------------------------------------------------------------------------------------- bad input


def _main(argv, capsys) -> tuple[int, str]:
    code = reproduce.main(argv)
    return code, capsys.readouterr().err.strip()


def test_executor_options_give_one_line_errors(tmp_path, capsys, monkeypatch):
    base = ["--profile", "smoke", "--results", str(tmp_path), "--train-only"]
    code, err = _main(base + ["--executor", "slurm"], capsys)
    assert code == 1 and err == ("kdrepro.reproduce: error: --executor slurm needs --slurm-partition P "
                                 "(the Slurm partition to submit to)")
    code, err = _main(base + ["--jobs", "2", "--time", "30"], capsys)
    assert code == 1 and err.endswith("--time: only for --executor slurm (the executor is local)")
    code, err = _main(base + ["--executor", "slurm", "--slurm-partition", "gpu", "--time", "0"], capsys)
    assert code == 1 and err.endswith("--time must be an integer >= 1, got 0")
    code, err = _main(base + ["--executor", "slurm", "--slurm-partition", "gpu", "--slurm-extra", "account"], capsys)
    assert code == 1 and "--slurm-extra 'account': give KEY=VALUE" in err

    monkeypatch.setitem(sys.modules, "submitit", None)  # as if the cluster extra were not installed
    code, err = _main(base + ["--executor", "slurm", "--slurm-partition", "gpu"], capsys)
    assert code == 1 and len(err.splitlines()) == 1
    assert "needs submitit, which is not installed: pip install 'kdrepro[cluster]'" in err
    assert not (tmp_path / "runs").exists()


@needs_submitit
def test_slurm_without_srun_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    code, err = _main(["--profile", "smoke", "--results", str(tmp_path), "--executor", "slurm",
                       "--slurm-partition", "gpu"], capsys)
    assert code == 1 and len(err.splitlines()) == 1 and "srun is not on PATH" in err, err
    assert not (tmp_path / "runs").exists()


def test_local_job_records_say_failed_once_their_scheduler_is_gone(tmp_path):
    rec = JobRecord("ce-x", "local", None, "2025-01-01T00:00:00", socket.gethostname(), "x.log",
                    scheduler_pid=os.getpid())
    assert job_state(rec, "new", None) == ("pending", "queued")
    dead = subprocess.Popen(["true"])
    dead.wait()
    rec.scheduler_pid = dead.pid
    assert job_state(rec, "new", None)[0] == "failed"
    assert job_state(rec, "finished", None) == ("finished", "")
    assert job_state(rec, "partial", ("h", 1)) == ("running", "process 1 on h")
