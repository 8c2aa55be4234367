"""SLKD's instance-level curriculum as one object for any PyTorch training loop.

:class:`Curriculum` holds a training set, a phase schedule (a pacing) and a difficulty score. At the start
of every curriculum phase it scores every training instance with a frozen view of the model (the
snapshot: the model as it is at the phase start, run in eval mode on un-augmented inputs) and selects the
phase's pool, the easiest fraction of every class (:mod:`kdrepro.sequencer`). :meth:`Curriculum.sampler`
gives a ``torch.utils.data.Sampler`` that follows the pool phase after phase, so a ``DataLoader`` is built
once; :class:`DistributedCurriculumSampler` shards each phase's pool across ``torch.distributed`` ranks.

::

    cur = Curriculum(train_set, epochs=30, score_data=train_set_without_augmentation)
    loader = DataLoader(train_set, batch_size=128, sampler=cur.sampler())
    for epoch in range(30):
        cur.set_epoch(epoch, model)        # at a phase start: score with the model, select the pool
        for x, y in loader: ...            # cur.phase.curriculum: whether SLKD's logit MSE applies

The training engine (:class:`kdrepro.engine.Trainer`) scores and selects through the same object
(:meth:`Curriculum.scores` and :meth:`Curriculum.select`), so a run and a loop given the same scores get
the same pools.
"""
from __future__ import annotations

import copy
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import Sampler

from . import sequencer
from .sequencer import Phase

__all__ = ["Curriculum", "CurriculumSampler", "DistributedCurriculumSampler"]


