"""Curriculum scores with typed options (kdrepro.sequencer.register_score(name, params=...)): the options of a
run config's ``curriculum.score_options`` are checked once at resolution, reach the score function in a
trained run, stay out of the run id at their defaults, and an ablation variant of a profile carries them."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from pydantic import BaseModel, ConfigDict

from kdrepro import sequencer
from kdrepro.config import ConfigError, RunConfig
from kdrepro.experiments import Experiment
from kdrepro.profile import PROFILE_DIR, ProfileError, load_profile
from kdrepro.resolution import resolve

KD = dict(method="slkd", dataset="digits", epochs=10, teacher={"model": "resnet14"})


def _kl_by_hand(z: torch.Tensor, t: torch.Tensor, T: float) -> torch.Tensor:
    """-KL(softmax(t/T) || softmax(z/T)) in float64, written out from the definition."""
    z, t = z.double() / T, t.double() / T
    p_t = torch.exp(t) / torch.exp(t).sum(1, keepdim=True)
    p_s = torch.exp(z) / torch.exp(z).sum(1, keepdim=True)
    return -(p_t * (p_t.log() - p_s.log())).sum(1)


def test_teacher_kl_takes_a_temperature_and_defaults_to_the_plain_score():
    g = torch.Generator().manual_seed(0)
    z, t, y = torch.randn(64, 10, generator=g) * 4, torch.randn(64, 10, generator=g) * 4, torch.zeros(64).long()
    for T in (1.0, 3.0, 0.5):
        got = sequencer.scores_from_logits(z, y, "teacher_kl", teacher_logits=t, score_options={"T": T})
        torch.testing.assert_close(got.double(), _kl_by_hand(z, t, T), rtol=1e-5, atol=1e-5)
    plain = sequencer.scores_from_logits(z, y, "teacher_kl", teacher_logits=t)
    assert torch.equal(plain, sequencer.scores_from_logits(z, y, "teacher_kl", teacher_logits=t,
                                                           score_options={"T": 1.0}))
    hot = sequencer.scores_from_logits(z, y, "teacher_kl", teacher_logits=t, score_options={"T": 3.0})
    assert not torch.allclose(plain, hot)  # the option changes the scores (and here the ranking)
    assert not torch.equal(plain.argsort(), hot.argsort())


def test_a_score_without_options_refuses_one_and_a_bad_value_is_refused():
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="scale"):
        sequencer.scores_from_logits(z, y, "margin", score_options={"scale": 2})
    with pytest.raises(ValueError, match="T"):
        sequencer.scores_from_logits(z, y, "teacher_kl", teacher_logits=z, score_options={"T": 0})


def test_default_score_options_move_no_id_and_given_ones_are_typed_once():
    plain = RunConfig(**KD, curriculum={"score": "teacher_kl"})
    at_default = RunConfig(**KD, curriculum={"score": "teacher_kl", "score_options": {"T": 1}})
    hot = RunConfig(**KD, curriculum={"score": "teacher_kl", "score_options": {"T": "3"}})
    assert plain.run_id == at_default.run_id != hot.run_id
    # no option given: the stored curriculum has no score_options key (as before scores had options)
    assert "score_options" not in plain.resolved().curriculum
    assert "score_options" not in resolve(plain).identity["curriculum"]
    run = resolve(hot)
    assert run.score_options == sequencer.TeacherKLParams(T=3.0) and run.config.curriculum["score_options"] == {"T": 3.0}
    assert run.identity["curriculum"]["score_options"] == {"T": 3.0}
    assert run.label() == "score=teacher_kl(T=3.0)"
    # the stored config reads back as the same run
    again = RunConfig.from_dict(json.loads(json.dumps(run.to_dict())))
    assert again.run_id == hot.run_id


@pytest.mark.parametrize("curriculum, words", [
    ({"score": "teacher_kl", "score_options": {"tau": 3}}, ["curriculum.score_options.tau", "'teacher_kl'", "accepts: T"]),
    ({"score": "teacher_kl", "score_options": {"T": -1}}, ["curriculum.score_options.T=-1", "'teacher_kl'"]),
    ({"score": "margin", "score_options": {"T": 3}}, ["curriculum.score_options.T", "'margin'", "accepts: none"]),
    ({"score": "teacher_kl", "score_options": [3]}, ["curriculum.score_options", "mapping"]),
])
def test_a_bad_score_option_is_one_line_naming_the_key_and_the_score(curriculum, words):
    with pytest.raises(ConfigError) as err:
        resolve(RunConfig(**KD, curriculum=curriculum))
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


class ProbeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    scale: float = 1.0
    descending: bool = False


@pytest.fixture
def probe():
    """A user's score with options; it records the options it is called with."""
    calls = []

    @sequencer.register_score("probe", ProbeParams)
    def probe_score(logits, targets, teacher_logits, params):
        calls.append(params)
        z = logits.max(1).values * params.scale
        return -z if params.descending else z

    yield calls
    sequencer.SCORES.unregister("probe")


