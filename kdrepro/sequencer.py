"""The instance-level sequence of SLKD: snapshot scoring, per-class pool selection and the phase schedule.

The method (Zhao et al. 2021, arXiv 2106.10885; ``sort_training_data`` in the authors' ``train_slkd.py``,
github.com/HaoranZhao1988/kd): after a warm-up of plain KD on all data, training runs in phases. At the
start of each curriculum phase a frozen snapshot of the student scores every training image
**without augmentation** (their sorting loader uses the test transform) by its **max logit**; images are
sorted within each class, descending (easiest first), and the phase trains on the easiest 20, 40, 60, 80
and 100 % of every class.

Deviations from the authors' code, all deliberate:

* They take a fixed 1,000 images per class (CIFAR-10: 5,000 per class, five slices). Here a phase keeps
  ``ceil(fraction * n_c)`` images of each class ``c``, so 100 classes and imbalanced classes (SVHN) work.
* They rebuild the sorted pools at every epoch of a phase, always from the same snapshot checkpoint (the
  student saved at the end of the previous phase), so every epoch of a phase gets the same pool. The
  engine here scores once per phase with the newest snapshot, taken at the phase start (i.e. the end of
  the previous phase): the same pools, without the repeated scoring. Ties are broken by index here,
  which makes pools deterministic where their ``torch.sort`` leaves tie order unspecified.
* Other difficulty scores and orders (``SCORES``, ``ORDERS``) and pacing functions (``PACINGS``) are
  ablations; ``"max_logit"``, ``"easy_first"`` and ``"authors"`` are the method.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from .registry import Registry
from .values import Fraction, NonNegativeInt, PositiveFloat, PositiveInt

__all__ = [
    "SCORES",
    "ORDERS",
    "PACINGS",
    "register_score",
    "ScoreParams",
    "score_params",
    "register_order",
    "register_pacing",
    "schedule_for",
    "scores_from_logits",
    "score_instances",
    "logits_of",
    "select_pool",
    "Phase",
    "make_schedule",
    "phase_at",
]

#: curriculum scores by name: ``fn(logits [N, C], targets [N], teacher_logits [N, C] | None[, params]) -> [N]``,
#: higher = easier; ``fn.Params`` is the score's typed options and ``fn.needs_teacher`` says whether it reads
#: the teacher's logits (:func:`register_score`)
SCORES: Registry[Callable[..., Tensor]] = Registry("curriculum score")
#: orders by name: ``fn(class_scores [n_c], k, generator) -> positions of the k chosen`` (:func:`register_order`)
ORDERS: Registry[Callable[..., Tensor]] = Registry("curriculum order")
#: pacings by name: ``(Params, build(epochs, params) -> list[Phase])`` (:func:`register_pacing`)
PACINGS: Registry[tuple[type[BaseModel], Callable[..., list["Phase"]]]] = Registry("pacing")


class ScoreParams(BaseModel):
    """A score's typed options (``curriculum.score_options`` of a run config); the stock scores but
    ``teacher_kl`` have none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def register_score(name: str, params: type[BaseModel] | None = None, needs_teacher: bool = False):
    """Decorator: register a curriculum score (float32, higher = easier). Without ``params`` it is called
    ``fn(logits, targets, teacher_logits)`` and takes no option; with ``params`` (a pydantic model of its
    options, ``extra="forbid"``) it is called ``fn(logits, targets, teacher_logits, params)`` with the run's
    ``curriculum.score_options`` typed by that model. ``needs_teacher=True`` makes every run that uses it
    need a teacher (its logits on the un-augmented images come from the teacher-logit cache or a live
    forward pass)."""
    if params is not None and not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise TypeError(f"register_score({name!r}): params must be a pydantic model class, got {params!r}")
    return SCORES.decorator(name, needs_teacher=needs_teacher, Params=params or ScoreParams,
                            takes_params=params is not None)


