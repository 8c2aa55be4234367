"""Experiment profiles as a typed model: ``kdrepro/profiles/<name>.yaml`` checked key by key.

A profile is the one source of truth for the notebooks and ``make reproduce``: data sets, teacher/student
pairs, the recipe shared by every run (``base``), seeds, epoch budgets, the KD baselines and the
ablations. :class:`Profile` is its schema (each field's description is the reference of that key,
``docs/profiles.md``); :func:`load_profile` reads one and raises :class:`ProfileError`, one line naming the
file and the key, for anything wrong in it.

An ablation variant is a name (``linear``) or, on the ``pacing`` and ``score`` axes, a name with its
options (``{linear: {start_fraction: 0.5}}``, ``{teacher_kl: {T: 3}}``), labelled with the given options
(``linear(start_fraction=0.5)``, ``teacher_kl(T=3.0)``) in the tables.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .config import ConfigError, RunConfig
from .values import explain

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
ABLATION_AXES = ("score", "order", "pacing", "mse", "quirks")
#: logit-MSE ablation: "on" keeps the recipe's weight (the authors' 0.05), "off" drops the term
MSE_VARIANTS: dict[str, dict[str, Any]] = {"on": {}, "off": {"losses": {"mse": {"weight": 0.0}}}}
#: the authors' quirks (kdrepro/config.py), each off by default
QUIRK_VARIANTS: dict[str, dict[str, Any]] = {
    "none": {},
    "no_warmup_augment": {"curriculum": {"quirk_no_warmup_augment": True}},
    "mse_to_snapshot": {"losses": {"mse": {"target": "snapshot"}}},
    "both": {"curriculum": {"quirk_no_warmup_augment": True}, "losses": {"mse": {"target": "snapshot"}}},
}
#: methods the budget study may train at every budget (table label -> run-config method)
BUDGET_METHODS = {"vanilla": "ce", "kd": "kd", "slkd": "slkd"}
#: run-config keys a study sets itself, so a profile's ``base`` may not
STUDY_KEYS = frozenset({"method", "dataset", "dataset_options", "model", "seed", "teacher", "teacher_weights"})
#: runtime keys that come from the notebook parameters / command line, not from the profile
SESSION_KEYS = frozenset({"device", "data_root"})
_REQUIRED = ("name", "datasets", "seeds", "base", "pairs")


class ProfileError(ConfigError):
    """A profile that does not exist or does not validate. The message names the file and the key."""


def _int_list(key: str, values: Any) -> tuple[int, ...]:
    if not isinstance(values, (list, tuple)) or not values or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{key} must be a non-empty list of integers, got {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{key} has duplicates: {list(values)!r}")
    return tuple(values)


def _run_keys(where: str, keys: Any, forbidden: frozenset = frozenset()) -> None:
    bad = sorted(set(keys) - set(RunConfig.model_fields))
    if bad:
        raise ValueError(f"{where}: unknown run-config key(s) {bad}; see docs/config-reference.md")
    reserved = sorted(set(keys) & forbidden)
    if reserved:
        raise ValueError(f"{where}: {reserved} may not be set here: the studies set method, dataset, model, seed "
                         "and teacher; device and data_root are notebook parameters (or reproduce options)")


class Pair(BaseModel):
    """A teacher (run-config keys of its CE run, ``model`` required) and a student architecture."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    teacher: dict[str, Any] = Field(description="run-config keys of the teacher's CE run; `model` required")
    student: str = Field(description="the student's model")

    @field_validator("teacher", mode="before")
    @classmethod
    def _teacher(cls, v):
        if not isinstance(v, dict) or "model" not in v:
            raise ValueError(f"teacher must be a mapping with at least 'model', got {v!r}")
        _run_keys("teacher", v, STUDY_KEYS - {"model"})
        _model("teacher.model", v["model"])
        options = v.get("model_options", {})
        if not isinstance(options, dict):
            raise ValueError(f"teacher.model_options must be a mapping of the model's options, got {options!r}")
        from .models import check_model_options

        try:
            check_model_options(v["model"], options)
        except ValueError as err:
            raise ValueError(f"teacher.{err}") from None
        return dict(v)

    @field_validator("student", mode="before")
    @classmethod
    def _student(cls, v):
        return _model("student", v)

    @property
    def teacher_model(self) -> str:
        return str(self.teacher["model"])

    @property
    def label(self) -> str:
        return f"{self.teacher_model} -> {self.student}"


def _model(key: str, name: Any) -> str:
    from .models import list_models
    from .plugins import load_plugins

    load_plugins()  # a plugin's networks are models too
    if name not in list_models():
        raise ValueError(f"{key}: {name!r} is not a model; choose from {', '.join(list_models())}")
    return str(name)


