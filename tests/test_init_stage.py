"""The initialisation stages of AB, FT and FSP (kdrepro.initstage): what each trains, and that an interrupted
stage resumes to the same weights as an uninterrupted one."""
from __future__ import annotations

import pytest
import torch

from kdrepro import engine, initstage
from kdrepro.config import RunConfig
from kdrepro.models import create_model

BASE = dict(dataset="digits", model="resnet8", epochs=1, batch_size=256, crop_padding=1, hflip=False,
            num_threads=1, progress=False, method="kd", teacher={"model": "resnet14", "epochs": 1})


def _trainer(run_dir, term: str, init_epochs: int = 2) -> engine.Trainer:
    cfg = RunConfig.from_dict({**BASE, "losses": {"kd": {"weight": 0.0}, term: {"init_epochs": init_epochs}}})
    torch.manual_seed(123)
    teacher = create_model("resnet14", 10, in_channels=1)
    return engine.Trainer(cfg, run_dir, teacher=teacher, log=lambda m: None)


def _snapshot(module: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_ft_trains_the_paraphraser_only(tmp_path):
    trainer = _trainer(tmp_path / "ft", "ft")
    student, term = _snapshot(trainer.student), _snapshot(trainer.terms["ft"])
    record = initstage.run_init_stages(trainer)
    assert [r["epoch"] for r in record] == [1, 2] and {r["lr"] for r in record} == {0.01}
    assert not _changed(student, trainer.student.state_dict())
    changed = _changed(term, trainer.terms["ft"].state_dict())
    assert changed and all(k.startswith("paraphraser.") for k in changed)


def test_ab_trains_the_connectors_and_the_student_features_not_its_classifier(tmp_path):
    trainer = _trainer(tmp_path / "ab", "ab", init_epochs=1)
    student = _snapshot(trainer.student)
    initstage.run_init_stages(trainer)
    changed = _changed(student, trainer.student.state_dict())
    assert any(k.startswith("layer3.") and k.endswith("weight") for k in changed)
    assert not {"fc.weight", "fc.bias"} & changed


def test_an_interrupted_stage_resumes_to_the_same_weights(tmp_path, monkeypatch):
    whole = _trainer(tmp_path / "whole", "fsp", init_epochs=3)
    initstage.run_init_stages(whole)
    expected = _snapshot(whole.student)

    calls = {"n": 0}
    real = initstage._epoch

    def crash_in_the_third(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(initstage, "_epoch", crash_in_the_third)
    with pytest.raises(KeyboardInterrupt):
        initstage.run_init_stages(_trainer(tmp_path / "cut", "fsp", init_epochs=3))
    monkeypatch.setattr(initstage, "_epoch", real)
    resumed = _trainer(tmp_path / "cut", "fsp", init_epochs=3)
    record = initstage.run_init_stages(resumed)
    assert [r["epoch"] for r in record] == [1, 2, 3]
    assert not _changed(expected, resumed.student.state_dict())
    assert _changed(expected, _trainer(tmp_path / "fresh", "fsp").student.state_dict())  # the stage did train


def test_a_run_records_its_stage_in_the_summary(tmp_path):
    summary = _trainer(tmp_path / "run", "fsp", init_epochs=1).fit()
    assert [r["term"] for r in summary["init"]] == ["fsp"] and summary["epochs"] == 1


def test_the_new_terms_run_under_the_curriculum(tmp_path):
    cfg = RunConfig.from_dict({**BASE, "method": "slkd", "epochs": 10,
                               "losses": {"sp": {"weight": 3000.0}, "nst": {"weight": 50.0},
                                          "ab": {"init_epochs": 1}}})
    torch.manual_seed(123)
    trainer = engine.Trainer(cfg, tmp_path / "slkd", teacher=create_model("resnet14", 10, in_channels=1),
                             log=lambda m: None)
    summary = trainer.fit()
    rows = trainer.run.read_metrics()
    curriculum = [r for r in rows if r["curriculum"]]
    assert curriculum and all("train_sp" in r and "train_nst" in r and "train_mse" in r for r in curriculum)
    assert min(r["pool_size"] for r in curriculum) < rows[0]["pool_size"]  # the pacing shrank the pool
    assert summary["init"][0]["term"] == "ab"
