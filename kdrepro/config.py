"""Run configuration: one typed, serialisable model per run (torchdistill style), stored as ``config.json``.

A run config has flat *recipe* fields (optimisation and augmentation, as users type them:
``--set lr=1e-3``) and two typed sections of components:

``losses``
    loss terms by name (:mod:`kdrepro.terms`: ``ce``, ``kd``, ``mse``, ``fitnet``, ``at``, ``dkd``, ``crd``,
    and any registered later), each with its typed parameters, e.g. ``{kd: {weight: 0.1, T: 3}}``.
``curriculum``
    the snapshot sequencer (:mod:`kdrepro.sequencer`): ``score``, ``order``, ``pacing`` (registered
    names) and ``pacing_options``; ``None`` for runs without a curriculum.

``method`` is a *preset* that fills what is not given: ``ce`` (teacher or vanilla student: CE only),
``kd`` (CE + KD) and ``slkd`` (CE + KD + the logit MSE of the curriculum phases, and the curriculum).
Given sections merge onto the preset: ``--set losses.kd.weight=0`` switches KD off, ``losses: {dkd: {}}``
adds DKD. A term's parameters come from the term's own defaults (its paper), overridden by the run's
*recipe* (:data:`RECIPES`), overridden by the config.

The sections are pydantic models (chosen over OmegaConf structured configs because pydantic validates
on construction with custom coercion per type, reports the location of every error, and serialises to
plain JSON for ``config.json``; OmegaConf would still need hand-written range and choice checks). Values
are coerced and checked once, here (:mod:`kdrepro.values`): ``"1e-3"`` is a float, ``true`` is
not an integer, NaN and infinity are refused, and every bad value raises one :class:`ConfigError` line
naming the key, the value and what is allowed. Unknown keys suggest the nearest valid one (and name
the new place of keys of earlier versions, e.g. ``kd_weight`` -> ``losses.kd.weight``).

Run identity (:meth:`RunConfig.identity`, schema :data:`SCHEMA`) hashes what a run computes: the data
(name, options that change what is loaded, and a content fingerprint, :func:`kdrepro.data.data_fingerprint`;
never the location), the model, the seed, the recipe fields, the active loss terms with their
parameters, the curriculum (when there is one) and the teacher's own identity. Runtime fields
(:data:`RUNTIME_FIELDS`: device, caching, compilation, threads, progress bars, data location) and
inactive settings (a term with weight 0, pacing options of an unused pacing) are left out, and so is
every field declared with a *neutral* value while it has that value
(``Field(default, json_schema_extra={"neutral": default})``): adding such a field, or registering a new
loss term, leaves every existing id unchanged.

Recipes fill every recipe field and loss weight a user leaves unset:

* ``slkd`` -- the authors' ``train_slkd.py`` (github.com/HaoranZhao1988/kd): 300 epochs, SGD with Nesterov
  momentum 0.9, lr 0.1, x0.1 at epochs 260 and 290, weight decay 1e-4, batch 128; CE weight 1, KD weight 0.1
  (their ``lambda_st``) at T = 3, logit-MSE weight 0.05 during curriculum phases.
* ``crd`` -- RepDistiller (Tian et al., ICLR 2020): 240 epochs, SGD momentum 0.9 (no Nesterov), lr 0.05,
  x0.1 at 150/180/210, weight decay 5e-4, batch 64; CE weight 0.1, KD weight 0.9 at T = 4, no logit MSE.

When ``epochs`` is overridden and ``milestones`` is not, the recipe's milestones are scaled to the new
budget (``round(m * epochs / recipe_epochs)``), as the authors' code scales its phase boundaries. A
student's teacher (``teacher:``, a CE run) takes the student's *given* recipe and augmentation fields
(``epochs``, ``lr``, ``crop_padding``, ...) unless it sets its own; the plan printed before training says so.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from .registry import nearest
from .values import (Bool, Float, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Seed, Threads, explain, short)

#: version of the config layout and of the run-id hash; ``kdrepro migrate`` upgrades older stores
SCHEMA = 2
METHODS = ("ce", "kd", "slkd")
#: recipe fields: optimisation
OPTIM_FIELDS = ("epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay", "milestones", "gamma")
AUGMENT_FIELDS = ("augment", "crop_padding", "hflip")

RECIPES: dict[str, dict[str, Any]] = {
    "slkd": dict(
        epochs=300, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
        milestones=(260, 290), gamma=0.1,
        losses={"ce": {"weight": 1.0}, "kd": {"weight": 0.1, "T": 3.0}, "mse": {"weight": 0.05}},
    ),
    "crd": dict(
        epochs=240, batch_size=64, lr=0.05, momentum=0.9, nesterov=False, weight_decay=5e-4,
        milestones=(150, 180, 210), gamma=0.1,
        losses={"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "T": 4.0}, "mse": {"weight": 0.0}},
    ),
}

#: the methods as presets: ``(loss terms, curriculum)`` filled in when a config does not give them
PRESETS: dict[str, tuple[tuple[str, ...], dict | None]] = {
    "ce": (("ce",), None),
    "kd": (("ce", "kd"), None),
    "slkd": (("ce", "kd", "mse"), {}),
}

# Fields that do not change what a run computes (beyond rounding); excluded from the run id.
RUNTIME_FIELDS = frozenset({"device", "teacher_cache", "teacher_cache_dtype", "compile", "channels_last", "progress",
                            "data_root", "num_threads", "cache_threads", "metrics_writers", "log_every"})
# Dataset option keys that locate files rather than define data; excluded from the run id.
_LOCATION_OPTIONS = frozenset({"path", "root"})

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


#: the memo of :func:`resolution_memo` in force (None: each config object resolves for itself)
_MEMO: ContextVar[dict | None] = ContextVar("kdrepro_resolution_memo", default=None)


@contextlib.contextmanager
def resolution_memo(memo: dict):
    """Within the block, configs with the same keys (and the same keys given) share one resolution, kept
    in ``memo``: a planner that builds the same run (or teacher) for several studies resolves it once.
    The memo lives as long as its owner (:class:`kdrepro.experiments.Experiment`), not the process."""
    token = _MEMO.set(memo)
    try:
        yield memo
    finally:
        _MEMO.reset(token)


class ConfigError(ValueError):
    """A bad configuration key or value. The message is one line naming the key."""


def _neutral(value: Any) -> dict:
    return {"json_schema_extra": {"neutral": value}}


class CurriculumConfig(BaseModel):
    """The snapshot sequencer's choices: registered score, order and pacing names, and the pacing's options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    score: str = "max_logit"
    order: str = "easy_first"
    pacing: str = "authors"
    pacing_options: dict[str, Any] = Field(default_factory=dict)
    #: the authors' quirk: their warm-up loader uses the test transform (no augmentation)
    quirk_no_warmup_augment: Bool = Field(False, **_neutral(False))

    @field_validator("score", "order", "pacing")
    @classmethod
    def _registered(cls, value: str, info) -> str:
        from . import sequencer

        registry = {"score": sequencer.SCORES, "order": sequencer.ORDERS, "pacing": sequencer.PACINGS}[info.field_name]
        if value not in registry or (info.field_name == "pacing" and value == "none"):
            names = [n for n in registry.names() if n != "none"]
            raise ValueError(f"choose one of {', '.join(names)}{nearest(value, names)}")
        return value


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
        from .callbacks import METRICS_WRITERS

        if isinstance(v, str):
            v = [v]
        if not isinstance(v, (list, tuple)):
            raise ValueError(f"must be a list of writer names ({', '.join(METRICS_WRITERS.names())})")
        for name in v:
            if name not in METRICS_WRITERS:
                names = METRICS_WRITERS.names()
                raise ValueError(f"unknown writer {name!r}; choose from {', '.join(names)}{nearest(str(name), names)}")
        return tuple(dict.fromkeys(v))

    #: what resolution computed once for this object (the object is frozen, so it cannot go stale): the
    #: resolved config (itself, once resolved), the teacher's resolved config, and the run id
    _resolution: "RunConfig | None" = PrivateAttr(None)
    _teacher: "RunConfig | None" = PrivateAttr(None)
    _run_id: str | None = PrivateAttr(None)

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
        copy._resolution = copy._teacher = copy._run_id = None
        return copy

    def with_overrides(self, **changes: Any) -> "RunConfig":
        return RunConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the schema version first."""
        out = {"schema": SCHEMA}
        out.update(self.model_dump(mode="json"))
        return out

    # ------------------------------------------------------------------ resolution and validation
    def resolved(self) -> "RunConfig":
        """Fill the recipe and the preset, resolve the teacher, fingerprint the data, and check every value
        that can be checked without training. Idempotent, and computed once per object: a resolved config
        resolves to itself, and its teacher and run id are kept with it."""
        if self._resolution is None:
            memo = _MEMO.get()
            key = None
            if memo is not None:
                key = json.dumps([self.model_dump(mode="json"), sorted(self.model_fields_set)], sort_keys=True,
                                 default=str)
                self._resolution = memo.get(key)
            if self._resolution is None:
                try:
                    cfg = self._resolve()
                except ValidationError as err:
                    raise ConfigError(explain(err)) from None
                cfg._resolution = cfg
                self._resolution = cfg
                if memo is not None:
                    memo[key] = cfg
        return self._resolution

    def _resolve(self) -> "RunConfig":
        from .data import list_datasets
        from .models import list_models
        from .plugins import load_plugins

        load_plugins()  # a plugin's components (entry points, $KDREPRO_PLUGINS), in every process that resolves

        if self.recipe not in RECIPES:
            raise ConfigError(f"recipe={self.recipe!r}: choose one of {', '.join(RECIPES)}{nearest(self.recipe, list(RECIPES))}")
        if self.dataset not in list_datasets():
            raise ConfigError(f"dataset={self.dataset!r}: choose one of {', '.join(list_datasets())}"
                              f"{nearest(self.dataset, list_datasets())}")
        if self.model not in list_models():
            raise ConfigError(f"model={self.model!r}: choose one of {', '.join(list_models())}{nearest(self.model, list_models())}")
        recipe = RECIPES[self.recipe]
        changes: dict[str, Any] = {}
        from .data import check_dataset_options
        from .models import check_model_options

        try:  # options are checked and coerced here, before any run (a teacher included) is trained
            changes["dataset_options"] = check_dataset_options(self.dataset, self.dataset_options)
            changes["model_options"] = check_model_options(self.model, self.model_options)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for key in OPTIM_FIELDS:
            if getattr(self, key) is None:
                value = recipe[key]
                if key == "milestones" and self.epochs is not None and self.epochs != recipe["epochs"]:
                    value = tuple(round(m * self.epochs / recipe["epochs"]) for m in value)
                changes[key] = value
        milestones = changes.get("milestones", self.milestones)
        if list(milestones) != sorted(milestones):
            raise ConfigError(f"milestones={short(list(milestones))}: must be increasing")
        if self.milestones is not None:
            _check_given_milestones(list(self.milestones), changes.get("epochs", self.epochs), recipe)
        if self.momentum == 0 and self.nesterov:
            raise ConfigError("nesterov=true with momentum=0: Nesterov momentum needs momentum > 0 (SGD refuses it); "
                              "set momentum or nesterov=false")
        changes["losses"] = self._resolve_losses(recipe)
        changes["curriculum"] = self._resolve_curriculum()
        needs_teacher = _needs_teacher(changes["losses"], changes["curriculum"])
        if self.method == "ce" and needs_teacher:
            term = next(n for n, p in changes["losses"].items() if p["weight"] > 0 and _term_reads_teacher(n, p))
            raise ConfigError(f"losses.{term} reads the teacher, but method=ce trains without one; use method=kd")
        if self.method == "kd" and not needs_teacher:
            raise ConfigError("method=kd but no active loss term reads the teacher (every distillation term has "
                              "weight 0); use method=ce for a student without a teacher")
        if not needs_teacher:
            changes.update(teacher=None, teacher_weights=None, teacher_weights_sha256=None)
        else:
            if self.teacher is None and self.teacher_weights is None:
                raise ConfigError(f"method={self.method!r} needs a teacher: set teacher.model (a CE run of this "
                                  "store) or teacher_weights (a checkpoint path) with teacher.model")
            if self.teacher is not None and not isinstance(self.teacher, dict):
                raise ConfigError(f"teacher must be a mapping of run-config keys, got {self.teacher!r}")
            if self.teacher_weights is not None:
                changes["teacher_weights_sha256"] = _weights_hash(self.teacher_weights, self.teacher)
            else:
                teacher = self.teacher_config()
                changes["teacher"] = teacher.to_dict()
        if self.data_fingerprint is None:
            changes["data_fingerprint"] = _data_fingerprint(self.model_copy(update={
                "dataset_options": changes["dataset_options"]}))
        cfg = self.model_copy(update=changes)
        if cfg.teacher is not None and cfg.teacher_weights is None:
            cfg._teacher = teacher
        teacher_model = (cfg.teacher or {}).get("model") if needs_teacher else None
        from .terms import TERMS

        for name, params in cfg.losses.items():
            if params["weight"] > 0:
                term = TERMS.get(name)
                try:
                    term.check(term.Params(**params), cfg.model, teacher_model)
                except ValueError as err:
                    raise ConfigError(str(err)) from None
        if cfg.curriculum is not None:
            try:
                cfg.schedule()
            except ValueError as err:
                raise ConfigError(f"curriculum: {err}") from None
        return cfg

    def _resolve_losses(self, recipe: dict) -> dict[str, dict[str, Any]]:
        from .terms import TERMS

        preset, _ = PRESETS[self.method]
        merged: dict[str, dict[str, Any]] = {name: {} for name in preset}
        if self.losses is not None and not isinstance(self.losses, dict):
            raise ConfigError(f"losses must be a mapping of loss terms, got {self.losses!r}")
        for name, params in (self.losses or {}).items():
            if name not in TERMS:
                raise ConfigError(f"losses.{name}: unknown loss term{nearest(name, TERMS.names())}; "
                                  f"registered: {', '.join(TERMS.names())}")
            if params is None:
                merged.pop(name, None)
                continue
            if not isinstance(params, dict):
                raise ConfigError(f"losses.{name}={params!r}: must be a mapping of the term's parameters "
                                  f"({', '.join(TERMS.get(name).Params.model_fields)})")
            merged[name] = {**merged.get(name, {}), **params}
        out = {}
        for name in sorted(merged, key=TERMS.index):
            term = TERMS.get(name)
            try:
                params = term.Params(**{**recipe["losses"].get(name, {}), **merged[name]})
            except ValidationError as err:
                raise ConfigError(explain(err, f"losses.{name}")) from None
            if term.curriculum_only and self.method != "slkd" and params.weight > 0:
                raise ConfigError(f"losses.{name} applies in curriculum phases only, and method={self.method} has "
                                  "no curriculum (use method=slkd, or weight 0)")
            out[name] = params.model_dump(mode="json")
        if not any(p["weight"] > 0 for p in out.values()):
            raise ConfigError("losses: every term has weight 0; at least one must be active")
        return out

    def _resolve_curriculum(self) -> dict[str, Any] | None:
        from . import sequencer

        _, preset = PRESETS[self.method]
        if preset is None:
            if self.curriculum is not None:
                raise ConfigError(f"curriculum is set but method={self.method} has none; use method=slkd")
            return None
        try:
            cur = CurriculumConfig(**{**preset, **(self.curriculum or {})})
        except ValidationError as err:
            raise ConfigError(explain(err, "curriculum")) from None
        except TypeError:
            raise ConfigError(f"curriculum must be a mapping, got {self.curriculum!r}") from None
        try:
            options = sequencer.pacing_params(cur.pacing, cur.pacing_options)
        except ValidationError as err:
            raise ConfigError(explain(err, "curriculum.pacing_options")) from None
        return cur.model_copy(update={"pacing_options": options.model_dump(mode="json")}).model_dump(mode="json")

    def _check_teacher_keys(self) -> None:
        """A teacher is a CE run on the student's data: it has no teacher of its own and no other data set."""
        for key in ("teacher", "teacher_weights"):
            if self.teacher.get(key) is not None:
                raise ConfigError(f"teacher.{key}: a teacher is trained with method=ce and has no teacher of its own; "
                                  "remove the key")
        for key in ("dataset", "dataset_options", "data_fingerprint"):
            given = self.teacher.get(key)
            if given is not None and given != getattr(self, key):
                raise ConfigError(f"teacher.{key}={short(given)}: a teacher is trained on the student's data "
                                  f"({key}={short(getattr(self, key))}); remove the key")

    def teacher_config(self) -> "RunConfig":
        """The teacher's run config: a CE run on the same data set, seed 0 unless given; it takes the
        student's *given* recipe and augmentation fields unless it sets its own. Computed once per object."""
        if self._teacher is None:
            self._teacher = self._teacher_config()
        return self._teacher

    def _teacher_config(self) -> "RunConfig":
        if self.teacher is None:
            raise ConfigError("this run names no teacher (set 'teacher' or 'teacher_weights')")
        if not isinstance(self.teacher, dict):
            raise ConfigError(f"teacher must be a mapping of run-config keys, got {self.teacher!r}")
        self._check_teacher_keys()
        inherited = {k: getattr(self, k) for k in ("recipe", *OPTIM_FIELDS, *AUGMENT_FIELDS)
                     if k in self.model_fields_set or k == "recipe"}
        if "milestones" in inherited and "epochs" in self.teacher and "milestones" not in self.teacher:
            inherited.pop("milestones")  # the student's milestones belong to the student's budget
        base = dict(method="ce", dataset=self.dataset, dataset_options=self.dataset_options, seed=0,
                    data_fingerprint=self.data_fingerprint, **inherited)
        base.update({k: v for k, v in self.teacher.items() if k not in RUNTIME_FIELDS and k != "schema"})
        for key in RUNTIME_FIELDS:
            base[key] = getattr(self, key)
        cfg = RunConfig.from_dict(base, where="teacher")
        if cfg.method != "ce":
            raise ConfigError(f"teacher.method must be 'ce', got {cfg.method!r}")
        try:
            return cfg.resolved()
        except ConfigError as err:
            raise ConfigError(f"teacher: {err}") from None

    def schedule(self):
        """The sequencer's phases for this run (one plain phase without a curriculum)."""
        from . import sequencer

        if self.curriculum is None:
            return sequencer.make_schedule(self.epochs, pacing="none")
        c = self.curriculum
        return sequencer.schedule_for(self.epochs, c["pacing"], c.get("pacing_options") or {})

    # ------------------------------------------------------------------ components of a resolved run
    def active_terms(self) -> dict[str, Any]:
        """``{name: typed params}`` of the loss terms with weight > 0, in summation order."""
        from .terms import TERMS

        return {name: TERMS.get(name).Params(**params) for name, params in (self.losses or {}).items()
                if params["weight"] > 0}

    def curriculum_config(self) -> CurriculumConfig | None:
        return None if self.curriculum is None else CurriculumConfig(**self.curriculum)

    def requirements(self) -> frozenset[str]:
        """What the active terms read from a step (:data:`kdrepro.terms.REQUIREMENTS`), plus ``teacher_logits``
        when the curriculum's score reads the teacher."""
        from . import sequencer
        from .terms import TERMS

        out = set()
        for name, params in self.active_terms().items():
            out |= TERMS.get(name).requirements(params)
        if self.curriculum is not None and sequencer.SCORES.get(self.curriculum["score"]).needs_teacher:
            out.add("score_teacher")
        return frozenset(out)

    # ------------------------------------------------------------------ identity
    def identity(self) -> dict[str, Any]:
        """What a (resolved) run computes, as the run id hashes it; see the module docstring."""
        from .data import dataset_option_defaults
        from .models import model_option_defaults
        from .terms import params_identity

        cfg = self
        ident: dict[str, Any] = {
            "schema": SCHEMA,
            "data": {"name": cfg.dataset, "fingerprint": cfg.data_fingerprint,
                     "options": _non_default(cfg.dataset_options, dataset_option_defaults(cfg.dataset),
                                             drop=_LOCATION_OPTIONS)},
            "model": {"name": cfg.model, "options": _non_default(cfg.model_options, model_option_defaults(cfg.model))},
            "seed": cfg.seed,
            "optim": {k: (list(getattr(cfg, k)) if k == "milestones" else getattr(cfg, k)) for k in OPTIM_FIELDS},
            "augment": {"crop_padding": cfg.crop_padding, "hflip": cfg.hflip} if cfg.augment else None,
            "losses": {name: params_identity(p) for name, p in cfg.active_terms().items()},
            "curriculum": None,
            "teacher": None,
        }
        if cfg.curriculum is not None:
            from . import sequencer

            cur = cfg.curriculum_config()
            ident["curriculum"] = {k: v for k, v in params_identity(cur).items()}
            # the pacing's options as typed parameters, so that an option added later with a neutral
            # default leaves existing ids alone, as a loss term's does
            ident["curriculum"]["pacing_options"] = params_identity(
                sequencer.pacing_params(cur.pacing, cur.pacing_options))
        if cfg.teacher_weights_sha256 is not None:
            t = cfg.teacher or {}
            ident["teacher"] = {"weights_sha256": cfg.teacher_weights_sha256, "model": t.get("model"),
                                "model_options": t.get("model_options", {})}
        elif cfg.teacher is not None:
            ident["teacher"] = RunConfig.from_dict(cfg.teacher, where="teacher").identity()
        # any other field: in the id unless it is at its declared neutral value
        structured = {"method", "dataset", "dataset_options", "data_fingerprint", "model", "model_options", "seed",
                      "recipe", "teacher", "teacher_weights", "teacher_weights_sha256", "losses", "curriculum",
                      *OPTIM_FIELDS, *AUGMENT_FIELDS}
        for name, info in type(cfg).model_fields.items():
            if name in structured or name in RUNTIME_FIELDS:
                continue
            value = getattr(cfg, name)
            extra = info.json_schema_extra
            if isinstance(extra, dict) and "neutral" in extra and value == extra["neutral"]:
                continue
            ident[name] = value
        return ident

    @property
    def run_id(self) -> str:
        """``<method>-<dataset>-<model>-s<seed>-<hash>``: readable, and stable across machines and versions."""
        cfg = self.resolved()
        if cfg._run_id is None:
            blob = json.dumps(cfg.identity(), sort_keys=True, separators=(",", ":"), default=str)
            digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
            cfg._run_id = f"{cfg.method}-{cfg.dataset}-{cfg.model}-s{cfg.seed}-{digest}"
        return cfg._run_id

    # ------------------------------------------------------------------ what a (resolved) run needs
    @property
    def has_teacher_run(self) -> bool:
        """Whether the teacher is itself a run of the store (:meth:`teacher_config`)."""
        return self.method != "ce" and self.teacher is not None and self.teacher_weights is None

    @property
    def needs_teacher_features(self) -> bool:
        """FitNets, attention transfer, CRD, ... read the teacher's feature maps."""
        return "teacher_features" in self.requirements()

    @property
    def needs_teacher(self) -> bool:
        """Whether any loss term (or the curriculum's score) reads the teacher."""
        return bool(self.requirements() & {"teacher_logits", "teacher_features", "score_teacher"})

    @property
    def reads_logit_cache(self) -> bool:
        """Whether training takes the teacher's logits from the teacher-logit cache (:mod:`kdrepro.cache`)
        instead of live forward passes: the cache holds logits only, so not with a feature loss."""
        return self.needs_teacher and not self.needs_teacher_features and bool(self.teacher_cache)

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
            for key in ("score", "order", "pacing"):
                if self.curriculum[key] != getattr(c, key):
                    parts.append(f"{key}={self.curriculum[key]}")
            if self.curriculum.get("quirk_no_warmup_augment"):
                parts.append("quirk:no_warmup_augment")
        if self.bf16:
            parts.append("bf16")
        return " ".join(parts)