class Variant(BaseModel):
    """One ablation variant: its table label and the run-config keys it changes on an SLKD student."""

    model_config = ConfigDict(frozen=True)

    label: str
    overrides: dict[str, Any]


#: ablation axes whose variants may carry options: axis -> the run-config key of those options
OPTION_AXES = {"pacing": "pacing_options", "score": "score_options"}


def variant(axis: str, spec: Any) -> Variant:
    """The :class:`Variant` of one entry of ``ablations.<axis>``: a name, or ``{name: options}`` on the pacing
    and score axes (the pacing's or the score's typed options, checked here)."""
    from .sequencer import ORDERS, PACINGS, SCORES

    choices = {"score": SCORES.names(), "order": ORDERS.names(),
               "pacing": tuple(p for p in PACINGS.names() if p not in ("custom", "none")),
               "mse": tuple(MSE_VARIANTS), "quirks": tuple(QUIRK_VARIANTS)}[axis]
    options = None
    if isinstance(spec, dict):
        if axis not in OPTION_AXES or len(spec) != 1:
            raise ValueError(f"ablations.{axis}: {spec!r}: a variant with options is one pacing or score name with "
                             "its options, e.g. {linear: {start_fraction: 0.5}} or {teacher_kl: {T: 3}}; other axes "
                             "take names only")
        (spec, options), = spec.items()
        if not isinstance(options, dict):
            raise ValueError(f"ablations.{axis}.{spec}: options must be a mapping, got {options!r}")
    if spec not in choices:
        raise ValueError(f"ablations.{axis}: {spec!r} is not a variant; choose from {', '.join(choices)}")
    if axis == "mse":
        return Variant(label=spec, overrides=MSE_VARIANTS[spec])
    if axis == "quirks":
        return Variant(label=spec, overrides=QUIRK_VARIANTS[spec])
    if options is None:
        return Variant(label=spec, overrides={"curriculum": {axis: spec}})
    given = _typed_options(axis, spec, options)
    label = f"{spec}({', '.join(f'{k}={v}' for k, v in sorted(given.items()))})"
    return Variant(label=label, overrides={"curriculum": {axis: spec, OPTION_AXES[axis]: given}})


def _typed_options(axis: str, name: str, options: dict) -> dict[str, Any]:
    """The given ``options`` of the pacing or score ``name``, typed by its ``Params`` (JSON values)."""
    from .resolution import score_options_given
    from .sequencer import pacing_params

    if axis == "score":
        try:
            return score_options_given(name, options, f"ablations.score.{name}")
        except ConfigError as err:
            raise ValueError(str(err)) from None
    try:
        typed = pacing_params(name, options)
    except ValidationError as err:
        raise ValueError(f"ablations.pacing.{explain(err, name)}") from None
    return typed.model_dump(mode="json", include=set(options))