def score_params(score: str, options: dict | BaseModel | None = None) -> BaseModel:
    """The typed options of ``score`` (pydantic ``ValidationError`` for a bad one; a typed one is returned
    as it is)."""
    params = SCORES.get(score).Params
    if isinstance(options, params):
        return options
    if isinstance(options, BaseModel):
        options = options.model_dump()
    return params(**(options or {}))


def register_order(name: str):
    """Decorator: register an order ``fn(class_scores, k, generator) -> LongTensor`` of the ``k`` positions
    (into one class's scores) that the pool takes from that class."""
    return ORDERS.decorator(name)


def register_pacing(name: str, params: type[BaseModel]):
    """Decorator: register a pacing ``build(epochs, params) -> list[Phase]`` with its typed ``params``."""
    def wrap(fn):
        PACINGS.register(name, (params, fn))
        return fn
    return wrap

#: Seed of the generator ``select_pool(order="random")`` uses when none is given.
DEFAULT_RANDOM_SEED = 0

#: The authors' phase boundaries in units of 1/300 of the budget (``train_slkd.py``: ``num = epochs/30``;
#: warm-up while ``epoch <= 4*num``, then phases up to ``7, 11, 15, 20, 30 * num``).
AUTHORS_WARMUP_END = 40
AUTHORS_PHASE_ENDS = (70, 110, 150, 200, 300)
AUTHORS_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)


def _check_choice(value: str, choices, name: str) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


# --------------------------------------------------------------------------------------------- scores


def scores_from_logits(
    logits: Tensor, targets: Tensor, score: str, teacher_logits: Tensor | None = None,
    score_options: dict | BaseModel | None = None,
) -> Tensor:
    """Per-instance difficulty scores from logits ``z`` [N, C]; **higher means easier** for every score.

    * ``max_logit``: ``max_j z_j`` (the authors' score; ignores the label),
    * ``true_class_prob``: ``softmax(z)[y]``,
    * ``ce_loss``: ``-CE(z, y) = log softmax(z)[y]``,
    * ``margin``: ``z_y - max_{j != y} z_j`` (negative when the snapshot misclassifies),
    * ``teacher_kl``: ``-KL(softmax(t / T) || softmax(z / T))``, agreement of the snapshot with the
      teacher logits ``t`` (required for this score only) at the temperature ``T`` of its options
      (``{"T": 1.0}`` by default).

    ``score_options``: the score's options (a mapping or its typed ``Params``, :func:`score_params`).
    Returns float32 [N] on the logits' device.
    """
    _check_choice(score, SCORES, "score")
    if logits.dim() != 2:
        raise ValueError(f"logits must be 2-D [N, classes], got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape[:1]:
        raise ValueError(
            f"targets must have shape [{logits.shape[0]}] to match logits {tuple(logits.shape)}, "
            f"got {tuple(targets.shape)}"
        )
    z = logits.float()
    fn = SCORES.get(score)
    params = score_params(score, score_options)
    if fn.needs_teacher:
        if teacher_logits is None:
            raise ValueError(f"score {score!r} needs teacher_logits (the teacher's logits for the same instances)")
        if teacher_logits.shape != logits.shape:
            raise ValueError(
                f"teacher_logits has shape {tuple(teacher_logits.shape)}, logits {tuple(logits.shape)}; "
                "they must match"
            )
    return fn(z, targets, teacher_logits, params) if fn.takes_params else fn(z, targets, teacher_logits)


def _labels(z: Tensor, targets: Tensor) -> Tensor:
    y = targets.long()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= z.shape[1]):
        raise ValueError(
            f"targets must lie in [0, {z.shape[1] - 1}] for {z.shape[1]} classes, "
            f"found values in [{int(y.min())}, {int(y.max())}]"
        )
    return y


@register_score("max_logit")
def _max_logit(z: Tensor, targets: Tensor, teacher_logits: Tensor | None) -> Tensor:
    """The authors' score: ``max_j z_j`` (ignores the label)."""
    return z.max(dim=1).values


