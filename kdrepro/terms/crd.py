"""Contrastive Representation Distillation (Tian, Krishnan, Isola, ICLR 2020), as RepDistiller implements it.

Each training image ``i`` has two memory slots, one per network: ``memory_s[i]`` and ``memory_t[i]`` hold a
running average of its student and teacher embeddings. A step embeds the pooled features of both networks
(a linear layer and L2 normalisation per side, RepDistiller's ``Embed``), scores the student embedding
``v_s`` of sample ``i`` against the *teacher* memory at ``i`` (the positive) and at ``m`` negatives, and the
teacher embedding ``v_t`` against the *student* memory at the same indices:

    P_s[i, j] = exp(<memory_t[c_ij], v_s[i]> / T) / Z_s,     P_t[i, j] = exp(<memory_s[c_ij], v_t[i]> / T) / Z_t,

with ``c_i0 = i`` and ``c_i1..c_im`` the negatives (training images of other classes than ``i``'s). Each side
is scored by RepDistiller's ``ContrastLoss`` (:func:`contrast_loss`) and the term is
``weight * (loss_s + loss_t)``. After the loss, both memories are updated at the batch's indices:
``memory[i] <- normalize(momentum * memory[i] + (1 - momentum) * v[i])``.
"""
from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import AfterValidator
from torch import Tensor, nn

from ..values import NonNegativeFloat, PositiveFloat, PositiveInt, Weight
from .base import LossTerm, StepInputs, TermContext, TermParams, register_term

__all__ = ["CRDParams", "CRD", "Embed", "contrast_loss", "pooled_dim"]

#: RepDistiller's ``eps`` in ``ContrastLoss``
EPS = 1e-7

#: added to the run's seed for this term's generator, so that its stream differs from the engine's
#: (which is seeded with the run's seed itself)
_SEED_SALT = 0x637264  # "crd"


def _below_one(v: float) -> float:
    if not v < 1:
        raise ValueError("must be in [0, 1)")
    return v


Momentum = Annotated[NonNegativeFloat, AfterValidator(_below_one)]
#: negatives per sample: at most 65,536 (four times RepDistiller's 16,384; the NCE's [batch, 1 + negatives]
#: terms and the sampled features grow with it)
MAX_NEGATIVES = 65_536


def _bounded_negatives(v: int) -> int:
    if v > MAX_NEGATIVES:
        raise ValueError(f"must be an integer in 1..{MAX_NEGATIVES}")
    return v


Negatives = Annotated[PositiveInt, AfterValidator(_bounded_negatives)]


class CRDParams(TermParams):
    weight: Weight = 0.8          # RepDistiller's scripts/run_cifar_distill.sh: --distill crd -b 0.8
    feat_dim: PositiveInt = 128             # --feat_dim: the embedding (memory) dimension
    negatives: Negatives = 16384          # --nce_k: negatives per sample
    temperature: PositiveFloat = 0.07       # --nce_t
    momentum: Momentum = 0.5                # --nce_m: the memory banks' update momentum, in [0, 1)


class Embed(nn.Module):
    """RepDistiller's ``Embed``: ``normalize(W x + b)``, a linear map to ``dim_out`` and L2 normalisation.

    ``x`` is ``[B, dim_in]`` (anything else is flattened per sample, as RepDistiller). The normalisation is
    ``F.normalize`` (the norm clamped at 1e-12), RepDistiller divides by the norm unclamped: the same except
    for a zero vector.
    """

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.linear.in_features:
            raise ValueError(f"Embed expects {self.linear.in_features} features per sample, got {x.shape[1]} "
                             f"(input shape {tuple(x.shape)})")
        return F.normalize(self.linear(x), dim=1)


def contrast_loss(probs: Tensor, num_samples: int) -> Tensor:
    """RepDistiller's ``ContrastLoss`` (the NCE objective, Eq. 18 of the paper), averaged over the batch.

    ``probs`` is ``[B, 1 + m]``: column 0 the positive's normalised score ``P_pos``, columns 1..m those of
    the ``m`` negatives ``P_neg``. With the uniform noise ``Pn = 1 / num_samples`` and ``eps = 1e-7``,

        log D1 = log(P_pos / (P_pos + m Pn + eps)),    log D0 = log(m Pn / (P_neg + m Pn + eps)),
        L = -(sum_i log D1[i] + sum_{i,j} log D0[i, j]) / B.
    """
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs must be 2-D [batch, 1 + negatives] with at least one negative, "
                         f"got shape {tuple(probs.shape)}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    m = probs.shape[1] - 1
    m_pn = m / num_samples
    p_pos, p_neg = probs[:, 0], probs[:, 1:]
    log_d1 = torch.log(p_pos / (p_pos + (m_pn + EPS)))
    log_d0 = torch.log(m_pn / (p_neg + (m_pn + EPS)))
    return -(log_d1.sum() + log_d0.sum()) / probs.shape[0]


