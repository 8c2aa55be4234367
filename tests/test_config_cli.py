"""Run configs, recipes, run ids, the command line and its error paths."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kdrepro.cli import main
from kdrepro.config import ConfigError, RunConfig, parse_overrides
from kdrepro.resolution import resolve


def test_slkd_recipe_is_the_authors_train_slkd():
    """Values from the authors' train_slkd.py (argparse defaults and adjust_lr), written out by hand."""
    cfg = RunConfig(method="slkd", teacher={"model": "resnet14"}).resolved()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay) == \
        (300, 128, 0.1, 0.9, True, 1e-4)
    assert cfg.milestones == (260, 290) and cfg.gamma == 0.1
    losses = cfg.losses
    assert (losses["kd"]["T"], losses["ce"]["weight"], losses["kd"]["weight"], losses["mse"]["weight"]) == \
        (3.0, 1.0, 0.1, 0.05)
    assert losses["mse"]["target"] == "teacher"  # criterionLogits(output_s, output_t.detach())
    assert cfg.curriculum["score"] == "max_logit" and cfg.curriculum["order"] == "easy_first"
    assert [p.end for p in resolve(cfg).schedule] == [40, 70, 110, 150, 200, 300]


def test_crd_recipe_is_repdistillers():
    cfg = RunConfig(method="kd", recipe="crd", teacher={"model": "resnet14"}).resolved()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.losses["kd"]["T"]) == (240, 64, 0.05, 5e-4, 4.0)
    assert cfg.milestones == (150, 180, 210)
    assert (cfg.losses["ce"]["weight"], cfg.losses["kd"]["weight"]) == (0.1, 0.9) and "mse" not in cfg.losses


def test_overrides_win_and_milestones_scale_with_the_budget():
    cfg = RunConfig(method="slkd", teacher={"model": "resnet14"}, epochs=30, lr=0.05).resolved()
    assert cfg.lr == 0.05
    assert cfg.milestones == (26, 29)  # round(260/10), round(290/10)
    assert [p.end for p in resolve(cfg).schedule] == [4, 7, 11, 15, 20, 30]
    assert RunConfig(method="ce", epochs=30, milestones=[5]).resolved().milestones == (5,)


def test_run_id_is_stable_and_ignores_runtime_fields():
    a = RunConfig(method="kd", teacher={"model": "resnet14"}, epochs=5)
    b = a.with_overrides(device="cpu", teacher_cache=False, progress=False, num_threads=1)
    assert a.run_id == b.run_id
    assert a.run_id.startswith("kd-digits-resnet8-s0-")
    assert a.run_id != a.with_overrides(seed=1).run_id
    assert a.run_id != a.with_overrides(teacher={"model": "resnet14", "epochs": 7}).run_id
    # a resolved config round-trips through JSON to the same id
    again = RunConfig.from_dict(json.loads(json.dumps(a.resolved().to_dict())))
    assert again.run_id == a.run_id


@pytest.mark.parametrize("data, key", [
    ({"epoch": 3}, "epoch"),
    ({"epochs": 0}, "epochs"),
    ({"lr": -1.0}, "lr"),
    ({"method": "dkd"}, "method"),
    ({"model": "resnet9"}, "model"),
    ({"dataset": "mnist"}, "dataset"),
    ({"curriculum": {"score": "entropy"}, "teacher": {"model": "resnet14"}}, "curriculum.score"),
    ({"curriculum": {"order": "easiest"}, "teacher": {"model": "resnet14"}}, "curriculum.order"),
    ({"method": "kd"}, "teacher"),
    ({"method": "slkd", "teacher": {"model": "resnet14"}, "epochs": 10,
      "curriculum": {"pacing": "custom", "pacing_options": {"phase_ends": [5, 3], "fractions": [0.5, 1.0]}}},
     "curriculum"),
])
def test_bad_configs_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key):
        RunConfig.from_dict(data).resolved()


