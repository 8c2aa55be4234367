"""Loss terms as components (mdistiller style): each term is one small registered ``nn.Module``.

A term declares

* ``name`` (its key under ``losses:`` in a run config) and ``display`` (its name in tables);
* ``Params``: a pydantic model of its typed parameters, every one with a default (the term's source
  paper or reference code); a run's recipe may override the defaults (:data:`kdrepro.config.RECIPES`);
  ``weight`` (>= 0) is common to all, and a term with weight 0 is inactive (left out of the run and of
  its id);
* what it needs from a training step (:meth:`LossTerm.requirements`): ``teacher_logits``,
  ``teacher_features``, ``student_features``, ``snapshot`` (the curriculum's frozen student);
  the engine computes only what some active term needs, and takes the teacher's logits from the
  exact teacher-logit cache unless a term needs the teacher's features;
* whether it applies only in curriculum phases (``curriculum_only``: SLKD's logit MSE);
* optionally an initialisation stage (AB, FT, FSP): :meth:`LossTerm.init_epochs`,
  :meth:`LossTerm.init_parameters` and :meth:`LossTerm.init_loss`, which :mod:`kdrepro.initstage` runs
  before the run's first epoch;

and owns its trainable extras (a FitNets regressor, CRD's embedding heads) and their state (CRD's
memory bank): they are submodules and buffers, optimised with the student and saved and restored with
the run's checkpoint. :meth:`LossTerm.forward` returns its named, weighted loss parts; the trainer sums
every part of every active term, in registration order.

Adding a term is one file with one ``@register_term`` class, plus its import in
``kdrepro/terms/__init__.py``. Registering a term changes no existing run id: ids hash the active terms
only (:meth:`kdrepro.config.RunConfig.identity`). A parameter added to an existing term later must have
a neutral default, declared with ``Field(default, json_schema_extra={"neutral": default})``: at that
value it is left out of the id, so existing ids stay put.
"""
from __future__ import annotations

import json

import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from ..registry import Registry
from ..values import Weight

#: every loss term by name, in the order the trainer sums them
TERMS: Registry[type["LossTerm"]] = Registry("loss term")

#: what a term may ask of a training step
REQUIREMENTS = frozenset({"teacher_logits", "teacher_features", "student_features", "snapshot"})


class TermParams(BaseModel):
    """A term's typed parameters. Subclasses add theirs, each with a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: Weight = 1.0


@dataclass
class TermContext:
    """What a term may look at when it is built: the run's data and networks. A term reads only what it needs
    (FitNets the student's and teacher's stage channels, CRD the class count, the labels and the pooled
    feature sizes); the others are built without a context."""

    num_classes: int | None = None
    num_samples: int | None = None
    student: nn.Module | None = None
    teacher: nn.Module | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    targets: Tensor | None = None          # the labels of every training image, indexed like ``indices``
    image_shape: tuple[int, ...] | None = None  # (C, H, W) of the training images (None: 3 x 32 x 32)


@dataclass
class StepInputs:
    """One training step as the terms see it. Only ``student_logits`` is always needed; a field a term does not
    read may be left out (None)."""

    student_logits: Tensor
    targets: Tensor | None = None
    indices: Tensor | None = None          # the batch's indices into the training set (CRD's memory)
    images: Tensor | None = None           # the normalised, augmented batch the student saw
    epoch: int | None = None               # 1-based epoch in progress (None: no warm-up ramp, e.g. DKD's)
    curriculum: bool = True                # whether this phase is a curriculum phase
    student_features: dict | None = None   # {"stages": [...], "pooled": ...}
    teacher_logits: Tensor | None = None
    teacher_features: dict | None = None
    snapshot: nn.Module | None = None      # the curriculum's frozen student of this phase


def _params_for(cls: type["LossTerm"], params: TermParams | dict | None, overrides: dict) -> TermParams:
    """``params`` as the term's typed ``Params``: given, from a dict, or the defaults, with ``overrides``."""
    if isinstance(params, TermParams):
        return type(params)(**{**params.model_dump(), **overrides}) if overrides else params
    if params is not None and not isinstance(params, dict):
        raise TypeError(f"loss term {cls.name!r}: params must be a {cls.Params.__name__} or a dict, got "
                        f"{type(params).__name__}")
    return cls.Params(**{**(params or {}), **overrides})


