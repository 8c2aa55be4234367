"""Resolution: a run config as a user gives it (:class:`kdrepro.config.RunConfig`) -> the frozen run it
computes (:class:`ResolvedRun`), made once by :func:`resolve` at the edges (the CLI, a study's planner, the
job body, ``kdrepro migrate``) and passed to the engine, the run store, the executors and the studies.

Resolution fills every recipe field and loss weight a user leaves unset from the recipe (:data:`RECIPES`)
and the method's preset (:data:`PRESETS`), types the loss terms and the curriculum, resolves the teacher
(the teacher rule, :func:`teacher_config`), fingerprints the data, checks every value that can be checked
without training, and computes the run's identity and id once.

Recipes:

* ``slkd`` -- the authors' ``train_slkd.py`` (github.com/HaoranZhao1988/kd): 300 epochs, SGD with Nesterov
  momentum 0.9, lr 0.1, x0.1 at epochs 260 and 290, weight decay 1e-4, batch 128; CE weight 1, KD weight 0.1
  (their ``lambda_st``) at T = 3, logit-MSE weight 0.05 during curriculum phases.
* ``crd`` -- RepDistiller (Tian et al., ICLR 2020): 240 epochs, SGD momentum 0.9 (no Nesterov), lr 0.05,
  x0.1 at 150/180/210, weight decay 5e-4, batch 64; CE weight 0.1, KD weight 0.9 at T = 4, no logit MSE.

When ``epochs`` is overridden and ``milestones`` is not, the recipe's milestones are scaled to the new
budget (``round(m * epochs / recipe_epochs)``), as the authors' code scales its phase boundaries.

Run identity (:attr:`ResolvedRun.identity`, schema :data:`SCHEMA`) holds what a run computes: the data
(name, options that change what is loaded, and a content fingerprint, :func:`kdrepro.data.data_fingerprint`;
never the location), the model, the seed, the recipe fields, the active loss terms with their
parameters, the curriculum (when there is one) and the teacher's own identity. Runtime fields
(:data:`RUNTIME_FIELDS`) and inactive settings (a term with weight 0, pacing options of an unused pacing)
are left out, and so is every config field, term parameter, pacing option or score option declared with a
*neutral* value while it has that value (a score without options, or with every option neutral, has no
``score_options`` in its identity): adding such a field, or registering a new loss term or score, leaves every
existing id unchanged.

This module does not import :mod:`kdrepro.config` (which imports it): it builds a teacher's config with
the class of the student's.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .registry import nearest
from .values import Bool, ConfigError, explain, short

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

#: fields that do not change what a run computes (beyond rounding); excluded from the run id
RUNTIME_FIELDS = frozenset({"device", "teacher_cache", "teacher_cache_dtype", "compile", "channels_last", "progress",
                            "data_root", "num_threads", "cache_threads", "metrics_writers", "log_every"})
#: dataset option keys that locate files rather than define data; excluded from the run id
_LOCATION_OPTIONS = frozenset({"path", "root"})
#: what a step reads that only a teacher gives
_TEACHER_NEEDS = frozenset({"teacher_logits", "teacher_features", "score_teacher"})


class CurriculumConfig(BaseModel):
    """A run's curriculum (``curriculum`` of a run config): registered score, order and pacing names, and
    the score's and the pacing's options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    score: str = "max_logit"
    #: the score's options (its registered `Params`; score options below), e.g. `{T: 3}` for `teacher_kl`;
    #: a stored config holds the given ones, typed (no key when none is given)
    score_options: dict[str, Any] = Field(default_factory=dict, json_schema_extra={"neutral": {}})
    order: str = "easy_first"
    pacing: str = "authors"
    pacing_options: dict[str, Any] = Field(default_factory=dict)
    #: the authors' quirk: their warm-up loader uses the test transform (no augmentation)
    quirk_no_warmup_augment: Bool = Field(False, json_schema_extra={"neutral": False})

    @field_validator("score", "order", "pacing")
    @classmethod
    def _registered(cls, value: str, info) -> str:
        from . import sequencer

        registry = {"score": sequencer.SCORES, "order": sequencer.ORDERS, "pacing": sequencer.PACINGS}[info.field_name]
        if value not in registry or (info.field_name == "pacing" and value == "none"):
            names = [n for n in registry.names() if n != "none"]
            raise ValueError(f"choose one of {', '.join(names)}{nearest(value, names)}")
        return value