@register_score("true_class_prob")
def _true_class_prob(z: Tensor, targets: Tensor, teacher_logits: Tensor | None) -> Tensor:
    return F.softmax(z, dim=1).gather(1, _labels(z, targets)[:, None]).squeeze(1)


@register_score("ce_loss")
def _ce_loss(z: Tensor, targets: Tensor, teacher_logits: Tensor | None) -> Tensor:
    return -F.cross_entropy(z, _labels(z, targets), reduction="none")


@register_score("margin")
def _margin(z: Tensor, targets: Tensor, teacher_logits: Tensor | None) -> Tensor:
    y = _labels(z, targets)
    if z.shape[1] < 2:
        raise ValueError("score 'margin' needs at least 2 classes")
    others = z.scatter(1, y[:, None], float("-inf"))
    return z.gather(1, y[:, None]).squeeze(1) - others.max(dim=1).values


class TeacherKLParams(ScoreParams):
    """``teacher_kl``'s options: the temperature of both softmaxes (1: the plain distributions)."""

    #: softmax temperature of the teacher's and the snapshot's logits (1: the plain distributions)
    T: PositiveFloat = Field(1.0, json_schema_extra={"neutral": 1.0})


@register_score("teacher_kl", TeacherKLParams, needs_teacher=True)
def _teacher_kl(z: Tensor, targets: Tensor, teacher_logits: Tensor | None, params: TeacherKLParams) -> Tensor:
    """``-KL(softmax(t / T) || softmax(z / T))`` (division by T = 1 is exact: the plain score)."""
    log_p_t = F.log_softmax(teacher_logits.float() / params.T, dim=1)
    return -F.kl_div(F.log_softmax(z / params.T, dim=1), log_p_t, reduction="none", log_target=True).sum(dim=1)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


#: the key :func:`score_instances` reads from a model that returns a dict (``{"logits": z, ...}``)
LOGITS_KEY = "logits"