def test_a_registered_scores_options_reach_it_in_a_trained_run(probe, tmp_path):
    from kdrepro.runs import RunStore

    cfg = RunConfig(method="slkd", dataset="digits", epochs=2, crop_padding=1, hflip=False, num_threads=1,
                    progress=False, losses={"kd": {"weight": 0}, "mse": {"weight": 0}},
                    curriculum={"score": "probe", "score_options": {"scale": "2", "descending": "true"},
                                "pacing": "custom", "pacing_options": {"phase_ends": [1, 2], "fractions": [0.5, 1.0]}})
    result = RunStore(tmp_path).run(cfg, log=lambda m: None)
    assert probe and all(p == ProbeParams(scale=2.0, descending=True) for p in probe)
    phase = torch.load(result.run_dir / "curriculum" / "phase0.pt", weights_only=False)
    # the stored scores are the snapshot's max logit times -2: the pool is the half of each class the
    # probe ranks easiest, i.e. the lowest max logits
    scores, targets = phase["scores"], phase["targets"]
    for c in targets.unique():
        members = (targets == c).nonzero().flatten()
        k = -(-len(members) // 2)
        easiest = members[scores[members].argsort(descending=True, stable=True)[:k]]
        assert sorted(easiest.tolist()) == sorted(set(phase["pool"].tolist()) & set(members.tolist()))
    assert (scores <= 0).float().mean() > 0.9  # -2 * max logit: the snapshot's max logits are mostly positive
    assert RunStore(tmp_path).load(result.run_dir.name).config.curriculum["score_options"] == \
        {"scale": 2.0, "descending": True}


def _write(tmp_path, **changes):
    data = yaml.safe_load((PROFILE_DIR / "smoke.yaml").read_text())
    data.update(changes)
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_score_variant_carries_its_options(tmp_path):
    path = _write(tmp_path, ablations={"score": ["teacher_kl", {"teacher_kl": {"T": 3}}, {"teacher_kl": {"T": 1}}]})
    exp = Experiment(load_profile(path), results_dir=tmp_path)
    planned = {p.labels["variant"]: p.config for p in exp.plan("ablations") if p.labels.get("axis") == "score"}
    assert set(planned) == {"teacher_kl", "teacher_kl(T=3.0)", "teacher_kl(T=1.0)"}
    hot = planned["teacher_kl(T=3.0)"]
    assert hot.curriculum.score == "teacher_kl" and hot.score_options.T == 3.0
    assert isinstance(hot.score_options, sequencer.TeacherKLParams)
    assert planned["teacher_kl"].score_options.T == 1.0
    # T = 1 is the plain score's run; T = 3 another
    assert planned["teacher_kl(T=1.0)"].run_id == planned["teacher_kl"].run_id != hot.run_id


@pytest.mark.parametrize("spec, key", [
    ({"teacher_kl": {"tau": 3}}, "ablations.score.teacher_kl.tau"),
    ({"teacher_kl": {"T": 0}}, "ablations.score.teacher_kl.T=0"),
    ({"margin": {"T": 3}}, "ablations.score.margin.T"),
    ({"teacher_kl": 3}, "ablations.score.teacher_kl: options must be a mapping"),
    ({"max_logit": {}, "margin": {}}, "ablations.score"),
])
def test_a_bad_score_variant_is_one_line_naming_the_key_and_the_file(tmp_path, spec, key):
    path = _write(tmp_path, ablations={"score": [spec]})
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and key in message, message


def test_the_anatomys_teacher_scores_use_the_runs_score_options(probe, tmp_path):
    """Notebook 06 ranks the training images by the teacher with the student's score: with the run's score
    options, stored apart from the default options' scores, and read back without the teacher's weights."""
    from kdrepro.data import load_dataset
    from kdrepro.runs import RunStore

    teacher = RunStore(tmp_path).run(RunConfig(method="ce", dataset="digits", model="resnet8", epochs=1,
                                               num_threads=1, progress=False), log=lambda m: None)
    train = load_dataset("digits", train=True)
    default = Experiment.teacher_scores(teacher, train, "probe")
    given = Experiment.teacher_scores(teacher, train, "probe", score_options={"scale": 2, "descending": True})
    torch.testing.assert_close(given, -2 * default)  # the probe's own definition: max logit * scale, negated
    assert sorted(p.name for p in (teacher.run_dir / "scores").iterdir()) == \
        ["probe(descending=True, scale=2.0).pt", "probe.pt"]
    (teacher.run_dir / "weights.pt").unlink()
    calls = len(probe)
    again = Experiment.teacher_scores(teacher, train, "probe", score_options={"scale": 2.0, "descending": True})
    assert torch.equal(again, given) and len(probe) == calls  # read from its file, not scored again
    with pytest.raises(FileNotFoundError, match=r"probe\(scale=3.0\) scores"):
        Experiment.teacher_scores(teacher, train, "probe", score_options={"scale": 3})
