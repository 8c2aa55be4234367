"""Run configuration: one frozen, serialisable dataclass per run (torchdistill style).

A :class:`RunConfig` names everything that decides a run's numbers. It is stored as ``config.json`` next
to the run's results, and its id is a stable hash of the fields that define the experiment
(:data:`RUNTIME_FIELDS` -- device, caching, compilation, progress bars, data location -- are excluded:
they change how fast a run goes, not what it computes, up to floating-point rounding).

Recipes (:data:`RECIPES`) fill every training field a user leaves unset:

* ``slkd`` -- the authors' ``train_slkd.py`` (github.com/HaoranZhao1988/kd): 300 epochs, SGD with Nesterov
  momentum 0.9, lr 0.1, x0.1 at epochs 260 and 290, weight decay 1e-4, batch 128, T = 3, CE weight 1,
  KD weight 0.1 (their ``lambda_st``), logit-MSE weight 0.05 during curriculum phases.
* ``crd`` -- RepDistiller (Tian et al., ICLR 2020): 240 epochs, SGD momentum 0.9 (no Nesterov), lr 0.05,
  x0.1 at 150/180/210, weight decay 5e-4, batch 64, T = 4, CE weight 0.1, KD weight 0.9.

When ``epochs`` is overridden and ``milestones`` is not, the recipe's milestones are scaled to the new
budget (``round(m * epochs / recipe_epochs)``), as the authors' code scales its phase boundaries.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any

METHODS = ("ce", "kd", "slkd")

RECIPES: dict[str, dict[str, Any]] = {
    "slkd": dict(
        epochs=300, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
        milestones=(260, 290), gamma=0.1, temperature=3.0, ce_weight=1.0, kd_weight=0.1, mse_weight=0.05,
    ),
    "crd": dict(
        epochs=240, batch_size=64, lr=0.05, momentum=0.9, nesterov=False, weight_decay=5e-4,
        milestones=(150, 180, 210), gamma=0.1, temperature=4.0, ce_weight=0.1, kd_weight=0.9, mse_weight=0.0,
    ),
}

# Fields that do not change what a run computes (beyond rounding); excluded from the run id.
RUNTIME_FIELDS = frozenset({"device", "teacher_cache", "compile", "channels_last", "progress", "data_root",
                            "num_threads"})
# Dataset option keys that locate files rather than define data; excluded from the run id.
_LOCATION_OPTIONS = frozenset({"path", "root"})


class ConfigError(ValueError):
    """A bad configuration key or value. The message names the key."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one training run. ``None`` means "take it from the recipe"."""

    method: str = "slkd"                 # ce (teacher or vanilla student) | kd | slkd
    dataset: str = "digits"
    dataset_options: dict = field(default_factory=dict)
    model: str = "resnet8"
    model_options: dict = field(default_factory=dict)
    teacher: dict | None = None          # the teacher's own run config (a CE run), as a dict of overrides
    teacher_weights: str | None = None   # or a published checkpoint (RepDistiller/mdistiller format)
    seed: int = 0
    recipe: str = "slkd"
    # optimisation (None: from the recipe)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float | None = None
    nesterov: bool | None = None
    weight_decay: float | None = None
    milestones: tuple | None = None
    gamma: float | None = None
    # loss weights (None: from the recipe; fitnet/at default to 0)
    temperature: float | None = None
    ce_weight: float | None = None
    kd_weight: float | None = None
    mse_weight: float | None = None      # SLKD's logit MSE, applied in curriculum phases only
    fitnet_weight: float = 0.0
    fitnet_stage: int = 2                # index into features["stages"] (RepDistiller's default hint layer)
    at_weight: float = 0.0
    at_p: float = 2.0
    # augmentation: the authors' Pad(4, reflect) + RandomCrop + RandomHorizontalFlip
    augment: bool = True
    crop_padding: int = 4
    hflip: bool = True
    # the sequencer (SLKD only)
    score: str = "max_logit"
    order: str = "easy_first"
    pacing: str = "authors"
    phase_ends: tuple | None = None
    fractions: tuple | None = None
    warmup: int | None = None
    num_phases: int = 5
    start_fraction: float = 0.2
    # the authors' quirks, off by default (see README, "Deviations and quirks")
    quirk_no_warmup_augment: bool = False  # train_slkd.py's warm-up loader uses the test transform
    quirk_mse_to_snapshot: bool = False    # MSE to the snapshot's logits instead of the teacher's
    # numerics that change results
    bf16: bool = False                    # bf16 autocast (GPU only)
    # runtime only (not part of the run id)
    device: str = "auto"
    teacher_cache: bool = True
    compile: bool = False
    channels_last: bool = True
    progress: bool | None = None
    data_root: str | None = None
    num_threads: int | None = None

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
        for key in ("milestones", "phase_ends", "fractions"):
            value = getattr(self, key)
            if value is not None:
                if not isinstance(value, (list, tuple)):
                    raise ConfigError(f"{key} must be a list, got {value!r}")
                object.__setattr__(self, key, tuple(value))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                close = [k for k in sorted(known) if k.split("_")[0] == key.split("_")[0]]
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ConfigError(f"unknown configuration key {key!r}{hint}; valid keys: {', '.join(sorted(known))}")
        return cls(**data)

    def with_overrides(self, **changes: Any) -> "RunConfig":
        data = self.to_dict()
        data.update(changes)
        return RunConfig.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    # ------------------------------------------------------------------ resolution and validation
    def resolved(self) -> "RunConfig":
        """Fill recipe defaults, resolve the teacher's config, and validate every value."""
        if self.recipe not in RECIPES:
            raise ConfigError(f"recipe {self.recipe!r} is unknown; choose one of {', '.join(RECIPES)}")
        recipe = RECIPES[self.recipe]
        changes: dict[str, Any] = {}
        for key, value in recipe.items():
            if getattr(self, key) is None:
                if key == "milestones" and self.epochs is not None and self.epochs != recipe["epochs"]:
                    value = tuple(round(m * self.epochs / recipe["epochs"]) for m in value)
                changes[key] = value
        if self.method == "ce":  # a teacher or vanilla student: no teacher, no distillation terms
            changes.update(kd_weight=0.0, mse_weight=0.0, fitnet_weight=0.0, at_weight=0.0, teacher=None,
                           teacher_weights=None)
        if self.method != "slkd":
            changes.update(pacing="none")
        if self.method == "kd":
            changes.update(mse_weight=0.0)
        if self.teacher is not None and self.method != "ce":
            changes["teacher"] = self.teacher_config().to_dict()
        cfg = dataclasses.replace(self, **changes)
        cfg._validate()
        return cfg

    def teacher_config(self) -> "RunConfig":
        """The teacher's run config: a CE run on the same data set, seed 0 unless given."""
        if self.teacher is None:
            raise ConfigError("this run names no teacher (set 'teacher' or 'teacher_weights')")
        if not isinstance(self.teacher, dict):
            raise ConfigError(f"teacher must be a mapping of run-config keys, got {self.teacher!r}")
        base = dict(method="ce", dataset=self.dataset, dataset_options=self.dataset_options, seed=0,
                    recipe=self.recipe)
        base.update({k: v for k, v in self.teacher.items() if k not in RUNTIME_FIELDS})
        for key in RUNTIME_FIELDS:
            base[key] = getattr(self, key)
        try:
            cfg = RunConfig.from_dict(base)
        except ConfigError as err:
            raise ConfigError(f"teacher: {err}") from None
        if cfg.method != "ce":
            raise ConfigError(f"teacher.method must be 'ce', got {cfg.method!r}")
        return cfg.resolved()

    def _validate(self) -> None:
        from . import sequencer  # local import: keeps config importable without torch-heavy modules

        def need(cond: bool, key: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"{key}={getattr(self, key)!r}: {msg}")

        need(self.method in METHODS, "method", f"choose one of {', '.join(METHODS)}")
        from .data import list_datasets
        from .models import list_models

        need(self.dataset in list_datasets(), "dataset", f"choose one of {', '.join(list_datasets())}")
        need(self.model in list_models(), "model", f"choose one of {', '.join(list_models())}")
        need(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", "must be a positive integer")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "must be a positive integer")
        need(self.lr > 0, "lr", "must be > 0")
        need(0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(self.temperature > 0, "temperature", "must be > 0")
        need(all(isinstance(m, int) and 0 < m for m in self.milestones), "milestones", "must be positive epochs")
        need(list(self.milestones) == sorted(self.milestones), "milestones", "must be increasing")
        need(isinstance(self.seed, int), "seed", "must be an integer")
        need(isinstance(self.crop_padding, int) and self.crop_padding >= 0, "crop_padding", "must be an integer >= 0")
        for key in ("ce_weight", "kd_weight", "mse_weight", "fitnet_weight", "at_weight"):
            need(getattr(self, key) >= 0, key, "must be >= 0")
        need(self.score in sequencer.SCORES, "score", f"choose one of {', '.join(sequencer.SCORES)}")
        need(self.order in sequencer.ORDERS, "order", f"choose one of {', '.join(sequencer.ORDERS)}")
        need(self.pacing in sequencer.PACINGS, "pacing", f"choose one of {', '.join(sequencer.PACINGS)}")
        need(self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:"), "device",
             "use auto, cpu, cuda or cuda:N")
        if self.method in ("kd", "slkd"):
            if self.teacher is None and self.teacher_weights is None:
                raise ConfigError(f"method={self.method!r} needs a teacher: set 'teacher' (a run config) or "
                                  "'teacher_weights' (a checkpoint path)")
        if self.method == "slkd":
            try:
                self.schedule()
            except ValueError as err:
                raise ConfigError(f"schedule: {err}") from None

    def schedule(self):
        """The sequencer's phases for this run (one plain phase for CE and KD runs)."""
        from . import sequencer

        return sequencer.make_schedule(
            self.epochs, pacing=self.pacing, phase_ends=self.phase_ends, fractions=self.fractions,
            warmup=self.warmup, num_phases=self.num_phases, start_fraction=self.start_fraction)

    # ------------------------------------------------------------------ identity
    def identity(self) -> dict[str, Any]:
        """The fields that define the experiment (what the run id hashes)."""
        data = {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}
        data["dataset_options"] = {k: v for k, v in sorted(self.dataset_options.items())
                                   if k not in _LOCATION_OPTIONS}
        if isinstance(data.get("teacher"), dict):
            data["teacher"] = RunConfig.from_dict(data["teacher"]).identity()
        return data

    @property
    def run_id(self) -> str:
        """``<method>-<dataset>-<model>-s<seed>-<hash>``: readable, and stable across machines."""
        cfg = self.resolved()
        blob = json.dumps(cfg.identity(), sort_keys=True, separators=(",", ":"), default=str)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
        return f"{cfg.method}-{cfg.dataset}-{cfg.model}-s{cfg.seed}-{digest}"

    # ------------------------------------------------------------------ what a (resolved) run needs
    @property
    def has_teacher_run(self) -> bool:
        """Whether the teacher is itself a run of the store (:meth:`teacher_config`): a distilling method
        that names ``teacher``."""
        return self.method != "ce" and self.teacher is not None

    @property
    def needs_teacher_features(self) -> bool:
        """FitNets and attention transfer read the teacher's feature maps."""
        return self.fitnet_weight > 0 or self.at_weight > 0

    @property
    def needs_teacher(self) -> bool:
        """Whether any loss term reads the teacher (KD, logit MSE or a feature loss)."""
        return self.kd_weight > 0 or self.mse_weight > 0 or self.needs_teacher_features

    @property
    def reads_logit_cache(self) -> bool:
        """Whether training takes the teacher's logits from the teacher-logit cache (:mod:`kdrepro.cache`)
        instead of live forward passes: the cache holds logits only, so not with a feature loss."""
        return self.needs_teacher and not self.needs_teacher_features and bool(self.teacher_cache)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["epochs=30", "teacher.model=resnet32"]`` -> a nested dict, values parsed as YAML scalars/lists."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {err}") from None
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