class Profile(BaseModel):
    """A profile's keys. Seeds of students; teachers always use seed 0."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="the file's stem")
    description: str = Field("", description="free text, shown by the notebooks")
    hardware: str = Field("", description="free text, shown by the notebooks")
    expected_time: str = Field("", description="free text, shown by the notebooks")
    analysis_plan: str | None = Field(None, description=(
        "the analysis plan written before the runs were read (a path in the repository, e.g. "
        "`docs/analysis-plan-cpu300.md`); only then does notebook 04 state verdicts on its hypotheses"))
    datasets: tuple[str, ...] = Field(description="data sets (`kdrepro.data.list_datasets()`); each study runs on every one")
    dataset_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per data set, options of `kdrepro.data.load_dataset`")
    seeds: tuple[int, ...] = Field(description="student seeds of the baseline, KD and SLKD tables")
    base: dict[str, Any] = Field(description=(
        "run-config keys shared by every run, teachers included (a `curriculum` reaches the SLKD runs only); "
        "method, dataset, model, seed, teacher, device and data_root are not allowed"))
    pairs: tuple[Pair, ...] = Field(description=(
        "`[{teacher: {model: ..., run-config keys}, student: <model>}]`; a teacher's `model_options` are checked "
        "when the profile loads"))
    budgets: tuple[int, ...] = Field((), description="epoch budgets of the efficiency study (`budget_methods` at each)")
    kd_baselines: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="label -> run-config keys of a KD student (notebook 02: FitNets, AT)")
    ablations: dict[Literal["score", "order", "pacing", "mse", "quirks"], tuple[Variant, ...]] = Field(
        default_factory=dict, description=(
            "axis -> variants on the first data set and pair: score, order and pacing names (a pacing or a score "
            "with its options: `{linear: {start_fraction: 0.5}}`, `{teacher_kl: {T: 3}}`), mse `on`/`off`, quirks "
            "`none`, `no_warmup_augment`, `mse_to_snapshot`, `both`"))
    ablation_seeds: tuple[int, ...] = Field((0,), description="seeds of the ablation and budget studies")
    axis_seeds: dict[str, tuple[int, ...]] = Field(default_factory=dict, description="axis -> its own seeds")
    budget_seeds: tuple[int, ...] | None = Field(None, description="seeds of the budget study (default: ablation_seeds)")
    budget_methods: tuple[str, ...] = Field(("kd", "slkd"), description="from vanilla, kd, slkd")
    method_seeds: dict[str, tuple[int, ...]] = Field(
        default_factory=dict, description="method -> its own seeds in the baseline, KD and main tables")
    matched_steps: dict[int, int] = Field(default_factory=dict, description=(
        "{SLKD epochs: KD epochs}: KD also at the budget whose optimizer steps match SLKD's (notebook 05)"))

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data):
        if not isinstance(data, dict):
            raise ValueError("a profile must be a mapping of keys (name, datasets, seeds, base, pairs, ...)")
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; valid keys: {', '.join(cls.model_fields)}")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ValueError(f"missing required key(s) {missing}")
        return data

    @field_validator("seeds", "ablation_seeds", "budget_seeds", "budgets", mode="before")
    @classmethod
    def _ints(cls, v, info):
        if info.field_name == "budget_seeds" and v is None:
            return v
        values = _int_list(info.field_name, v)
        if info.field_name == "budgets" and any(b < 1 for b in values):
            raise ValueError(f"budgets must be positive epoch counts, got {list(values)}")
        return values

    @field_validator("datasets", mode="before")
    @classmethod
    def _datasets(cls, v):
        from .data import list_datasets
        from .plugins import load_plugins

        load_plugins()  # a plugin's data sets are data sets too
        if isinstance(v, list) and not v:
            raise ValueError("datasets: empty; name at least one data set (every table would report its runs missing)")
        if not isinstance(v, list):
            raise ValueError(f"datasets must be a non-empty list, got {v!r}")
        for ds in v:
            if ds not in list_datasets():
                raise ValueError(f"datasets: {ds!r} is not a data set; choose from {', '.join(list_datasets())}")
        return tuple(v)

    @field_validator("base", mode="before")
    @classmethod
    def _base(cls, v):
        if not isinstance(v, dict):
            raise ValueError(f"base must be a mapping of run-config keys, got {v!r}")
        _run_keys("base", v, STUDY_KEYS | SESSION_KEYS)
        return dict(v)

    @field_validator("pairs", mode="before")
    @classmethod
    def _pairs(cls, v):
        if not isinstance(v, list) or not v:
            raise ValueError("pairs must list at least one teacher/student pair")
        for i, raw in enumerate(v):
            if not isinstance(raw, dict) or set(raw) != {"teacher", "student"}:
                raise ValueError(f"pairs[{i}] must be a mapping with exactly the keys teacher and student, got {raw!r}")
            try:
                Pair(**raw)
            except ValidationError as err:
                raise ValueError(f"pairs[{i}].{_first(err)}") from None
        return v

    @field_validator("kd_baselines", mode="before")
    @classmethod
    def _kd_baselines(cls, v):
        if not isinstance(v, dict):
            raise ValueError(f"kd_baselines must be a mapping of labels, got {v!r}")
        for label, overrides in v.items():
            if not isinstance(overrides, dict):
                raise ValueError(f"kd_baselines.{label} must be a mapping of run-config keys, got {overrides!r}")
            bad = sorted(set(overrides) - set(RunConfig.model_fields)) + sorted(set(overrides) & (STUDY_KEYS | SESSION_KEYS))
            if bad:
                raise ValueError(f"kd_baselines.{label}: key(s) {bad} are not allowed (unknown, or set by the study)")
        return {str(k): dict(o) for k, o in v.items()}

    @field_validator("ablations", mode="before")
    @classmethod
    def _ablations(cls, v):
        if not isinstance(v, dict):
            raise ValueError(f"ablations must be a mapping of axes, got {v!r}")
        out = {}
        for axis, specs in v.items():
            if axis not in ABLATION_AXES:
                raise ValueError(f"ablations: unknown axis {axis!r}; valid axes: {', '.join(ABLATION_AXES)}")
            if not isinstance(specs, list) or not specs:
                raise ValueError(f"ablations.{axis} must be a non-empty list, got {specs!r}")
            variants = tuple(variant(axis, s) for s in specs)
            labels = [x.label for x in variants]
            if len(set(labels)) != len(labels):
                raise ValueError(f"ablations.{axis} lists a variant twice: {labels}")
            out[axis] = variants
        return out

    @field_validator("axis_seeds", "method_seeds", mode="before")
    @classmethod
    def _seed_map(cls, v, info):
        if not isinstance(v, dict):
            raise ValueError(f"{info.field_name} must be a mapping of seeds, got {v!r}")
        return {str(k): _int_list(f"{info.field_name}.{k}", s) for k, s in v.items()}

    @field_validator("budget_methods", mode="before")
    @classmethod
    def _budget_methods(cls, v):
        for m in v if isinstance(v, (list, tuple)) else ():
            if m not in BUDGET_METHODS:
                raise ValueError(f"budget_methods: {m!r} is not a method; choose from {', '.join(BUDGET_METHODS)}")
        if not isinstance(v, (list, tuple)) or not v or len(set(v)) != len(v):
            raise ValueError(f"budget_methods must be a non-empty list without duplicates, got {v!r}")
        return tuple(v)

    @field_validator("matched_steps", mode="before")
    @classmethod
    def _matched(cls, v):
        if not isinstance(v, dict) or not all(
                isinstance(k, int) and isinstance(n, int) and not isinstance(k, bool) and not isinstance(n, bool)
                and k >= 1 and n >= 1 for k, n in v.items()):
            raise ValueError(f"matched_steps must map SLKD epoch budgets to KD epoch budgets (positive integers), "
                             f"e.g. {{300: 226}}; got {v!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        for ds, opts in self.dataset_options.items():
            if ds not in self.datasets:
                raise ValueError(f"dataset_options.{ds}: must be a mapping for one of the profile's datasets "
                                 f"{list(self.datasets)}")
        for axis in self.axis_seeds:
            if axis not in self.ablations:
                raise ValueError(f"axis_seeds: {axis!r} is not one of the profile's ablation axes {list(self.ablations)}")
        labels = ("vanilla", "kd", "slkd", *self.kd_baselines)
        for label in self.method_seeds:
            if label not in labels:
                raise ValueError(f"method_seeds: {label!r} is not a method of the profile's tables; choose from "
                                 f"{', '.join(labels)}")
        return self


def _first(err: ValidationError) -> str:
    """The first error of ``err`` in one line: a validator's own message (it names its key), else
    :func:`kdrepro.values.explain`'s ``key=value: what is allowed``."""
    e = err.errors(include_url=False)[0]
    if e["type"] == "value_error":
        return e["msg"].removeprefix("Value error, ")
    return explain(err)