def pooled_dim(model: nn.Module, role: str = "model") -> int:
    """The width of ``model``'s pooled feature vector, from one forward pass of a dummy input.

    The input is ``zeros(1, model.in_channels, 32, 32)`` (3 channels if the model has no ``in_channels``) on
    the device of the model's parameters, run with ``return_features=True`` under ``no_grad`` and in eval mode
    (so BatchNorm statistics are untouched); every submodule's training flag is restored afterwards. The
    kdrepro networks pool adaptively, so the width does not depend on the 32x32 size.
    """
    params = next(iter(model.parameters()), None)
    device = params.device if params is not None else torch.device("cpu")
    x = torch.zeros(1, getattr(model, "in_channels", 3), 32, 32, device=device)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            out = model(x, return_features=True)
    finally:
        for m, training in modes:
            m.training = training
    try:
        pooled = out[1]["pooled"]
    except (TypeError, IndexError, KeyError):
        raise ValueError(f"crd: the {role} ({type(model).__name__}) must return (logits, {{'pooled': ...}}) "
                         "with return_features=True") from None
    if pooled.dim() != 2:
        raise ValueError(f"crd: the {role}'s pooled features must be 2-D [batch, dim], got {tuple(pooled.shape)}")
    return int(pooled.shape[1])


def _generator(device: torch.device, seed: int) -> torch.Generator:
    try:
        g = torch.Generator(device=device)
    except RuntimeError:  # a device without its own generators: draw on the CPU
        g = torch.Generator()
    return g.manual_seed((seed + _SEED_SALT) % 2**64)