def _dataset_targets(dataset: Any) -> Tensor | None:
    """The labels a data set exposes as ``targets`` (kdrepro and torchvision data sets), else None."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        return None
    return torch.as_tensor(targets, dtype=torch.long).cpu()


class Curriculum:
    """The phases, snapshot scoring and per-class pools of SLKD for one training set.

    * ``dataset``: the training set, any map-style ``Dataset`` (its length fixes the indices a pool holds).
    * ``score_data``: what the snapshot scores, in the same order: a data set or an unshuffled
      ``DataLoader`` of un-augmented views (default ``dataset``, which is right only when it does not
      augment), or give ``score_transform`` to score ``dataset`` with that transform in place of its own
      ``transform`` attribute (a torchvision-style data set).
    * the schedule: ``schedule`` (a list of :class:`kdrepro.sequencer.Phase`), or ``epochs`` with a
      registered ``pacing`` (default ``"authors"``: warm-up, then 20/40/60/80/100 % of every class; it needs
      ``epochs >= 8``) and its ``pacing_options``; see :func:`kdrepro.sequencer.make_schedule`.
    * ``score`` (default ``"max_logit"``) and ``order`` (default ``"easy_first"``): :data:`kdrepro.sequencer.SCORES`
      and :data:`kdrepro.sequencer.ORDERS`; ``score_options``: the score's options (e.g. ``{"T": 3}`` for
      ``teacher_kl``), typed by its ``Params`` here; ``generator`` draws the ``"random"`` order.
    * ``targets``: the labels [N] (default: the data set's ``targets`` attribute, else those read while scoring).
    * ``output_key``: where the logits are when the model returns a dict; ``batch_size``: the scoring batch.

    State: :attr:`phase` (the current :class:`Phase`), :attr:`pool` (int64 indices, ascending) and
    :attr:`last_scores` (the scores the pool was selected from; None outside curriculum phases).
    """

    def __init__(self, dataset: Any, epochs: int | None = None, *, pacing: str = "authors",
                 pacing_options: dict | None = None, schedule: Sequence[Phase] | None = None,
                 score: str = "max_logit", score_options: dict | Any = None, order: str = "easy_first",
                 score_data: Any = None,
                 score_transform: Any = None, targets: Tensor | Sequence[int] | None = None,
                 generator: torch.Generator | None = None, batch_size: int = 512,
                 output_key: str = sequencer.LOGITS_KEY) -> None:
        if (schedule is None) == (epochs is None):
            raise ValueError("Curriculum needs either epochs= (with pacing=) or schedule= (a list of Phase), not both")
        self.schedule = list(schedule) if schedule is not None else sequencer.schedule_for(epochs, pacing, pacing_options)
        sequencer._check_choice(score, sequencer.SCORES, "score")
        sequencer._check_choice(order, sequencer.ORDERS, "order")
        #: the score's typed options (:func:`kdrepro.sequencer.score_params`)
        self.score_options = sequencer.score_params(score, score_options)
        if score_data is not None and score_transform is not None:
            raise ValueError("give score_data= or score_transform=, not both")
        if score_transform is not None:
            if not hasattr(dataset, "transform"):
                raise ValueError(f"score_transform= needs a data set with a 'transform' attribute; "
                                 f"{type(dataset).__name__} has none (pass score_data= instead)")
            score_data = copy.copy(dataset)
            score_data.transform = score_transform
        self.dataset = dataset
        self.score_data = dataset if score_data is None else score_data
        self.num_samples = len(dataset)
        self.score_name, self.order = score, order
        self.generator = generator
        self.batch_size, self.output_key = batch_size, output_key
        self.targets = torch.as_tensor(targets, dtype=torch.long).cpu() if targets is not None else _dataset_targets(dataset)
        if self.targets is not None and len(self.targets) != self.num_samples:
            raise ValueError(f"targets has {len(self.targets)} labels but the data set has {self.num_samples} instances")
        self.phase: Phase | None = None
        self.pool: Tensor = torch.arange(self.num_samples)
        self.last_scores: Tensor | None = None
        self.epoch = 0

    # ------------------------------------------------------------------ the two steps of a phase start
    @property
    def needs_teacher(self) -> bool:
        """Whether the score reads the teacher's logits (``teacher_kl``)."""
        return bool(sequencer.SCORES.get(self.score_name).needs_teacher)

    def scores(self, model: nn.Module, teacher: nn.Module | None = None, device: torch.device | str | None = None,
               teacher_logits: Tensor | None = None) -> Tensor:
        """Score every instance of ``score_data`` with ``model`` as a frozen snapshot (eval mode, no
        gradients; its mode is restored): float32 [N] on the CPU, higher = easier
        (:func:`kdrepro.sequencer.score_instances`)."""
        scores, targets = sequencer.score_with_targets(
            model, self.score_data, self.score_name, teacher=teacher, batch_size=self.batch_size, device=device,
            teacher_logits=teacher_logits, output_key=self.output_key, score_options=self.score_options)
        if len(scores) != self.num_samples:
            raise ValueError(f"scoring gave {len(scores)} scores for a training set of {self.num_samples}: "
                             "score_data must hold the same instances in the same order")
        if self.targets is None:
            self.targets = targets
        return scores

    def select(self, phase: Phase, scores: Tensor | None) -> Tensor:
        """The pool of ``phase``: every index outside curriculum phases, else ``ceil(fraction * n_c)`` instances
        of every class ``c`` by ``scores`` (:func:`kdrepro.sequencer.select_pool`)."""
        if not phase.curriculum:
            return torch.arange(self.num_samples)
        if scores is None:
            raise ValueError(f"phase {phase.index} is a curriculum phase: select() needs the snapshot's scores")
        if self.targets is None:
            raise ValueError("the curriculum has no labels yet: pass targets= or score first")
        return sequencer.select_pool(scores, self.targets, phase.fraction, self.order, self.generator)

    # ------------------------------------------------------------------ driving it from a loop
    def phase_at(self, epoch: int) -> Phase:
        """The phase holding 0-based ``epoch``."""
        return sequencer.phase_at(self.schedule, epoch)

    def set_epoch(self, epoch: int, model: nn.Module | None = None, **score_kwargs) -> Tensor:
        """Enter 0-based ``epoch``: at the start of a new phase, score with ``model`` (needed for a curriculum
        phase) and select the pool. Returns the epoch's pool; samplers from :meth:`sampler` follow it.
        ``score_kwargs`` go to :meth:`scores` (``device``, ``teacher``, ``teacher_logits``)."""
        phase = self.phase_at(epoch)
        self.epoch = epoch
        if self.phase is None or phase.index != self.phase.index:
            scores = None
            if phase.curriculum:
                if model is None:
                    raise ValueError(f"epoch {epoch} starts curriculum phase {phase.index}: set_epoch needs the model "
                                     "to score the training set with")
                scores = self.scores(model, **score_kwargs)
            pool = self.select(phase, scores)
            self.pool = _same_on_every_rank(pool)
            self.phase, self.last_scores = phase, scores
        return self.pool

    def sampler(self, shuffle: bool = True, seed: int = 0) -> "CurriculumSampler":
        """A sampler over the current pool (it follows :meth:`set_epoch`)."""
        return CurriculumSampler(self, shuffle=shuffle, seed=seed)

    def distributed_sampler(self, num_replicas: int | None = None, rank: int | None = None, shuffle: bool = True,
                            seed: int = 0, drop_last: bool = False) -> "DistributedCurriculumSampler":
        """A sampler over this rank's shard of the current pool (:class:`DistributedCurriculumSampler`)."""
        return DistributedCurriculumSampler(self, num_replicas, rank, shuffle, seed, drop_last)


def _same_on_every_rank(pool: Tensor) -> Tensor:
    """Under ``torch.distributed`` with several ranks, rank 0's pool for every rank (the snapshots of replicas
    agree only up to floating-point noise; the pool must be one); otherwise ``pool``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return pool
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    shared = pool.to(device)
    dist.broadcast(shared, src=0)
    return shared.cpu()


class CurriculumSampler(Sampler[int]):
    """The current pool of a :class:`Curriculum`, shuffled once per epoch by a generator seeded with
    ``seed + epoch`` (the epoch of the curriculum's last :meth:`Curriculum.set_epoch`), or in pool order."""

    def __init__(self, curriculum: Curriculum, shuffle: bool = True, seed: int = 0) -> None:
        self.curriculum, self.shuffle, self.seed = curriculum, shuffle, seed

    def _order(self) -> Tensor:
        pool = self.curriculum.pool
        if not self.shuffle:
            return pool
        g = torch.Generator().manual_seed(self.seed + self.curriculum.epoch)
        return pool[torch.randperm(len(pool), generator=g)]

    def __iter__(self) -> Iterator[int]:
        return iter(self._order().tolist())

    def __len__(self) -> int:
        return len(self.curriculum.pool)


class DistributedCurriculumSampler(CurriculumSampler):
    """This rank's shard of the current pool: every rank shuffles the same pool with the same seed, pads it
    (repeating its start) to a multiple of the world size, or drops the remainder with ``drop_last``, and takes
    every ``num_replicas``-th index from ``rank`` on, as ``torch.utils.data.DistributedSampler`` does. The
    shards of one epoch are disjoint and together cover the pool. The pool is the same on every rank:
    :meth:`Curriculum.set_epoch` takes rank 0's."""

    def __init__(self, curriculum: Curriculum, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        import torch.distributed as dist

        super().__init__(curriculum, shuffle, seed)
        if num_replicas is None or rank is None:
            if not (dist.is_available() and dist.is_initialized()):
                raise ValueError("DistributedCurriculumSampler needs num_replicas= and rank=, or an initialised "
                                 "torch.distributed process group")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must lie in [0, num_replicas={num_replicas})")
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last

    def _sizes(self) -> tuple[int, int]:
        n = len(self.curriculum.pool)
        per_rank = n // self.num_replicas if self.drop_last else -(-n // self.num_replicas)
        return per_rank, per_rank * self.num_replicas

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        per_rank, total = self._sizes()
        if total > len(order) and len(order):
            order = torch.cat([order] * (-(-total // len(order))))
        return iter(order[:total][self.rank:total:self.num_replicas].tolist())

    def __len__(self) -> int:
        return self._sizes()[0]