def test_parse_overrides_nests_and_parses_yaml():
    assert parse_overrides(["epochs=30", "teacher.model=resnet32", "phase_ends=[2, 4]", "hflip=false"]) == \
        {"epochs": 30, "teacher": {"model": "resnet32"}, "phase_ends": [2, 4], "hflip": False}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])


def test_cli_bad_key_exits_nonzero_and_leaves_no_run_directory(tmp_path, capsys):
    code = main(["train", "--results", str(tmp_path), "--set", "learning_rate=0.1"])
    assert code == 2
    assert "learning_rate" in capsys.readouterr().err
    code = main(["train", "--results", str(tmp_path), "--set", "method=kd", "--set", "teacher.model=nope"])
    assert code == 2
    assert "nope" in capsys.readouterr().err
    assert not any(tmp_path.rglob("*")), "a rejected config must leave nothing behind"


def test_cli_missing_config_file(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_cli_end_to_end_kd_and_slkd(tmp_path):
    """`kdrepro train` for KD and SLKD on the embedded digits, then `runs` and `show`."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text("dataset: digits\nmodel: resnet8\nepochs: 7\ncrop_padding: 1\nhflip: false\n"
                   "num_threads: 1\nteacher: {model: resnet8, epochs: 2}\n")
    py = [sys.executable, "-m", "kdrepro"]
    for method in ("kd", "slkd"):
        out = subprocess.run(py + ["train", "--config", str(cfg), "--set", f"method={method}",
                                   "--results", str(tmp_path / "r")], capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        assert "test top-1" in out.stdout
    out = subprocess.run(py + ["runs", "--json", "--results", str(tmp_path / "r")], capture_output=True, text=True)
    rows = json.loads(out.stdout)
    assert sorted(r["method"] for r in rows) == ["ce", "kd", "slkd"]
    assert all(r["status"] == "finished" for r in rows)
    slkd = next(r for r in rows if r["method"] == "slkd")
    out = subprocess.run(py + ["show", slkd["run_id"][:12], "--results", str(tmp_path / "r")],
                         capture_output=True, text=True)
    shown = json.loads(out.stdout)
    assert shown["config"]["method"] == "slkd" and shown["summary"]["epochs"] == 7
    # a second train of the same config is found, not retrained
    out = subprocess.run(py + ["train", "--config", str(cfg), "--set", "method=slkd", "--results",
                               str(tmp_path / "r")], capture_output=True, text=True)
    assert out.stdout.startswith("found finished")


@pytest.mark.parametrize("sub", ["train", "runs", "show", "download", "migrate", "reproduce"])
def test_help_describes_each_command(sub):
    out = subprocess.run([sys.executable, "-m", "kdrepro", sub, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: kdrepro " + sub in out.stdout


def test_a_vanilla_run_ignores_a_teacher_in_a_shared_config():
    """method=ce drops teacher and distillation weights, so one vanilla run serves every teacher."""
    a = RunConfig(method="ce", teacher={"model": "resnet14"}).resolved()
    assert a.teacher is None and list(a.losses) == ["ce"] and a.curriculum is None
    assert a.run_id == RunConfig(method="ce", teacher={"model": "resnet32"}).run_id
    with pytest.raises(ConfigError, match="losses.kd reads the teacher, but method=ce"):
        RunConfig(method="ce", losses={"kd": {"weight": 0.5}}).resolved()


def test_mean_std_over_seeds_by_hand():
    from kdrepro.runs import mean_std

    mean, std, n = mean_std([1.0, 2.0, 4.0])
    assert n == 3 and mean == pytest.approx(7 / 3)
    # sample std: sqrt(((1-7/3)^2 + (2-7/3)^2 + (4-7/3)^2) / 2) = sqrt(7/3)
    assert std == pytest.approx((7 / 3) ** 0.5)
    assert mean_std([5.0]) == (5.0, 0.0, 1)