def logits_of(output: Any, key: str = LOGITS_KEY) -> Tensor:
    """The logits in a model's output: the tensor itself, the first element of a tuple or list (e.g.
    ``(logits, features)``), or ``output[key]`` of a dict."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    if isinstance(output, dict):
        if key not in output:
            raise ValueError(f"the model returned a dict with keys {sorted(output)}; the logits must be under "
                             f"{key!r} (or pass output_key=<the logits' key>)")
        return output[key]
    raise ValueError(f"the model returned {type(output).__name__}; expected logits [batch, classes] as a tensor, "
                     "a tuple whose first element is the logits, or a dict")


def _is_tensor_split(dataset: Any) -> bool:
    """A :class:`kdrepro.data.ImageDataset` or anything shaped like one (``images``, ``targets``, ``normalize``)."""
    return all(hasattr(dataset, a) for a in ("images", "targets", "normalize"))


def _instances(dataset: Any) -> int:
    """How many instances ``dataset`` (a tensor split, a DataLoader or a map-style data set) holds."""
    if _is_tensor_split(dataset):
        return dataset.images.shape[0]
    if hasattr(dataset, "dataset") and hasattr(dataset, "sampler"):  # a DataLoader
        return len(dataset.dataset)
    return len(dataset)


def _split_batch(batch: Any) -> tuple[Tensor, Tensor]:
    if isinstance(batch, dict):
        missing = [k for k in ("input", "target") if k not in batch]
        if missing:
            raise ValueError(f"a dict batch needs the keys 'input' and 'target'; it has {sorted(batch)}")
        return batch["input"], torch.as_tensor(batch["target"])
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], torch.as_tensor(batch[1])
    raise ValueError(f"each batch must be (inputs, targets, ...) or a dict with 'input' and 'target', got "
                     f"{type(batch).__name__}")


def _scoring_batches(dataset: Any, batch_size: int, device: torch.device):
    """``(x, y)`` on ``device`` in dataset order: a tensor split's images normalised in slices, a DataLoader's
    batches (it must not shuffle), or any map-style dataset of ``(input, target)`` items through an
    unshuffled DataLoader."""
    from torch.utils.data import DataLoader, RandomSampler

    if _is_tensor_split(dataset):
        images, targets = dataset.images, dataset.targets
        for start in range(0, images.shape[0], batch_size):
            yield (dataset.normalize(images[start:start + batch_size].to(device)),
                   targets[start:start + batch_size].to(device))
        return
    if isinstance(dataset, DataLoader):
        if isinstance(dataset.sampler, RandomSampler):
            raise ValueError("score_instances got a DataLoader with shuffle=True; scores are returned in dataset "
                             "order, so pass a DataLoader with shuffle=False (or the dataset itself)")
        loader = dataset
    elif hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    else:
        raise ValueError(f"score_instances needs a map-style Dataset (__getitem__ and __len__), a DataLoader or a "
                         f"kdrepro ImageDataset, got {type(dataset).__name__}")
    for batch in loader:
        x, y = _split_batch(batch)
        yield x.to(device), y.to(device)


def score_instances(
    model: nn.Module,
    dataset: Any,
    score: str = "max_logit",
    teacher: nn.Module | None = None,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    teacher_logits: Tensor | None = None,
    output_key: str = LOGITS_KEY,
    score_options: dict | BaseModel | None = None,
) -> Tensor:
    """Score every instance of ``dataset`` with a frozen snapshot ``model`` (see :func:`scores_from_logits`).

    ``dataset`` is one of

    * a :class:`kdrepro.data.ImageDataset` (anything with ``images`` uint8 [N, C, H, W], ``targets`` [N] and
      ``normalize(x_uint8) -> float``): scored in slices of ``batch_size``;
    * any map-style ``torch.utils.data.Dataset`` whose items are ``(input, target, ...)`` (a
      ``TensorDataset``, a torchvision data set): batched by an unshuffled ``DataLoader`` of ``batch_size``;
    * a ``DataLoader`` with ``shuffle=False`` (its own batch size and workers), yielding ``(inputs,
      targets, ...)`` or dicts with ``"input"`` and ``"target"``.

    Score **un-augmented** views, as the authors' sorting loader does (their test transform): give a dataset
    or loader without random augmentation. The model may return the logits, a tuple whose first element is
    the logits, or a dict with the logits under ``output_key`` (default ``"logits"``). The model (and teacher)
    run in eval mode; their train/eval modes are restored afterwards. ``device`` defaults to the model's.
    ``teacher_kl`` needs ``teacher`` (a model run on the same inputs) or precomputed ``teacher_logits``
    [N, C] (e.g. the un-augmented view of the teacher-logit cache). ``score_options``: the score's options
    (:func:`score_params`; checked before any forward pass).

    Returns float32 [N] on the CPU. It is created under ``torch.inference_mode``: fine to sort, index and
    save, but not to modify in place (``.clone()`` it first).
    """
    return score_with_targets(model, dataset, score, teacher, batch_size, device, teacher_logits, output_key,
                              score_options)[0]


@torch.inference_mode()
def score_with_targets(
    model: nn.Module,
    dataset: Any,
    score: str = "max_logit",
    teacher: nn.Module | None = None,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    teacher_logits: Tensor | None = None,
    output_key: str = LOGITS_KEY,
    score_options: dict | BaseModel | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`score_instances` and the targets it read, int64 [N] on the CPU, in the same order."""
    _check_choice(score, SCORES, "score")
    params = score_params(score, score_options)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    needs_teacher = SCORES.get(score).needs_teacher
    if needs_teacher and teacher is None and teacher_logits is None:
        raise ValueError(f"score {score!r} needs teacher= (a model) or teacher_logits= (a tensor [N, C])")
    n = _instances(dataset)
    if teacher_logits is not None and teacher_logits.shape[0] != n:
        raise ValueError(f"teacher_logits has {teacher_logits.shape[0]} rows but the dataset has {n} instances")
    device = torch.device(device) if device is not None else _model_device(model)
    use_teacher_model = needs_teacher and teacher_logits is None
    modules = [model] + ([teacher] if use_teacher_model else [])
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        chunks, labels, start = [], [], 0
        for x, y in _scoring_batches(dataset, batch_size, device):
            z = logits_of(model(x), output_key)
            if z.dim() != 2 or z.shape[0] != x.shape[0]:
                raise ValueError(
                    f"model returned shape {tuple(z.shape)} for a batch of {x.shape[0]}; "
                    "expected logits [batch, classes]"
                )
            t = None
            if needs_teacher:
                t = (logits_of(teacher(x), output_key) if use_teacher_model
                     else teacher_logits[start:start + x.shape[0]].to(device))
            start += x.shape[0]
            chunks.append(scores_from_logits(z, y, score, teacher_logits=t, score_options=params).cpu())
            labels.append(y.long().cpu())
    finally:
        for m, mode in zip(modules, was_training):
            m.train(mode)
    if not chunks:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(chunks), torch.cat(labels)