@dataclass(frozen=True)
class TeacherCheckpoint:
    """A published teacher checkpoint: its architecture, the file and the file's content hash."""

    model: str
    model_options: Mapping[str, Any]
    path: str
    sha256: str


@dataclass(frozen=True, eq=False)
class ResolvedRun:
    """One run as it computes: made by :func:`resolve`, never changed. The resolved config's fields
    (``method``, ``epochs``, ``lr``, ...) read through as attributes; ``teacher`` and ``curriculum`` are the
    resolved, typed forms (the config's own are ``run.config.teacher`` and ``run.config.curriculum``)."""

    #: the resolved config: every field explicit, as ``config.json`` stores it
    config: Any
    #: ``<method>-<dataset>-<model>-s<seed>-<hash>`` of :attr:`identity`
    run_id: str
    #: what the run computes (see the module docstring); do not change it
    identity: dict[str, Any]
    #: the active loss terms (weight > 0) in summation order, as typed parameters
    terms: Mapping[str, BaseModel]
    #: the curriculum's choices, its score's and its pacing's typed options, or None without a curriculum
    curriculum: Any
    score_options: BaseModel | None
    pacing_options: BaseModel | None
    #: the sequencer's phases (one plain phase without a curriculum)
    schedule: tuple
    #: the teacher run of the store (a resolved CE run), or None
    teacher: "ResolvedRun | None"
    #: or a published checkpoint, or None
    checkpoint: TeacherCheckpoint | None
    data_fingerprint: str
    #: what the active terms (and the curriculum's score) read from a step (:data:`kdrepro.terms.REQUIREMENTS`,
    #: plus ``score_teacher``)
    requirements: frozenset[str]
    _fields: frozenset = field(default=frozenset(), repr=False)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "config" or name not in self._fields:
            raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")
        return getattr(self.config, name)

    def __repr__(self) -> str:
        return f"ResolvedRun({self.run_id})"

    @property
    def has_teacher_run(self) -> bool:
        """Whether the teacher is itself a run of the store (:attr:`teacher`)."""
        return self.teacher is not None

    @property
    def needs_teacher(self) -> bool:
        """Whether any loss term (or the curriculum's score) reads the teacher."""
        return bool(self.requirements & _TEACHER_NEEDS)

    @property
    def needs_teacher_features(self) -> bool:
        """FitNets, attention transfer, CRD, ... read the teacher's feature maps."""
        return "teacher_features" in self.requirements

    @property
    def reads_logit_cache(self) -> bool:
        """Whether training takes the teacher's logits from the teacher-logit cache (:mod:`kdrepro.cache`)
        instead of live forward passes: the cache holds logits only, so not with a feature loss."""
        return self.needs_teacher and not self.needs_teacher_features and bool(self.config.teacher_cache)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config, JSON-ready (``config.json``)."""
        return self.config.to_dict()

    def label(self) -> str:
        return self.config.label()

    def computes_the_same(self, stored: Mapping[str, Any]) -> bool:
        """Whether a stored config (``config.json``) is this run's resolved config up to runtime fields: it
        then computes this run, and its id is :attr:`run_id` without resolving it again."""
        return _computed(stored) == _computed(json.loads(json.dumps(self.to_dict(), default=str)))


def _computed(data: Mapping[str, Any]) -> dict:
    out = {k: v for k, v in data.items() if k not in RUNTIME_FIELDS}
    if isinstance(out.get("teacher"), dict):
        out["teacher"] = _computed(out["teacher"])
    return out


# ---------------------------------------------------------------------------------------- resolve, once

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


def resolve(cfg: Any) -> ResolvedRun:
    """The :class:`ResolvedRun` of a :class:`~kdrepro.config.RunConfig` (a resolved run is returned as it
    is). Computed once per config object (and once per memo, :func:`resolution_memo`); a bad value raises
    one :class:`ConfigError` line naming the key."""
    if isinstance(cfg, ResolvedRun):
        return cfg
    done = cfg._resolution
    if done is None:
        memo = _MEMO.get()
        key = None
        if memo is not None:
            key = json.dumps([cfg.model_dump(mode="json"), sorted(cfg.model_fields_set)], sort_keys=True,
                             default=str)
            done = memo.get(key)
        if done is None:
            try:
                done = _resolve(cfg)
            except ValidationError as err:
                raise ConfigError(explain(err)) from None
            if memo is not None:
                memo[key] = done
        cfg._resolution = done
    return done


def _resolve(cfg: Any) -> ResolvedRun:
    """Resolve one config from scratch (its teacher through :func:`resolve`)."""
    from . import sequencer
    from .plugins import load_plugins
    from .terms import TERMS

    load_plugins()  # a plugin's components (entry points, $KDREPRO_PLUGINS), in every process that resolves
    filled, teacher = _fill(cfg)
    terms = {name: TERMS.get(name).Params(**params) for name, params in filled.losses.items()
             if params["weight"] > 0}
    curriculum = score = pacing = None
    if filled.curriculum is not None:
        curriculum = CurriculumConfig(**filled.curriculum)
        score = sequencer.score_params(curriculum.score, curriculum.score_options)
        pacing = sequencer.pacing_params(curriculum.pacing, curriculum.pacing_options)
        try:
            schedule = sequencer.schedule_for(filled.epochs, curriculum.pacing, pacing)
        except ValueError as err:
            raise ConfigError(f"curriculum: {err}") from None
    else:
        schedule = sequencer.make_schedule(filled.epochs, pacing="none")
    checkpoint = None
    if filled.teacher_weights is not None:
        t = filled.teacher or {}
        checkpoint = TeacherCheckpoint(t["model"], dict(t.get("model_options", {})), filled.teacher_weights,
                                       filled.teacher_weights_sha256)
    requirements = set()
    for name, params in terms.items():
        requirements |= TERMS.get(name).requirements(params)
    if curriculum is not None and sequencer.SCORES.get(curriculum.score).needs_teacher:
        requirements.add("score_teacher")
    identity = _identity(filled, terms, curriculum, score, pacing, teacher)
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    run_id = f"{filled.method}-{filled.dataset}-{filled.model}-s{filled.seed}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"
    run = ResolvedRun(config=filled, run_id=run_id, identity=identity, terms=terms, curriculum=curriculum,
                      score_options=score, pacing_options=pacing, schedule=tuple(schedule), teacher=teacher, checkpoint=checkpoint,
                      data_fingerprint=filled.data_fingerprint, requirements=frozenset(requirements),
                      _fields=frozenset(type(filled).model_fields) - {"teacher", "curriculum"})
    filled._resolution = run
    return run


def _fill(cfg: Any) -> tuple[Any, ResolvedRun | None]:
    """The config with the recipe, the preset, the teacher and the data fingerprint filled in and every value
    checked; and the teacher's resolved run (None without a teacher run)."""
    from .data import check_dataset_options, list_datasets
    from .models import check_model_options, list_models

    if cfg.recipe not in RECIPES:
        raise ConfigError(f"recipe={cfg.recipe!r}: choose one of {', '.join(RECIPES)}{nearest(cfg.recipe, list(RECIPES))}")
    if cfg.dataset not in list_datasets():
        raise ConfigError(f"dataset={cfg.dataset!r}: choose one of {', '.join(list_datasets())}"
                          f"{nearest(cfg.dataset, list_datasets())}")
    if cfg.model not in list_models():
        raise ConfigError(f"model={cfg.model!r}: choose one of {', '.join(list_models())}{nearest(cfg.model, list_models())}")
    _check_writers(cfg.metrics_writers)
    recipe = RECIPES[cfg.recipe]
    changes: dict[str, Any] = {}
    try:  # options are checked and coerced here, before any run (a teacher included) is trained
        changes["dataset_options"] = check_dataset_options(cfg.dataset, cfg.dataset_options)
        changes["model_options"] = check_model_options(cfg.model, cfg.model_options)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for key in OPTIM_FIELDS:
        if getattr(cfg, key) is None:
            value = recipe[key]
            if key == "milestones" and cfg.epochs is not None and cfg.epochs != recipe["epochs"]:
                value = tuple(round(m * cfg.epochs / recipe["epochs"]) for m in value)
            changes[key] = value
    milestones = changes.get("milestones", cfg.milestones)
    if list(milestones) != sorted(milestones):
        raise ConfigError(f"milestones={short(list(milestones))}: must be increasing")
    if cfg.milestones is not None:
        _check_given_milestones(list(cfg.milestones), changes.get("epochs", cfg.epochs), recipe)
    if cfg.momentum == 0 and cfg.nesterov:
        raise ConfigError("nesterov=true with momentum=0: Nesterov momentum needs momentum > 0 (SGD refuses it); "
                          "set momentum or nesterov=false")
    changes["losses"] = _losses(cfg, recipe)
    changes["curriculum"] = _curriculum(cfg)
    needs_teacher = _needs_teacher(changes["losses"], changes["curriculum"])
    if cfg.method == "ce" and needs_teacher:
        term = next(n for n, p in changes["losses"].items() if p["weight"] > 0 and _term_reads_teacher(n, p))
        raise ConfigError(f"losses.{term} reads the teacher, but method=ce trains without one; use method=kd")
    if cfg.method == "kd" and not needs_teacher:
        raise ConfigError("method=kd but no active loss term reads the teacher (every distillation term has "
                          "weight 0); use method=ce for a student without a teacher")
    if cfg.data_fingerprint is None:
        changes["data_fingerprint"] = _data_fingerprint(cfg, changes["dataset_options"])
    teacher = None
    if not needs_teacher:
        changes.update(teacher=None, teacher_weights=None, teacher_weights_sha256=None)
    else:
        if cfg.teacher is None and cfg.teacher_weights is None:
            raise ConfigError(f"method={cfg.method!r} needs a teacher: set teacher.model (a CE run of this "
                              "store) or teacher_weights (a checkpoint path) with teacher.model")
        if cfg.teacher is not None and not isinstance(cfg.teacher, dict):
            raise ConfigError(f"teacher must be a mapping of run-config keys, got {cfg.teacher!r}")
        if cfg.teacher_weights is not None:
            changes["teacher_weights_sha256"] = _weights_hash(cfg.teacher_weights, cfg.teacher)
        else:
            teacher = _resolved_teacher(cfg, changes.get("data_fingerprint", cfg.data_fingerprint))
            changes["teacher"] = teacher.to_dict()
    filled = cfg.model_copy(update=changes)
    teacher_model = (filled.teacher or {}).get("model") if needs_teacher else None
    from .terms import TERMS

    for name, params in filled.losses.items():
        if params["weight"] > 0:
            term = TERMS.get(name)
            try:
                term.check(term.Params(**params), filled.model, teacher_model)
            except ValueError as err:
                raise ConfigError(str(err)) from None
    return filled, teacher


