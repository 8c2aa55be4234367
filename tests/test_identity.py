"""Run ids survive change (issue 13): adding a loss term, a curriculum score, or a field with a neutral
default moves no existing id; inactive settings and runtime fields do not enter ids; the README's
extension examples work as written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field

from kdrepro import sequencer
from kdrepro.config import RunConfig
from kdrepro.terms import TERMS, LossTerm, StepInputs, TermContext, TermParams, register_term
from kdrepro.terms.kd import KDParams, KnowledgeDistillation
from kdrepro.values import NonNegativeFloat

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted(p for p in (ROOT / "results" / "runs").glob("*") if (p / "config.json").exists())


def _ids() -> dict[str, str]:
    return {p.name: RunConfig.from_dict(json.loads((p / "config.json").read_text())).run_id for p in COMMITTED}


def test_every_committed_run_is_stored_under_its_id():
    assert len(COMMITTED) >= 36
    assert all(name == run_id for name, run_id in _ids().items())


# the README's example, verbatim in substance
class LSParams(TermParams):
    weight: NonNegativeFloat = 1.0
    smoothing: NonNegativeFloat = 0.1


class LabelSmoothing(LossTerm):
    name, display, Params = "ls", "label smoothing", LSParams
    needs = frozenset()

    def forward(self, step: StepInputs):
        p = self.params
        return {"ls": p.weight * F.cross_entropy(step.student_logits.float(), step.targets,
                                                 label_smoothing=p.smoothing)}


@pytest.fixture
def ls_term():
    register_term(LabelSmoothing)
    yield LabelSmoothing
    TERMS.unregister("ls")


def test_registering_a_term_moves_no_committed_id(ls_term):
    before = {p.name for p in COMMITTED}
    after = _ids()
    assert set(after.values()) == before


def test_the_readme_term_is_one_file_and_trains(ls_term, tmp_path):
    base = dict(method="ce", dataset="digits", epochs=1, crop_padding=1, hflip=False, num_threads=1, progress=False)
    plain = RunConfig(**base).resolved()
    with_ls = RunConfig(**base, losses={"ls": {"smoothing": 0.2}}).resolved()
    assert with_ls.run_id != plain.run_id and with_ls.losses["ls"] == {"weight": 1.0, "smoothing": 0.2}
    from kdrepro.runs import RunStore

    result = RunStore(tmp_path).run(with_ls, log=lambda m: None)
    row = result.metrics()[0]
    assert row["train_loss"] == pytest.approx(row["train_ce"] + row["train_ls"])
    # the value is label-smoothed CE: check one step by hand against the definition
    z, y = torch.randn(4, 10, dtype=torch.float64), torch.tensor([0, 3, 9, 2])
    term = LabelSmoothing(LSParams(smoothing=0.2), TermContext(10, 4, torch.nn.Identity(), None, torch.device("cpu")))
    got = term(StepInputs(student_logits=z, targets=y, indices=torch.arange(4), images=z, epoch=1, curriculum=False))
    logp = torch.log_softmax(z, 1)
    expected = -(0.8 * logp[torch.arange(4), y] + 0.2 * logp.mean(1)).mean()
    assert got["ls"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_new_term_parameter_with_a_neutral_default_moves_no_id():
    class KDParams2(KDParams):
        gamma: NonNegativeFloat = Field(0.0, json_schema_extra={"neutral": 0.0})

    class KD2(KnowledgeDistillation):
        Params = KDParams2

    original = TERMS.get("kd")
    TERMS.register("kd", KD2, replace=True)
    try:
        ids = _ids()
        assert all(name == run_id for name, run_id in ids.items())
        kd_run = next(p for p in COMMITTED if p.name.startswith("kd-"))
        cfg = json.loads((kd_run / "config.json").read_text())
        cfg["losses"]["kd"]["gamma"] = 0.5  # away from neutral: another run
        assert RunConfig.from_dict(cfg).run_id != kd_run.name
    finally:
        TERMS.register("kd", original, replace=True)


def test_a_new_config_field_with_a_neutral_default_moves_no_id():
    class RunConfig2(RunConfig):
        label_smoothing: NonNegativeFloat = Field(0.0, json_schema_extra={"neutral": 0.0})

    for p in COMMITTED:
        data = json.loads((p / "config.json").read_text())
        data.pop("schema")
        assert RunConfig2(**data).run_id == p.name
    data = json.loads((COMMITTED[0] / "config.json").read_text())
    data.pop("schema")
    assert RunConfig2(**data, label_smoothing=0.1).run_id != COMMITTED[0].name


def test_inactive_settings_and_runtime_fields_do_not_enter_the_id():
    base = dict(dataset="digits", epochs=10, teacher={"model": "resnet14"})
    kd = RunConfig(method="kd", **base)
    assert kd.run_id == RunConfig(method="kd", losses={"dkd": {"weight": 0, "beta": 3}}, **base).run_id
    assert kd.run_id == kd.with_overrides(device="cpu", num_threads=1, progress=False, teacher_cache=False,
                                          channels_last=False, data_root="/elsewhere").run_id
    ce = RunConfig(method="ce", dataset="digits", epochs=10)
    assert ce.run_id == RunConfig(method="ce", dataset="digits", epochs=10, losses={"kd": {"weight": 0}}).run_id
    assert ce.run_id == RunConfig(method="ce", dataset="digits", epochs=10, teacher={"model": "resnet32"}).run_id
    slkd = RunConfig(method="slkd", **base)
    assert slkd.run_id != kd.run_id
    assert slkd.run_id != RunConfig(method="slkd", curriculum={"order": "random"}, **base).run_id
    # the bf16 field is neutral at false; true is another run
    assert kd.run_id != kd.with_overrides(bf16=True).run_id


def test_the_readme_score_registers_and_ranks():
    @sequencer.register_score("entropy")
    def entropy(logits, targets, teacher_logits):
        p = logits.softmax(1)
        return (p * p.clamp_min(1e-12).log()).sum(1)

    try:
        cfg = RunConfig(method="slkd", dataset="digits", epochs=10, teacher={"model": "resnet14"},
                        curriculum={"score": "entropy"}).resolved()
        assert cfg.curriculum["score"] == "entropy"
        z = torch.tensor([[5.0, 0.0], [1.0, 0.9], [0.0, 9.0], [0.1, 0.0]])
        s = sequencer.scores_from_logits(z, torch.tensor([0, 0, 1, 1]), "entropy")
        pool = sequencer.select_pool(s, torch.tensor([0, 0, 1, 1]), 0.5, "easy_first")
        assert pool.tolist() == [0, 2]  # the confident image of each class
    finally:
        sequencer.SCORES.unregister("entropy")


# ----------------------------------------------------------------- options and neutral defaults (review)

_DIGITS = dict(method="ce", dataset="digits", model="resnet8", epochs=3)


def test_an_option_at_its_default_is_the_run_without_it_and_typed_values_coerce():
    """digits' split options and a ResNet's shortcut: spelled out at their default, or typed as YAML reads
    them (``"2e-1"`` is a string there), the run is the same one; a different value is another run."""
    rid = lambda **kw: RunConfig.from_dict({**_DIGITS, **kw}).run_id  # noqa: E731
    plain = rid()
    assert rid(dataset_options={"test_fraction": 0.2, "seed": 0}) == plain
    assert rid(dataset_options={"test_fraction": "2e-1"}) == plain
    assert rid(model_options={"shortcut": "conv"}) == plain
    assert len({plain, rid(dataset_options={"seed": 1}), rid(model_options={"shortcut": "pad"})}) == 3
    assert RunConfig(**_DIGITS, dataset_options={"test_fraction": "2e-1"}).resolved().dataset_options == \
        {"test_fraction": 0.2}


def test_a_tuple_neutral_default_and_a_pacing_option_leave_ids_alone():
    """The extension rule for a parameter added later with a neutral default holds for a tuple-valued
    term parameter and for a pacing option too."""
    kd_cfg = dict(_DIGITS, method="kd", teacher={"model": "resnet8"})
    slkd_cfg = dict(_DIGITS, method="slkd", epochs=20, teacher={"model": "resnet8"}, curriculum={"pacing": "linear"})
    before = RunConfig.from_dict(kd_cfg).run_id, RunConfig.from_dict(slkd_cfg).run_id

    class KDParamsV2(KDParams):
        new_tuple: tuple[int, ...] = Field((), json_schema_extra={"neutral": ()})

    pacing_cls, build = sequencer.PACINGS.get("linear")

    class PacingV2(pacing_cls):
        new_option: int = Field(0, json_schema_extra={"neutral": 0})

    term = TERMS.get("kd")
    old_params = term.Params
    try:
        term.Params = KDParamsV2
        sequencer.PACINGS.register("linear", (PacingV2, build), replace=True)
        after = RunConfig.from_dict(kd_cfg).run_id, RunConfig.from_dict(slkd_cfg).run_id
    finally:
        term.Params = old_params
        sequencer.PACINGS.register("linear", (pacing_cls, build), replace=True)
    assert after == before