# ------------------------------------------------------------------------------------------------ pools


def _pool_size(fraction: float, n_c: int) -> int:
    """``ceil(fraction * n_c)``, at least 1; rounding to 9 decimals first absorbs float noise such as
    ``0.07 * 100 = 7.000000000000001``."""
    return max(1, min(n_c, math.ceil(round(fraction * n_c, 9))))


def select_pool(
    scores: Tensor,
    targets: Tensor,
    fraction: float,
    order: str = "easy_first",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Indices of the training pool: ``k_c = ceil(fraction * n_c)`` (at least 1) instances of every class.

    * ``easy_first`` (SLKD): the ``k_c`` highest scores of each class,
    * ``hard_first`` (anti-curriculum): the ``k_c`` lowest,
    * ``random`` (control): a uniformly random subset of ``k_c``, drawn class by class (in increasing
      label order) with ``generator``; without one, a fresh CPU generator seeded with
      ``DEFAULT_RANDOM_SEED`` (0) is used, so the call is reproducible but every call draws the same subset.

    Ties are broken by index (the lower index counts as easier for ``easy_first`` and as harder for
    ``hard_first``: stable sorts), so for fixed scores the ``easy_first`` pools are nested as the fraction
    grows. Returns int64 indices sorted ascending, on the CPU.
    """
    _check_choice(order, ORDERS, "order")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    if scores.dim() != 1 or targets.shape != scores.shape:
        raise ValueError(
            f"scores and targets must be 1-D of the same length, got {tuple(scores.shape)} and {tuple(targets.shape)}"
        )
    scores, targets = scores.detach().cpu(), targets.detach().cpu()
    if torch.isnan(scores).any():
        raise ValueError(f"scores contain {int(torch.isnan(scores).sum())} NaN value(s); cannot rank instances")
    if order == "random" and generator is None:
        generator = torch.Generator().manual_seed(DEFAULT_RANDOM_SEED)
    pick = ORDERS.get(order)
    chosen = []
    for c in torch.unique(targets):  # sorted ascending
        members = torch.nonzero(targets == c).flatten()  # ascending indices
        k = _pool_size(float(fraction), members.numel())
        chosen.append(members[pick(scores[members], k, generator)])
    if not chosen:
        return torch.empty(0, dtype=torch.long)
    return torch.sort(torch.cat(chosen)).values


@register_order("easy_first")
def _easy_first(class_scores: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """SLKD: the ``k`` highest scores (ties: lower index first)."""
    return torch.sort(class_scores, descending=True, stable=True).indices[:k]


@register_order("hard_first")
def _hard_first(class_scores: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """Anti-curriculum: the ``k`` lowest scores (ties: lower index first)."""
    return torch.sort(class_scores, descending=False, stable=True).indices[:k]


@register_order("random")
def _random(class_scores: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """Control: ``k`` positions uniformly at random."""
    return torch.randperm(class_scores.numel(), generator=generator, device="cpu")[:k]


# --------------------------------------------------------------------------------------------- schedule


@dataclass(frozen=True)
class Phase:
    """One training phase: epochs ``[start, end)`` (0-based, end exclusive).

    ``fraction`` is the pool fraction per class (1.0 for the warm-up); ``curriculum`` is False for the
    warm-up and for ``pacing="none"`` (plain training on all data, no snapshot).
    """

    index: int
    start: int
    end: int
    fraction: float
    curriculum: bool


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _authors_epoch(units: int, epochs: int) -> int:
    """``units * epochs / 300`` rounded to the nearest integer, halves up (exact integer arithmetic): a
    boundary of the authors' schedule, given in units of 1/300 of the budget, scaled to ``epochs``.

    The authors' own tests ``epoch <= k * num`` (1-based epochs, ``num = epochs / 30``) floor instead of
    rounding. Both agree whenever ``units * epochs / 300`` is an integer, in particular at the paper's
    300 epochs and at 30, 60, 90, ... epochs; elsewhere rounding keeps each phase closer to its share of
    the budget (10 epochs: ends 1, 2, 4, 5, 7, 10 here, 1, 2, 3, 5, 6, 10 by flooring).
    """
    return (2 * units * epochs + 300) // 600


def _build(epochs: int, warmup: int, ends: Sequence[int], fractions: Sequence[float], pacing: str) -> list[Phase]:
    """Assemble and validate the phases: an optional warm-up, then the curriculum phases."""
    if len(ends) != len(fractions) or not ends:
        raise ValueError(
            f"pacing {pacing!r}: need as many phase ends as fractions (at least one), "
            f"got phase_ends={list(ends)} and fractions={list(fractions)}"
        )
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise ValueError(f"pacing {pacing!r}: every fraction must be in (0, 1], got {f!r} in {list(fractions)}")
    strict = pacing == "custom"
    for a, b in zip(fractions, fractions[1:]):
        if b < a or (strict and b == a):
            kind = "strictly increasing" if strict else "non-decreasing"
            raise ValueError(f"pacing {pacing!r}: fractions must be {kind}, got {list(fractions)} ({a} then {b})")
    if fractions[-1] != 1.0:
        raise ValueError(
            f"pacing {pacing!r}: the last phase must train on all data (fraction 1.0), got {fractions[-1]!r}"
        )
    bounds = [warmup, *ends]
    for a, b in zip(bounds, bounds[1:]):
        if b <= a:
            raise ValueError(
                f"pacing {pacing!r} at epochs={epochs}: phase ends {list(ends)} after a warm-up of {warmup} "
                f"epochs give an empty or reversed phase ({a} then {b}); phase ends must be strictly "
                "increasing and beyond the warm-up (use more epochs or fewer phases)"
            )
    if ends[-1] != epochs:
        raise ValueError(f"pacing {pacing!r}: the last phase end {ends[-1]} must equal epochs={epochs}")
    phases = [Phase(0, 0, warmup, 1.0, False)] if warmup > 0 else []
    for start, end, f in zip(bounds, ends, fractions):
        phases.append(Phase(len(phases), start, end, float(f), True))
    return phases


def _pacing_fraction(pacing: str, s: float, t: float) -> float:
    """Pacing function value at normalised curriculum time ``t`` in [0, 1] (Hacohen & Weinshall 2019;
    Wu, Dyer & Neyshabur, "When do curricula work?", ICLR 2021)."""
    if pacing == "linear":
        return s + (1.0 - s) * t
    return math.sqrt(s * s + (1.0 - s * s) * t)  # root


def make_schedule(
    epochs: int,
    pacing: str = "authors",
    phase_ends: Sequence[int] | None = None,
    fractions: Sequence[float] | None = None,
    warmup: int | None = None,
    num_phases: int = 5,
    start_fraction: float = 0.2,
) -> list[Phase]:
    """The phase schedule for a budget of ``epochs``.

    * ``"authors"``: ``train_slkd.py``'s schedule scaled to any budget: plain KD on all data for the
      first 40/300 of the epochs, then 20/40/60/80/100 % of each class until 70, 110, 150, 200 and 300
      /300; phase end = ``e * epochs / 300`` rounded half up (300 epochs: 40, 70, 110, 150, 200, 300; 30 epochs:
      4, 7, 11, 15, 20, 30; the authors' code floors, which agrees at multiples of 30 epochs).
    * ``"custom"``: curriculum phases ending at ``phase_ends`` with ``fractions`` (strictly increasing,
      the last 1.0), after a warm-up of ``warmup`` epochs (default none).
    * ``"linear"``, ``"root"``, ``"step"``: a pacing function grows the fraction from ``start_fraction``
      to 1 over ``num_phases`` curriculum phases of equal length (up to rounding) after the warm-up
      (default: the authors' ``40 * epochs / 300``, rounded). The ramp's time ``t`` is 0 at the start of
      the first curriculum phase and 1 at the start of the last, so the last phase trains on all data
      (Wu et al.'s pacing reaches the full set before the end of training); phase ``k`` takes the
      pacing value at its start: linear ``s + (1-s) t``, root ``sqrt(s^2 + (1-s^2) t)``; step takes
      equal increments ``s + (1-s) k/(num_phases-1)``. With equally long phases step and linear agree;
      they differ by rounding when the curriculum epochs do not divide evenly. Linear with 5 phases and
      s = 0.2 has the authors' fractions 0.2, 0.4, ..., 1.0 with equal phase lengths.
    * ``"none"``: one non-curriculum phase over all epochs (plain KD or CE runs).

    Raises ValueError, naming the bad value, for an unknown pacing, fractions outside (0, 1] or out of
    order, phase ends not strictly increasing, not beyond the warm-up, or not ending at ``epochs``,
    empty phases from rounding at tiny budgets, and options that the chosen pacing does not use.
    """
    _check_choice(pacing, BUILTIN_PACINGS, "pacing")
    _check_int(epochs, "epochs", 1)
    if pacing != "custom" and (phase_ends is not None or fractions is not None):
        raise ValueError(f"phase_ends and fractions are only used by pacing 'custom', not {pacing!r}")
    if pacing in ("authors", "none") and warmup is not None:
        raise ValueError(f"warmup={warmup!r} is not used by pacing {pacing!r} (only custom, linear, root, step)")
    if pacing == "none":
        return [Phase(0, 0, epochs, 1.0, False)]
    if pacing == "authors":
        ends = [_authors_epoch(e, epochs) for e in AUTHORS_PHASE_ENDS]
        return _build(epochs, _authors_epoch(AUTHORS_WARMUP_END, epochs), ends, AUTHORS_FRACTIONS, pacing)
    if warmup is not None:
        _check_int(warmup, "warmup", 0)
    if pacing == "custom":
        if phase_ends is None or fractions is None:
            raise ValueError("pacing 'custom' needs phase_ends= and fractions= (one fraction per phase end)")
        for e in phase_ends:
            if isinstance(e, bool) or not isinstance(e, int):
                raise ValueError(f"phase_ends must be ints, got {e!r} in {list(phase_ends)}")
        return _build(epochs, warmup or 0, list(phase_ends), list(fractions), pacing)
    _check_int(num_phases, "num_phases", 1)
    if isinstance(start_fraction, bool) or not isinstance(start_fraction, (int, float)) or not 0 < start_fraction <= 1:
        raise ValueError(f"start_fraction must be in (0, 1], got {start_fraction!r}")
    warm = _authors_epoch(AUTHORS_WARMUP_END, epochs) if warmup is None else warmup
    if warm >= epochs:
        raise ValueError(f"warmup={warm} leaves no curriculum epochs out of epochs={epochs}")
    span = epochs - warm
    if span < num_phases:
        raise ValueError(
            f"pacing {pacing!r} at epochs={epochs}: {span} curriculum epochs after a warm-up of {warm} cannot "
            f"hold num_phases={num_phases} non-empty phases (use more epochs or fewer phases)"
        )
    starts = [warm + k * span // num_phases for k in range(num_phases)]
    ends = starts[1:] + [epochs]
    s = float(start_fraction)
    last = num_phases - 1
    if pacing == "step":
        fracs = [s + (1.0 - s) * k / last if last else 1.0 for k in range(num_phases)]
    else:
        fracs = [_pacing_fraction(pacing, s, (b - warm) / (starts[-1] - warm)) if last else 1.0 for b in starts]
    fracs[-1] = 1.0  # exact, whatever the float rounding of the formula
    return _build(epochs, warm, ends, fracs, pacing)


BUILTIN_PACINGS = ("authors", "custom", "linear", "root", "step", "none")


class PacingParams(BaseModel):
    """A pacing's typed options (``curriculum.pacing_options`` of a run config). ``authors`` has none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomPacing(PacingParams):
    phase_ends: tuple[PositiveInt, ...]
    fractions: tuple[Fraction, ...]
    warmup: NonNegativeInt = 0


class RampPacing(PacingParams):
    num_phases: PositiveInt = 5
    start_fraction: Fraction = 0.2
    warmup: NonNegativeInt | None = None   # None: the authors' 40/300 of the budget


register_pacing("authors", PacingParams)(lambda epochs, p: make_schedule(epochs, "authors"))
register_pacing("custom", CustomPacing)(lambda epochs, p: make_schedule(
    epochs, "custom", phase_ends=list(p.phase_ends), fractions=list(p.fractions), warmup=p.warmup))
for _name in ("linear", "root", "step"):
    register_pacing(_name, RampPacing)(lambda epochs, p, _name=_name: make_schedule(
        epochs, _name, warmup=p.warmup, num_phases=p.num_phases, start_fraction=p.start_fraction))
register_pacing("none", PacingParams)(lambda epochs, p: make_schedule(epochs, "none"))


@register_pacing("full", PacingParams)
def full_pacing(epochs: int, params: PacingParams) -> list[Phase]:
    """A control, not the authors' setting: the authors' warm-up (plain KD on all data for 40/300 of the
    budget), then one curriculum phase on 100 % of every class to the end. The curriculum-only loss terms
    (the logit MSE) switch on after the warm-up exactly as in SLKD, but no image is ever left out, so the run
    is KD plus SLKD's MSE term without the curriculum, with KD's optimizer steps."""
    warm = _authors_epoch(AUTHORS_WARMUP_END, epochs)
    return make_schedule(epochs, "custom", phase_ends=[epochs], fractions=[1.0], warmup=warm)


def pacing_params(pacing: str, options: dict | None = None) -> BaseModel:
    """The typed options of ``pacing`` (pydantic ``ValidationError`` for a bad one)."""
    params, _ = PACINGS.get(pacing)
    return params(**(options or {}))


def schedule_for(epochs: int, pacing: str, options: dict | BaseModel | None = None) -> list[Phase]:
    """The phases of a registered ``pacing`` with ``options`` at a budget of ``epochs``."""
    params, build = PACINGS.get(pacing)
    if not isinstance(options, BaseModel):
        options = params(**(options or {}))
    return build(epochs, options)


def phase_at(schedule: Sequence[Phase], epoch: int) -> Phase:
    """The phase containing 0-based ``epoch``."""
    for phase in schedule:
        if phase.start <= epoch < phase.end:
            return phase
    span = f"[{schedule[0].start}, {schedule[-1].end})" if schedule else "(empty schedule)"
    raise ValueError(f"epoch {epoch!r} is outside the schedule's epochs {span}")
