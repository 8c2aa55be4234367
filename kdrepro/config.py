"""Run configuration: one typed, serialisable model per run (torchdistill style), as a user gives it.

A run config has flat *recipe* fields (optimisation and augmentation, as users type them:
``--set lr=1e-3``) and two typed sections of components:

``losses``
    loss terms by name (:mod:`kdrepro.terms`: ``ce``, ``kd``, ``mse``, ``fitnet``, ``at``, ``dkd``, ``crd``,
    and any registered later), each with its typed parameters, e.g. ``{kd: {weight: 0.1, T: 3}}``.
``curriculum``
    the snapshot sequencer (:mod:`kdrepro.sequencer`): ``score``, ``order``, ``pacing`` (registered
    names), ``score_options`` and ``pacing_options``; ``None`` for runs without a curriculum.

``method`` is a *preset* that fills what is not given: ``ce`` (teacher or vanilla student: CE only),
``kd`` (CE + KD) and ``slkd`` (CE + KD + the logit MSE of the curriculum phases, and the curriculum).
Given sections merge onto the preset: ``--set losses.kd.weight=0`` switches KD off, ``losses: {dkd: {}}``
adds DKD. A term's parameters come from the term's own defaults (its paper), overridden by the run's
*recipe*, overridden by the config. Recipes, presets, the teacher rule and the run identity live in
:mod:`kdrepro.resolution`, which turns a config into the frozen run it computes
(:func:`~kdrepro.resolution.resolve` -> :class:`~kdrepro.resolution.ResolvedRun`) and makes every check that
needs a component's registry (the names and options of data sets, models, loss terms, curriculum parts and
metrics writers): this module imports no component.

The sections are pydantic models (chosen over OmegaConf structured configs because pydantic validates
on construction with custom coercion per type, reports the location of every error, and serialises to
plain JSON for ``config.json``; OmegaConf would still need hand-written range and choice checks). Values
are coerced and checked once, here (:mod:`kdrepro.values`): ``"1e-3"`` is a float, ``true`` is
not an integer, NaN and infinity are refused, and every bad value raises one :class:`ConfigError` line
naming the key, the value and what is allowed. Unknown keys suggest the nearest valid one (and name
the new place of keys of earlier versions, e.g. ``kd_weight`` -> ``losses.kd.weight``).

A field declared with a *neutral* value (``Field(default, json_schema_extra={"neutral": default})``) stays
out of the run id while it has that value, so adding one moves no existing id.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from .registry import nearest
from .resolution import (AUGMENT_FIELDS, METHODS, OPTIM_FIELDS, PRESETS, RECIPES, RUNTIME_FIELDS, SCHEMA,
                         CurriculumConfig, ResolvedRun, resolution_memo, resolve)
from .values import (Bool, ConfigError, Float, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Seed,
                     Threads, explain, short)

__all__ = ["AUGMENT_FIELDS", "METHODS", "OPTIM_FIELDS", "PRESETS", "RECIPES", "RUNTIME_FIELDS", "SCHEMA", "LEGACY_KEYS",
           "ConfigError", "CurriculumConfig", "ResolvedRun", "RunConfig", "merge", "parse_overrides",
           "resolution_memo", "resolve"]

#: keys of schema 1 (kdrepro 0.1) and where they live now, for error messages and ``kdrepro migrate``
LEGACY_KEYS = {
    "ce_weight": "losses.ce.weight", "kd_weight": "losses.kd.weight", "temperature": "losses.kd.T",
    "mse_weight": "losses.mse.weight", "fitnet_weight": "losses.fitnet.weight", "fitnet_stage": "losses.fitnet.stage",
    "at_weight": "losses.at.weight", "at_p": "losses.at.p", "score": "curriculum.score", "order": "curriculum.order",
    "pacing": "curriculum.pacing", "phase_ends": "curriculum.pacing_options.phase_ends",
    "fractions": "curriculum.pacing_options.fractions", "warmup": "curriculum.pacing_options.warmup",
    "num_phases": "curriculum.pacing_options.num_phases",
    "start_fraction": "curriculum.pacing_options.start_fraction",
    "quirk_no_warmup_augment": "curriculum.quirk_no_warmup_augment",
    "quirk_mse_to_snapshot": "losses.mse.target (snapshot)",
}


def _neutral(value: Any) -> dict:
    return {"json_schema_extra": {"neutral": value}}


class RunConfig(BaseModel):
    """Everything that defines one training run. ``None`` means "take it from the recipe/preset"."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False, protected_namespaces=())

    method: Literal["ce", "kd", "slkd"] = "slkd"   # preset: ce (teacher or vanilla student) | kd | slkd
    dataset: str = "digits"
    dataset_options: dict[str, Any] = Field(default_factory=dict)
    data_fingerprint: str | None = None           # filled at resolution (kdrepro.data.data_fingerprint)
    model: str = "resnet8"
    model_options: dict[str, Any] = Field(default_factory=dict)
    teacher: dict[str, Any] | None = None         # the teacher's own run config (a CE run), as overrides
    teacher_weights: str | None = None            # or a published checkpoint (RepDistiller/mdistiller format)
    teacher_weights_sha256: str | None = None     # filled at resolution: the checkpoint's content
    seed: Seed = 0
    recipe: str = "slkd"
    # optimisation (None: from the recipe)
    epochs: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    lr: PositiveFloat | None = None
    momentum: Float | None = None
    nesterov: Bool | None = None
    weight_decay: NonNegativeFloat | None = None
    milestones: tuple[PositiveInt, ...] | None = None
    gamma: PositiveFloat | None = None
    # augmentation: the authors' Pad(4, reflect) + RandomCrop + RandomHorizontalFlip
    augment: Bool = True
    crop_padding: NonNegativeInt = 4
    hflip: Bool = True
    # components (None: from the method preset and the recipe)
    losses: dict[str, dict[str, Any] | None] | None = None
    curriculum: dict[str, Any] | None = None
    # numerics that change results
    bf16: Bool = Field(False, **_neutral(False))   # bf16 autocast (GPU; CPU with bf16 support)
    # runtime only (not part of the run id)
    device: str = "auto"
    teacher_cache: Bool = True
    #: what the teacher-logit cache stores: float16 (half the memory; the KD loss moves by ~2e-5 relative
    #: against live logits) or float32 (equal to the live teacher)
    teacher_cache_dtype: Literal["float16", "float32"] = "float16"
    compile: Bool = False
    channels_last: Bool = True
    progress: Bool | None = None
    data_root: str | None = None
    num_threads: Threads | None = None
    #: torch threads while building the teacher-logit cache only (None: num_threads); the local executor
    #: gives a cache builder every worker's core when all other runs wait for its cache
    cache_threads: Threads | None = None
    #: metrics writers for the run's folder: csv (metrics.csv), tensorboard (tensorboard/; the tensorboard extra)
    metrics_writers: tuple[str, ...] = ()
    #: without a progress bar (output not a terminal): a plain line every N epochs (None: about 20 a run)
    log_every: PositiveInt | None = None

    @field_validator("metrics_writers", mode="before")
    @classmethod
    def _writers(cls, v):
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, (list, tuple)) or not all(isinstance(name, str) for name in v):
            raise ValueError("must be a list of writer names, e.g. [csv, tensorboard]")
        return tuple(dict.fromkeys(v))  # the names are checked at resolution (kdrepro.resolution)

    #: this config's run, resolved once (the object is frozen, so it cannot go stale)
    _resolution: ResolvedRun | None = PrivateAttr(None)

    @field_validator("momentum")
    @classmethod
    def _momentum(cls, v):
        if v is not None and not 0 <= v < 1:
            raise ValueError("must be in [0, 1)")
        return v

    @field_validator("milestones", mode="before")
    @classmethod
    def _milestones(cls, v):
        if v is not None and not isinstance(v, (list, tuple)):
            raise ValueError("must be a list of epochs, e.g. [260, 290]")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda") and not (v.startswith("cuda:") and v[5:].isdigit()):
            raise ValueError("use auto, cpu, cuda or cuda:N")
        return v

    @field_validator("dataset_options", "model_options", "teacher")
    @classmethod
    def _mapping(cls, v):
        return v

    # ------------------------------------------------------------------ construction
    def __init__(self, **data: Any):
        """As pydantic's, but every unknown key or bad value is one :class:`ConfigError` line (the Python
        API checks exactly what the command line and config files check)."""
        where = data.pop("_where", "")
        known = list(type(self).model_fields)
        for key in data:
            if key not in type(self).model_fields:
                prefix = f"{where}." if where else ""
                if key in LEGACY_KEYS:
                    raise ConfigError(f"unknown key {prefix}{key!r}: it is now {LEGACY_KEYS[key]}")
                raise ConfigError(f"unknown key {prefix}{key!r}{nearest(key, known)}; valid keys: {', '.join(known)}")
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise ConfigError(explain(err, where)) from None

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> "RunConfig":
        """Build from a mapping (a config file, ``--set`` overrides, a stored ``config.json``); raise one
        :class:`ConfigError` line for an unknown key or a bad value."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where or 'a run config'} must be a mapping of keys, got {data!r}")
        data = dict(data)
        schema = data.pop("schema", SCHEMA)
        if schema != SCHEMA:
            raise ConfigError(f"{where or 'config'}: schema {schema!r} is not this version's {SCHEMA}; "
                              "run `kdrepro migrate` to upgrade a run store")
        if where:
            data["_where"] = where
        return cls(**data)

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> "RunConfig":
        """pydantic's copy, without what resolution kept for the original (the copy is another config)."""
        copy = super().model_copy(update=update, deep=deep)
        copy._resolution = None
        return copy

    def with_overrides(self, **changes: Any) -> "RunConfig":
        return RunConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the schema version first."""
        out = {"schema": SCHEMA}
        out.update(self.model_dump(mode="json"))
        return out

    # ------------------------------------------------------------------ resolution (kdrepro.resolution)
    def resolved(self) -> "RunConfig":
        """The resolved config (every field filled and checked, what ``config.json`` stores); its run is
        :func:`kdrepro.resolution.resolve` of either. Computed once per object."""
        return resolve(self).config

    @property
    def run_id(self) -> str:
        """``<method>-<dataset>-<model>-s<seed>-<hash>``: readable, and stable across machines and versions."""
        return resolve(self).run_id

    def identity(self) -> dict[str, Any]:
        """What the run computes, as the run id hashes it (:attr:`kdrepro.resolution.ResolvedRun.identity`)."""
        return resolve(self).identity

    def teacher_config(self) -> "RunConfig":
        """The teacher's resolved config (the teacher rule: :func:`kdrepro.resolution.teacher_config`)."""
        teacher = resolve(self).teacher
        if teacher is None:
            raise ConfigError("this run names no teacher run (set 'teacher' with method kd or slkd)")
        return teacher.config

    def label(self) -> str:
        """What differs from the method's preset, in a few words (for ``kdrepro runs``)."""
        parts = []
        preset, cur = PRESETS[self.method]
        for name, params in (self.losses or {}).items():
            default = RECIPES[self.recipe]["losses"].get(name, {})
            if params["weight"] == 0 and name in preset:
                parts.append(f"-{name}")
            elif params["weight"] > 0 and name not in preset:
                parts.append(f"+{name}")
            elif params["weight"] > 0:
                changed = [f"{k}={v}" for k, v in params.items() if k in default and v != default[k]]
                if changed:
                    parts.append(f"{name}({', '.join(changed)})")
        if self.curriculum is not None:
            c = CurriculumConfig()
            options = self.curriculum.get("score_options")
            for key in ("score", "order", "pacing"):
                if self.curriculum[key] != getattr(c, key) or (key == "score" and options):
                    given = f"({', '.join(f'{k}={v}' for k, v in sorted(options.items()))})" \
                        if key == "score" and options else ""
                    parts.append(f"{key}={self.curriculum[key]}{given}")
            if self.curriculum.get("quirk_no_warmup_augment"):
                parts.append("quirk:no_warmup_augment")
        if self.bf16:
            parts.append("bf16")
        return " ".join(parts)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["epochs=30", "teacher.model=resnet32"]`` -> a nested dict, values parsed as YAML scalars/lists."""
    from .yamlfile import YamlFileError, parse_yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        key, raw = pair.split("=", 1)
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {pair!r}: empty key")
        if len(key) > 200 or key.count(".") > 8:
            raise ConfigError(f"--set {short(key)}: the key is too long or too deeply nested")
        if raw.strip() == "":
            raise ConfigError(f"--set {key}=: empty value; give a value, or leave the key out to take the "
                              "recipe's (null also means that)")
        try:
            value = parse_yaml(raw, f"--set {key}={short(raw)}:")
        except YamlFileError as err:
            raise ConfigError(str(err)) from None
        target = out
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a mapping")
        target[parts[-1]] = value
    return out


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