def _term_reads_teacher(name: str, params: dict) -> bool:
    from .terms import TERMS

    term = TERMS.get(name)
    return bool(term.requirements(term.Params(**params)) & {"teacher_logits", "teacher_features"})


def _needs_teacher(losses: dict, curriculum: dict | None) -> bool:
    from . import sequencer

    if any(p["weight"] > 0 and _term_reads_teacher(n, p) for n, p in losses.items()):
        return True
    return curriculum is not None and sequencer.SCORES.get(curriculum["score"]).needs_teacher


def _non_default(options: dict, defaults: dict, drop: frozenset = frozenset()) -> dict:
    """``options`` without the ones at their default (or in ``drop``), sorted: an option spelled out at its
    default computes the same run as the option left out, so both get one id."""
    from .terms.base import same_as_json

    return {k: v for k, v in sorted(options.items())
            if k not in drop and not (k in defaults and same_as_json(v, defaults[k]))}


def _data_fingerprint(cfg: RunConfig) -> str:
    from .data import CorruptDatasetError, DatasetNotFoundError, data_fingerprint

    try:
        return data_fingerprint(cfg.dataset, root=cfg.data_root, **cfg.dataset_options)
    except (DatasetNotFoundError, CorruptDatasetError) as err:
        raise ConfigError(f"dataset={cfg.dataset!r}: {err}") from None
    except (ValueError, TypeError) as err:
        raise ConfigError(f"dataset_options: {err}") from None


def _weights_hash(path: str, teacher: dict | None) -> str:
    if not (teacher or {}).get("model"):
        raise ConfigError("teacher_weights needs the teacher's architecture: set teacher.model too")
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"teacher_weights={path!r}: no such file")
    digest = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_given_milestones(given: list[int], epochs: int, recipe: dict) -> None:
    """Milestones a user gave: each epoch once (``[2, 2]`` would cut the lr twice at one step), none past the
    last epoch. The recipe's milestones scaled to ``epochs`` (what kdrepro itself writes into a config, which
    for a few epochs may repeat an epoch) are accepted as they are."""
    if given == [round(m * epochs / recipe["epochs"]) for m in recipe["milestones"]]:
        return
    if any(b <= a for a, b in zip(given, given[1:])):
        raise ConfigError(f"milestones={short(given)}: must be increasing, each epoch once")
    if given and given[-1] > epochs:
        raise ConfigError(f"milestones={short(given)}: every milestone must be an epoch within epochs={epochs}")


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