def _losses(cfg: Any, recipe: dict) -> dict[str, dict[str, Any]]:
    from .terms import TERMS

    preset, _ = PRESETS[cfg.method]
    merged: dict[str, dict[str, Any]] = {name: {} for name in preset}
    if cfg.losses is not None and not isinstance(cfg.losses, dict):
        raise ConfigError(f"losses must be a mapping of loss terms, got {cfg.losses!r}")
    for name, params in (cfg.losses or {}).items():
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
        if term.curriculum_only and cfg.method != "slkd" and params.weight > 0:
            raise ConfigError(f"losses.{name} applies in curriculum phases only, and method={cfg.method} has "
                              "no curriculum (use method=slkd, or weight 0)")
        out[name] = params.model_dump(mode="json")
    if not any(p["weight"] > 0 for p in out.values()):
        raise ConfigError("losses: every term has weight 0; at least one must be active")
    return out


def _curriculum(cfg: Any) -> dict[str, Any] | None:
    from . import sequencer

    _, preset = PRESETS[cfg.method]
    if preset is None:
        if cfg.curriculum is not None:
            raise ConfigError(f"curriculum is set but method={cfg.method} has none; use method=slkd")
        return None
    try:
        cur = CurriculumConfig(**{**preset, **(cfg.curriculum or {})})
    except ValidationError as err:
        raise ConfigError(explain(err, "curriculum")) from None
    except TypeError:
        raise ConfigError(f"curriculum must be a mapping, got {cfg.curriculum!r}") from None
    try:
        options = sequencer.pacing_params(cur.pacing, cur.pacing_options)
    except ValidationError as err:
        raise ConfigError(explain(err, "curriculum.pacing_options")) from None
    score_options = score_options_given(cur.score, cur.score_options, "curriculum.score_options")
    out = cur.model_copy(update={"pacing_options": options.model_dump(mode="json"), "score_options": score_options})
    # no options given: no key, so that a config stores what it stored before scores had options
    return out.model_dump(mode="json", exclude={"score_options"} if not score_options else None)