class LossTerm(nn.Module):
    """Base class of loss terms; see the module docstring.

    Usable outside the engine: ``DecoupledKD()`` (the defaults), ``DecoupledKD(beta=2.0)`` or
    ``DecoupledKD(DKDParams(...))``; a term that reads its context when it is built takes ``ctx=TermContext(...)``
    with what it reads (FitNets: ``student=``, ``teacher=``). Call it on a :class:`StepInputs` or on keyword
    inputs, giving only what it reads: ``term(student_logits=z, targets=y, teacher_logits=t)`` returns its named,
    weighted parts (``sum(parts.values())`` is its loss)."""

    name: ClassVar[str] = ""
    display: ClassVar[str] = ""
    Params: ClassVar[type[TermParams]] = TermParams
    needs: ClassVar[frozenset[str]] = frozenset()
    curriculum_only: ClassVar[bool] = False

    def __init__(self, params: TermParams | dict | None = None, ctx: TermContext | None = None, **overrides):
        super().__init__()
        self.params = _params_for(type(self), params, overrides)

    def __init_subclass__(cls, **kwargs):
        """A subclass's own ``__init__(params, ctx)`` gets typed params and a context however it was called."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def __init__(self, params=None, ctx=None, **overrides):
            typed = _params_for(type(self), params, overrides)
            if ctx is not None:
                return init(self, typed, ctx)
            try:
                return init(self, typed, TermContext())
            except (AttributeError, TypeError, ValueError) as err:
                raise ValueError(f"loss term {cls.name or cls.__name__!r} reads its context when it is built ({err}): "
                                 "pass ctx=TermContext(...) with the student, teacher, num_classes or targets it "
                                 "needs") from None

        cls.__init__ = __init__

    def __call__(self, step: StepInputs | None = None, /, **inputs) -> dict[str, Tensor]:
        if step is None:
            step = StepInputs(**inputs)
        elif inputs:
            raise TypeError("pass a StepInputs or keyword inputs, not both")
        return super().__call__(step)

    @classmethod
    def requirements(cls, params: TermParams) -> frozenset[str]:
        """What this term reads from a step (default: the class's ``needs``)."""
        return cls.needs

    @classmethod
    def check(cls, params: TermParams, student_model: str, teacher_model: str | None) -> None:
        """Checks that need more than the parameters (e.g. a stage index against the architectures); raise
        ``ValueError`` with a message naming the parameter. Runs before anything is written or trained."""

    def applies(self, curriculum: bool) -> bool:
        return curriculum or not self.curriculum_only

    # -------------------------------------------------------------- initialisation stage (AB, FT, FSP)
    #: whether the initialisation stage runs the student (FT's trains the teacher's paraphraser only)
    init_reads_student: ClassVar[bool] = True

    def init_epochs(self) -> int:
        """Epochs of this term's initialisation stage, run before the run's first epoch (0: none)."""
        return 0

    def init_parameters(self, student: nn.Module) -> list[nn.Parameter]:
        """What the initialisation stage trains."""
        return []

    def init_loss(self, step: StepInputs) -> Tensor:  # pragma: no cover - only terms with a stage
        """The initialisation stage's loss on one step."""
        raise NotImplementedError

    def forward(self, step: StepInputs) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


def register_term(cls: type[LossTerm]) -> type[LossTerm]:
    """Class decorator: register a :class:`LossTerm` subclass under its ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, LossTerm)):
        raise TypeError(f"register_term takes a LossTerm subclass, got {cls!r}")
    unknown = set(cls.needs) - REQUIREMENTS
    if unknown:
        raise ValueError(f"loss term {cls.name!r} needs unknown inputs {sorted(unknown)}; known: {sorted(REQUIREMENTS)}")
    if "weight" not in cls.Params.model_fields:
        raise ValueError(f"loss term {cls.name!r}: its Params must derive from TermParams (a 'weight' field)")
    cls.display = cls.display or cls.name
    return TERMS.register(cls.name, cls)


def neutral_fields(model: type[BaseModel]) -> dict[str, Any]:
    """``{field: neutral value}`` of the fields declared with ``json_schema_extra={"neutral": value}``."""
    out = {}
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and "neutral" in extra:
            out[name] = extra["neutral"]
    return out


def params_identity(model: BaseModel) -> dict[str, Any]:
    """A parameter model's values for a run id: every field except those at their declared neutral value."""
    neutral = neutral_fields(type(model))
    data = model.model_dump(mode="json")

    return {k: v for k, v in data.items() if not (k in neutral and same_as_json(v, neutral[k]))}


def same_as_json(a: Any, b: Any) -> bool:
    """Equal as stored: compared as JSON, so that a tuple default ``()`` equals the dumped ``[]``."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