def parse_profile(data: Any, source: str = "<profile>") -> Profile:
    """Check a profile mapping (as read from YAML) and build its :class:`Profile`; :class:`ProfileError`,
    ``<source>: <what is wrong, naming the key>``, otherwise. Whether every run config is valid (an epoch
    budget too short for the SLKD schedule) is checked when a study is planned."""
    try:
        profile = Profile.model_validate(data)
    except ValidationError as err:
        raise ProfileError(f"{source}: {_first(err)}") from None
    stem = Path(source).stem
    if source.endswith((".yaml", ".yml")) and profile.name != stem:
        raise ProfileError(f"{source}: name {profile.name!r} must equal the file name {stem!r}")
    return profile


def list_profiles() -> list[str]:
    """Names of the bundled profiles (``kdrepro/profiles/*.yaml``)."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name: str | Path) -> Profile:
    """A bundled profile by name (``smoke``, ``demo``, ``cpu``, ``paper``) or a profile YAML by path (read
    through :func:`kdrepro.yamlfile.load_yaml`: a bounded regular file, no duplicate keys)."""
    from .yamlfile import YamlFileError, load_yaml

    if not str(name).strip():
        raise ProfileError(f"--profile '': empty; choose one of {', '.join(list_profiles())} or give a profile .yaml")
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        if str(name) not in list_profiles():
            raise ProfileError(f"unknown profile {str(name)!r}; available: {', '.join(list_profiles())} "
                               f"(or give the path of a profile .yaml)")
        path = PROFILE_DIR / f"{name}.yaml"
    if not path.exists():
        raise ProfileError(f"profile file {path} does not exist")
    try:
        data = load_yaml(path, "profile", integer_keys=True)  # matched_steps: {300: 226}
    except YamlFileError as err:
        raise ProfileError(str(err)) from None
    return parse_profile(data, source=str(path))


def reference() -> str:
    """The profile keys as a Markdown table (``docs/profiles.md``), from :class:`Profile`'s fields."""
    rows = ["| key | required | meaning |", "|---|---|---|"]
    for name, info in Profile.model_fields.items():
        rows.append(f"| `{name}` | {'yes' if name in _REQUIRED else 'no'} | {info.description} |")
    return "\n".join(rows) + "\n"