def score_options_given(score: str, options: dict, where: str) -> dict[str, Any]:
    """The given options of ``score``, typed by its ``Params``: one :class:`ConfigError` line naming the key
    (``<where>.<key>``) and the score for an unknown option or a bad value."""
    from . import sequencer
    from .values import typed_options

    try:
        return typed_options(sequencer.SCORES.get(score).Params, options, where, f"score {score!r}")
    except ValueError as err:
        message = str(err)
        raise ConfigError(message if f"score {score!r}" in message else f"{message} (an option of score {score!r})") \
            from None


# ---------------------------------------------------------------------------------------- the teacher rule

def _check_teacher_keys(cfg: Any) -> None:
    """A teacher is a CE run on the student's data: it has no teacher of its own and no other data set."""
    for key in ("teacher", "teacher_weights"):
        if cfg.teacher.get(key) is not None:
            raise ConfigError(f"teacher.{key}: a teacher is trained with method=ce and has no teacher of its own; "
                              "remove the key")
    for key in ("dataset", "dataset_options", "data_fingerprint"):
        given = cfg.teacher.get(key)
        if given is not None and given != getattr(cfg, key):
            raise ConfigError(f"teacher.{key}={short(given)}: a teacher is trained on the student's data "
                              f"({key}={short(getattr(cfg, key))}); remove the key")


