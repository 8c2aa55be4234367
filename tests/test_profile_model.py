"""Profiles as a typed model (kdrepro.profile): ablation variants that carry a pacing's options, a base
curriculum that reaches the SLKD runs only, one-line errors naming the key and the file, and the key
reference in docs/profiles.md generated from the model."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kdrepro import experiments
from kdrepro.cli import build_config
from kdrepro.experiments import Experiment
from kdrepro.profile import PROFILE_DIR, ProfileError, load_profile, reference

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path, **changes) -> Path:
    data = yaml.safe_load((PROFILE_DIR / "smoke.yaml").read_text())
    data.update(changes)
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _cli_config(exp: Experiment, *sets: str):
    """The same student built by the command line's path (``--set`` keys), independently of the profile."""
    pair = exp.profile.pairs[0]
    base = [f"{k}={v}" for k, v in exp.profile.base.items() if not isinstance(v, dict)]
    return build_config(None, [*base, "method=slkd", "dataset=digits", f"model={pair.student}",
                               f"teacher.model={pair.teacher_model}", "seed=0", *sets])


def test_an_ablation_variant_carries_a_linear_pacings_options(tmp_path):
    path = _write(tmp_path, ablations={"pacing": ["linear", {"linear": {"start_fraction": 0.5, "num_phases": 3}}]})
    exp = Experiment(load_profile(path), results_dir=tmp_path)
    planned = {p.labels["variant"]: p.config for p in exp.plan("ablations") if p.labels.get("axis") == "pacing"}
    assert set(planned) == {"linear", "linear(num_phases=3, start_fraction=0.5)"}
    cfg = planned["linear(num_phases=3, start_fraction=0.5)"]
    assert cfg.curriculum.pacing == "linear"
    assert cfg.pacing_options.start_fraction == 0.5 and cfg.curriculum.pacing_options["start_fraction"] == 0.5
    assert cfg.pacing_options.num_phases == 3
    # the variant is the run the command line makes of the same keys, and another run than plain linear
    by_hand = _cli_config(exp, "curriculum.pacing=linear", "curriculum.pacing_options.start_fraction=0.5",
                          "curriculum.pacing_options.num_phases=3")
    assert cfg.run_id == by_hand.run_id != planned["linear"].run_id
    # three curriculum phases after the warm-up, the first on half of each class
    assert len(cfg.schedule) == 1 + 3 and cfg.schedule[1].fraction == pytest.approx(0.5)


def test_a_base_curriculum_reaches_the_slkd_runs_only(tmp_path):
    cur = {"pacing": "linear", "pacing_options": {"start_fraction": 0.5}}
    base = {**yaml.safe_load((PROFILE_DIR / "smoke.yaml").read_text())["base"], "curriculum": cur}
    exp = Experiment(load_profile(_write(tmp_path, base=base)), results_dir=tmp_path)
    for study in ("baselines", "main", "budgets"):
        for p in exp.plan(study):
            if p.config.method == "slkd":
                assert p.config.curriculum.pacing == "linear"
                assert p.config.pacing_options.start_fraction == 0.5
            else:
                assert p.config.curriculum is None


def test_a_pairs_teacher_carries_model_options(tmp_path):
    pairs = [{"teacher": {"model": "resnet14", "model_options": {"shortcut": "pad"}}, "student": "resnet8"}]
    exp = Experiment(load_profile(_write(tmp_path, pairs=pairs)), results_dir=tmp_path)
    teacher = exp.teacher_config("digits", exp.profile.pairs[0])
    assert teacher.model == "resnet14" and teacher.model_options == {"shortcut": "pad"}
    plain = Experiment(load_profile(PROFILE_DIR / "smoke.yaml"), results_dir=tmp_path)
    assert teacher.run_id != plain.teacher_config("digits", plain.profile.pairs[0]).run_id


@pytest.mark.parametrize("changes, key", [
    ({"ablations": {"pacing": [{"linear": {"start_fractoin": 0.5}}]}}, "start_fractoin"),
    ({"ablations": {"pacing": [{"linear": {"start_fraction": 2.0}}]}}, "start_fraction"),
    ({"ablations": {"score": [{"margin": {"scale": 2}}]}}, "ablations.score"),
    ({"ablations": {"pacing": ["linear", "linear"]}}, "ablations.pacing lists a variant twice"),
    ({"seeds": [0, True]}, "seeds must be a non-empty list of integers"),
    ({"budget_seeds": "0"}, "budget_seeds must be a non-empty list of integers"),
    ({"matched_steps": {7: "x"}}, "matched_steps"),
    ({"pairs": [{"teacher": {"model": "resnet14", "epochz": 3}, "student": "resnet8"}]}, r"pairs[0].teacher: unknown run-config key(s) ['epochz']"),
    ({"dataset_options": {"cifar10": {}}}, "dataset_options.cifar10"),
    ({"pairs": [{"teacher": {"model": "resnet14", "model_options": {"shortcutt": "pad"}}, "student": "resnet8"}]},
     "pairs[0].teacher.model_options.shortcutt: model 'resnet14' takes no option"),
    ({"pairs": [{"teacher": {"model": "resnet14", "model_options": {"shortcut": "padd"}}, "student": "resnet8"}]},
     "pairs[0].teacher.model_options.shortcut='padd'"),
    ({"pairs": [{"teacher": {"model": "resnet14", "model_options": "pad"}, "student": "resnet8"}]},
     "pairs[0].teacher.model_options must be a mapping"),
])
def test_a_bad_profile_key_is_one_line_naming_the_key_and_the_file(tmp_path, changes, key):
    path = _write(tmp_path, **changes)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and key in message, message


def test_every_bundled_profile_loads_and_plans_as_before():
    for name in experiments.list_profiles():
        profile = load_profile(name)
        exp = Experiment(profile, results_dir="unused")
        variants = [(axis, label) for axis, label, _ in exp.ablation_variants()]
        raw = yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text()).get("ablations", {})
        assert variants == [(axis, v) for axis, vs in raw.items() for v in vs]  # plain names label themselves


def test_the_profile_reference_is_current():
    text = (ROOT / "docs" / "profiles.md").read_text()
    assert reference() in text
    for name in experiments.list_profiles():  # documented once, not copied into every file
        assert "#   base " not in (PROFILE_DIR / f"{name}.yaml").read_text()