@register_term
class CRD(LossTerm):
    """CRD (Tian et al., ICLR 2020) after RepDistiller's ``CRDLoss``, ``ContrastMemory`` and ``ContrastLoss``;
    see the module docstring for the loss.

    The term owns

    * ``embed_s``, ``embed_t``: the embedding heads (:class:`Embed`), trained with the student (RepDistiller's
      ``trainable_list``); their input widths are the networks' pooled-feature widths, read once from a
      dummy forward pass of ``ctx.student`` and ``ctx.teacher`` (:func:`pooled_dim`);
    * ``memory_s``, ``memory_t``: the memory banks ``[num_samples, feat_dim]``, initialised uniform in
      ``[-stdv, stdv]`` with ``stdv = 1 / sqrt(feat_dim / 3)`` as RepDistiller;
    * ``z_s``, ``z_t``: the normalisation constants, -1 until the first step sets each to
      ``mean(exp(score / T)) * num_samples`` over that batch's positive and negative scores, then kept;
    * a ``torch.Generator`` for the memory's initialisation and the negatives, whose state travels in the
      ``state_dict`` as ``_extra_state`` (:meth:`get_extra_state`).

    All are saved and restored with the run, so a resumed run continues exactly.

    Deviations from RepDistiller:

    * Negatives are drawn here, per step, from the term's own generator (seeded with ``ctx.seed`` plus a
      constant, so that its stream is not the engine's; on ``ctx.device``, so a CUDA run draws on the GPU
      and its checkpoint resumes on a GPU only), not in the data loader's workers with NumPy's global RNG.
      The rule is RepDistiller's ``mode='exact'``: the positive is the sample itself, and its ``negatives``
      indices are drawn uniformly from the training images of the other classes, without replacement, or
      with replacement when there are fewer such images than ``negatives``. Without replacement is
      implemented as the ``negatives`` smallest of one uniform key per image (own class excluded), a
      uniformly random subset.
    * The memory banks are drawn from the same generator, not from torch's global RNG.
    * Scores are computed as ``memory @ v.T`` for the whole bank, then gathered at the sampled indices
      (RepDistiller gathers ``[B, 1 + m, feat_dim]`` rows first, then multiplies): the same dot products,
      with far less memory when ``negatives`` is large.
    * The term computes in float32 with autocast turned off (``exp(1 / 0.07)`` and the NCE's ratios are
      not safe in bfloat16); the teacher's pooled features are detached.
    * The memory update runs after the loss is computed (RepDistiller updates inside the memory's forward,
      also without gradient: the loss is the same).

    Cost: every step draws one uniform key per training image per sample and scores the whole bank, and the
    default 16384 negatives per sample (RepDistiller's CIFAR setting) make the NCE's ``[B, 16385]`` terms; on
    a CPU this is expensive, and a profile on tiny data may set fewer ``negatives``. The memory update writes
    new banks (a copy of each per step) instead of updating them in place, since the backward pass of the
    scores needs the banks as they were: hold the term, not a reference to ``memory_s``/``memory_t``.
    """

    name = "crd"
    display = "CRD"
    Params = CRDParams
    needs = frozenset({"student_features", "teacher_features"})

    @classmethod
    def check(cls, params: CRDParams, student_model: str, teacher_model: str | None) -> None:
        if teacher_model is None:
            raise ValueError("losses.crd needs a teacher (its features are CRD's targets)")

    def __init__(self, params: CRDParams, ctx: TermContext):
        super().__init__(params, ctx)
        if ctx.teacher is None:
            raise ValueError("losses.crd needs a teacher (its features are CRD's targets)")
        if ctx.targets is None:
            raise ValueError("losses.crd needs the labels of every training image (TermContext.targets) "
                             "to draw negatives from other classes")
        n = ctx.num_samples
        targets = torch.as_tensor(ctx.targets).detach().to("cpu", torch.long)
        if targets.dim() != 1 or targets.numel() != n:
            raise ValueError(f"crd: TermContext.targets must be 1-D with num_samples={n} labels, "
                             f"got shape {tuple(targets.shape)}")
        if n == 0 or targets.min() < 0 or targets.max() >= ctx.num_classes:
            raise ValueError(f"crd: labels must lie in [0, num_classes={ctx.num_classes})")
        counts = torch.bincount(targets, minlength=ctx.num_classes)
        if int(counts.max()) == n:
            raise ValueError("crd: every training image has the same class, so there are no negatives to draw")

        device = ctx.device
        d = params.feat_dim
        self.num_samples = n
        self.embed_s = Embed(pooled_dim(ctx.student, "student"), d).to(device)
        self.embed_t = Embed(pooled_dim(ctx.teacher, "teacher"), d).to(device)

        self._gen = _generator(device, ctx.seed)
        gdev = self._gen.device
        stdv = 1.0 / math.sqrt(d / 3)
        for bank in ("memory_s", "memory_t"):  # RepDistiller's memory_v1 (student), then memory_v2 (teacher)
            init = torch.rand(n, d, generator=self._gen, device=gdev).mul_(2 * stdv).sub_(stdv)
            self.register_buffer(bank, init.to(device))
        self.register_buffer("z_s", torch.tensor(-1.0, device=device))
        self.register_buffer("z_t", torch.tensor(-1.0, device=device))

        # derived from ctx.targets, rebuilt with the term: not saved
        order = torch.argsort(targets, stable=True)
        self.register_buffer("sample_targets", targets.to(device), persistent=False)
        self.register_buffer("class_order", order.to(device), persistent=False)
        self.register_buffer("class_count", counts.to(device), persistent=False)
        self.register_buffer("class_start", (torch.cumsum(counts, 0) - counts).to(device), persistent=False)

    # ------------------------------------------------------------------ the generator's state
    def get_extra_state(self) -> Tensor:
        """The negatives' generator state (a uint8 tensor), stored in ``state_dict()`` as ``_extra_state``."""
        return self._gen.get_state()

    def set_extra_state(self, state) -> None:
        if not isinstance(state, Tensor) or state.dtype != torch.uint8:
            raise ValueError(f"crd: the saved generator state must be a uint8 tensor, got {type(state).__name__}")
        try:
            self._gen.set_state(state.detach().cpu())
        except RuntimeError as err:
            raise ValueError(f"crd: cannot restore the negatives' generator on {self._gen.device} from a state of "
                             f"{state.numel()} bytes (was it saved on another kind of device?): {err}") from None

    # ------------------------------------------------------------------ negatives
    def sample_negatives(self, labels: Tensor) -> Tensor:
        """``[B, negatives]`` training-image indices, each row drawn from the images of other classes than
        ``labels[i]`` (RepDistiller's ``mode='exact'``: without replacement if there are at least
        ``negatives`` such images, else with replacement). Advances the term's generator."""
        k = self.params.negatives
        g = self._gen
        dev = g.device
        labels = labels.to(dev, torch.long)
        all_targets = self.sample_targets.to(dev)
        count = self.class_count.to(dev)[labels]
        n_other = self.num_samples - count
        out = torch.empty(labels.shape[0], k, dtype=torch.long, device=dev)

        subset = n_other >= k
        rows = subset.nonzero().squeeze(1)
        if rows.numel():
            keys = torch.rand(rows.numel(), self.num_samples, generator=g, device=dev)
            keys.masked_fill_(all_targets[None, :] == labels[rows, None], 2.0)  # own class: never among the k smallest
            out[rows] = keys.topk(k, dim=1, largest=False, sorted=False).indices

        rows = (~subset).nonzero().squeeze(1)
        if rows.numel():
            n_r = n_other[rows, None]
            u = torch.rand(rows.numel(), k, generator=g, device=dev, dtype=torch.float64)
            u = torch.minimum((u * n_r).long(), n_r - 1)       # uniform in [0, n_other)
            y = labels[rows, None]
            start, cnt = self.class_start.to(dev)[y], count[rows, None]
            pos = u + cnt * (u >= start)                       # skip the own class's block of class_order
            out[rows] = self.class_order.to(dev)[pos]
        return out

    # ------------------------------------------------------------------ the loss
    def _scores(self, memory: Tensor, v: Tensor, contrast: Tensor) -> Tensor:
        """``exp(<memory[contrast[i, j]], v[i]> / T)``, ``[B, 1 + m]``; the memory is a constant."""
        dots = (memory @ v.t()).t()                            # [B, num_samples]
        return torch.exp(dots.gather(1, contrast) / self.params.temperature)

    def forward(self, step: StepInputs):
        p = self.params
        f_s, f_t = step.student_features["pooled"], step.teacher_features["pooled"]
        idx = step.indices
        for name, f in (("student", f_s), ("teacher", f_t)):
            if f.dim() != 2 or f.shape[0] != idx.shape[0]:
                raise ValueError(f"crd: the {name}'s pooled features must be [batch={idx.shape[0]}, dim], "
                                 f"got shape {tuple(f.shape)}")
        if idx.dim() != 1:
            raise ValueError(f"crd: indices must be 1-D, got shape {tuple(idx.shape)}")
        device = self.memory_s.device
        idx = idx.to(device, torch.long)
        with torch.autocast(device_type=device.type, enabled=False):
            v_s = self.embed_s(f_s.float())
            v_t = self.embed_t(f_t.detach().float())
            negatives = self.sample_negatives(self.sample_targets[idx]).to(device)
            contrast = torch.cat([idx[:, None], negatives], dim=1)   # column 0: the positive

            out_s = self._scores(self.memory_t, v_s, contrast)      # student anchor, teacher memory
            out_t = self._scores(self.memory_s, v_t, contrast)      # teacher anchor, student memory
            n = self.num_samples
            with torch.no_grad():  # set once, on the first step (no host sync: a -1 sentinel and torch.where)
                z_s = torch.where(self.z_s < 0, out_s.mean() * n, self.z_s)
                z_t = torch.where(self.z_t < 0, out_t.mean() * n, self.z_t)
                self.z_s.copy_(z_s)
                self.z_t.copy_(z_t)
            loss = contrast_loss(out_s / z_s, n) + contrast_loss(out_t / z_t, n)

            with torch.no_grad():
                # out of place: autograd keeps this step's banks for the backward pass of the scores
                for bank, v in (("memory_s", v_s), ("memory_t", v_t)):
                    memory = getattr(self, bank)
                    mixed = memory[idx].mul_(p.momentum).add_(v.detach(), alpha=1 - p.momentum)
                    setattr(self, bank, memory.index_copy(0, idx, F.normalize(mixed, dim=1)))
        return {"crd": p.weight * loss}