def teacher_config(cfg: Any, data_fingerprint: str | None = None) -> Any:
    """The teacher rule: a student's teacher is a CE run on the student's data set, seed 0 unless given, with
    the student's runtime fields; it takes the student's *given* recipe and augmentation fields unless
    ``teacher.<key>`` sets its own (the student's milestones stay the student's when the teacher sets its
    own epochs). Returns the teacher's config as given (not resolved)."""
    if cfg.teacher is None:
        raise ConfigError("this run names no teacher (set 'teacher' or 'teacher_weights')")
    if not isinstance(cfg.teacher, dict):
        raise ConfigError(f"teacher must be a mapping of run-config keys, got {cfg.teacher!r}")
    _check_teacher_keys(cfg)
    inherited = {k: getattr(cfg, k) for k in ("recipe", *OPTIM_FIELDS, *AUGMENT_FIELDS)
                 if k in cfg.model_fields_set or k == "recipe"}
    if "milestones" in inherited and "epochs" in cfg.teacher and "milestones" not in cfg.teacher:
        inherited.pop("milestones")  # the student's milestones belong to the student's budget
    base = dict(method="ce", dataset=cfg.dataset, dataset_options=cfg.dataset_options, seed=0,
                data_fingerprint=cfg.data_fingerprint or data_fingerprint, **inherited)
    base.update({k: v for k, v in cfg.teacher.items() if k not in RUNTIME_FIELDS and k != "schema"})
    for key in RUNTIME_FIELDS:
        base[key] = getattr(cfg, key)
    tcfg = type(cfg).from_dict(base, where="teacher")
    if tcfg.method != "ce":
        raise ConfigError(f"teacher.method must be 'ce', got {tcfg.method!r}")
    return tcfg


def _resolved_teacher(cfg: Any, data_fingerprint: str | None) -> ResolvedRun:
    tcfg = teacher_config(cfg, data_fingerprint)
    try:
        return resolve(tcfg)
    except ConfigError as err:
        raise ConfigError(f"teacher: {err}") from None


# ---------------------------------------------------------------------------------------- identity

def _identity(cfg: Any, terms: Mapping[str, BaseModel], curriculum: Any, score: BaseModel | None,
              pacing: BaseModel | None, teacher: ResolvedRun | None) -> dict[str, Any]:
    from .data import dataset_option_defaults
    from .models import model_option_defaults
    from .terms import params_identity

    ident: dict[str, Any] = {
        "schema": SCHEMA,
        "data": {"name": cfg.dataset, "fingerprint": cfg.data_fingerprint,
                 "options": _non_default(cfg.dataset_options, dataset_option_defaults(cfg.dataset),
                                         drop=_LOCATION_OPTIONS)},
        "model": {"name": cfg.model, "options": _non_default(cfg.model_options, model_option_defaults(cfg.model))},
        "seed": cfg.seed,
        "optim": {k: (list(getattr(cfg, k)) if k == "milestones" else getattr(cfg, k)) for k in OPTIM_FIELDS},
        "augment": {"crop_padding": cfg.crop_padding, "hflip": cfg.hflip} if cfg.augment else None,
        "losses": {name: params_identity(p) for name, p in terms.items()},
        "curriculum": None,
        "teacher": None,
    }
    if curriculum is not None:
        ident["curriculum"] = dict(params_identity(curriculum))
        # the pacing's options as typed parameters, so that an option added later with a neutral
        # default leaves existing ids alone, as a loss term's does
        ident["curriculum"]["pacing_options"] = params_identity(pacing)
        # the score's options likewise, and none at all while every one is at its neutral value (a score
        # that gains options leaves the ids of its runs alone)
        ident["curriculum"].pop("score_options", None)
        if params_identity(score):
            ident["curriculum"]["score_options"] = params_identity(score)
    if cfg.teacher_weights_sha256 is not None:
        t = cfg.teacher or {}
        ident["teacher"] = {"weights_sha256": cfg.teacher_weights_sha256, "model": t.get("model"),
                            "model_options": t.get("model_options", {})}
    elif teacher is not None:
        ident["teacher"] = teacher.identity
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


# ---------------------------------------------------------------------------------------- helpers

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


def _check_writers(names: tuple[str, ...]) -> None:
    """Every metrics writer registered (:data:`kdrepro.callbacks.METRICS_WRITERS`)."""
    from .callbacks import METRICS_WRITERS

    for name in names:
        if name not in METRICS_WRITERS:
            known = METRICS_WRITERS.names()
            raise ConfigError(f"metrics_writers: unknown writer {name!r}; choose from {', '.join(known)}"
                              f"{nearest(name, known)}")


def _data_fingerprint(cfg: Any, options: dict) -> str:
    from .data import CorruptDatasetError, DatasetNotFoundError, data_fingerprint

    try:
        return data_fingerprint(cfg.dataset, root=cfg.data_root, **options)
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
