"""One training loop for every run: teacher or vanilla student (CE), a student distilled by any
combination of registered loss terms (:mod:`kdrepro.terms`: KD, FitNets, AT, DKD, CRD, ...), and SLKD
student (KD + the logit-MSE term + the snapshot sequencer).

The loop follows the authors' ``train_slkd.py`` (github.com/HaoranZhao1988/kd) where it defines the
method, and airbench where it defines speed:

* data stay on the device as uint8 tensors; each batch is cropped, flipped and normalised there
  (:class:`kdrepro.augment.CropFlip`); shuffling and augmentation draw from one seeded CPU generator, so a
  seed gives the same batches on every device;
* the teacher's logits come from the exact per-view cache (:mod:`kdrepro.cache`) when the active terms
  need only logits, from a live forward pass otherwise (a term that needs the teacher's features);
* at the start of each curriculum phase a frozen copy of the student (the snapshot) scores every
  un-augmented training image once, and the phase trains on the easiest fraction of each class
  (:mod:`kdrepro.sequencer`); the authors re-sort every epoch with the same snapshot, which selects the
  same pool;
* the loss is the sum of every active term's weighted parts (``losses.<term>.weight``; a term with weight 0
  is inactive), in the terms' registration order; a term marked ``curriculum_only`` (SLKD's logit MSE)
  applies in curriculum phases only, and the engine computes only what the active terms need;
* after every epoch the state (model, optimiser, scheduler, RNG states, phase, pool, metrics) is written
  atomically to ``checkpoints/latest.pt`` and the metrics to ``metrics.jsonl``, so a run killed at any
  moment resumes from its last finished epoch and ends with the same numbers (on CPU, fixed seed).
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import __version__, sequencer
from .augment import CropFlip
from .callbacks import ProgressLines, metrics_writers_for
from .cache import TeacherLogitCache, _quiet, cache_group, group_marker, mark_ready, state_dict_hash
from .config import ConfigError, RunConfig
from .resolution import ResolvedRun, resolve
from .curriculum import Curriculum
from .data import ImageDataset, data_fingerprint, load_dataset
from .models import create_model
from .initstage import StageDiverged, run_init_stages
from .rundir import RunDir, RunFileError, remove_stale_temporaries
from .terms import TERMS, StepInputs, TermContext

EVAL_BATCH = 1000


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupt, or written for another model or class count."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stops before saving the epoch.

    :meth:`Trainer.train_epoch` raises it; :meth:`Trainer.fit` records the run as finished with the flag
    ``diverged`` (:func:`diverged_summary`) and returns that summary. ``epoch``: the epoch (1-based) whose
    loss was not finite, 0 for an initialisation stage."""

    def __init__(self, message: str, epoch: int | None = None, where: str | None = None):
        super().__init__(message)
        self.epoch = epoch
        self.where = where or (f"epoch {epoch}" if epoch else "the initialisation stage")


def batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split ``order`` into batches of ``batch_size``; a last batch of fewer than ``batch_size // 8`` images
    is merged into the one before it.

    The authors' DataLoader keeps every last batch (``drop_last=False``), and their CIFAR pools never leave
    fewer than 16 of 128. On small pools a last batch of one or two images gives BatchNorm running
    statistics from a handful of values, which wrecks the next evaluation (seen on digits: test top-1
    fell from ~90 % to ~15 % in the phase whose pool left 2 images). Merging keeps every image and only
    touches remainders that small.
    """
    chunks = list(torch.split(order, batch_size))
    if len(chunks) > 1 and len(chunks[-1]) < batch_size // 8:
        chunks[-2:] = [torch.cat(chunks[-2:])]
    return chunks


def planned_steps(cfg: ResolvedRun | RunConfig, targets: torch.Tensor) -> int:
    """The optimizer steps a run will take, from its schedule, its batch size and the class counts
    ``targets`` of its training set: each phase's pool holds ``ceil(fraction * n_c)`` images of every class
    (:func:`kdrepro.sequencer.select_pool`) and is cut into :func:`batches` every epoch."""
    cfg = resolve(cfg)
    counts = torch.bincount(targets.long()).tolist()
    total = 0
    for phase in cfg.schedule:
        n = sum(sequencer._pool_size(phase.fraction, c) for c in counts if c) if phase.curriculum else len(targets)
        steps = -(-n // cfg.batch_size)
        remainder = n % cfg.batch_size
        if steps > 1 and 0 < remainder < cfg.batch_size // 8:
            steps -= 1
        total += steps * (phase.end - phase.start)
    return total


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} but CUDA is not available here; use device=cpu or auto")
    return torch.device(name)


def float32_on_cuda() -> None:
    """Make CUDA convolutions and matrix products compute in float32, as on the CPU.

    PyTorch lets cuDNN convolutions use TF32 by default (10-bit mantissa on Ampere and later GPUs), so a
    "float32" run on a GPU would silently compute its convolutions at lower precision than the same run on
    a CPU. A run's arithmetic is chosen by its config (``bf16``), not by the device it lands on, so the
    engine turns TF32 off for the process before a CUDA run or a CUDA teacher-logit cache build; the
    summary's ``environment`` records the setting (``tf32``)."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def load_checkpoint(path: Path, device: torch.device) -> dict:
    """``torch.load(weights_only=True)`` with an error that says which file and what to do."""
    try:
        return RunDir(Path(path).parent).load(path, map_location=device)
    except RunFileError as err:
        raise CheckpointError(str(err)) from None


def autocast_context(device: torch.device, bf16: bool):
    """bf16 autocast on the device (CUDA; or a CPU, where it needs AVX-512 BF16 or AMX to be fast), or a
    no-op context."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def load_state(module: nn.Module, state: dict, path: Path, what: str) -> None:
    """``load_state_dict`` with a readable message for another architecture or class count."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        detail = "; ".join(filter(None, [
            f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}" if missing else "",
            f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}" if unexpected else "",
            f"shape mismatches {shapes[:3]}{'...' if len(shapes) > 3 else ''}" if shapes else ""]))
        raise CheckpointError(f"{path} does not fit the {what} ({type(module).__name__}): {detail}. "
                              "Was it written for another architecture or number of classes?")
    module.load_state_dict(state)


@torch.inference_mode()
def evaluate(model: nn.Module, dataset: ImageDataset, images: torch.Tensor, targets: torch.Tensor,
             channels_last: bool = False) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (%) on un-augmented images."""
    was_training = model.training
    model.eval()
    correct = torch.zeros(2, dtype=torch.long, device=images.device)  # read once, at the end
    k = min(5, dataset.num_classes)
    for start in range(0, len(images), EVAL_BATCH):
        x = dataset.normalize(images[start:start + EVAL_BATCH])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = targets[start:start + EVAL_BATCH]
        top = model(x).topk(k, dim=1).indices
        correct[0] += (top[:, 0] == y).sum()
        correct[1] += (top == y[:, None]).any(dim=1).sum()
    model.train(was_training)
    correct1, correct5 = correct.tolist()
    return 100.0 * correct1 / len(images), 100.0 * correct5 / len(images)


def environment(device: torch.device) -> dict:
    import torchvision

    env = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
           "kdrepro": __version__, "platform": platform.platform(), "device": str(device),
           "threads": torch.get_num_threads()}
    env["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    if device.type == "cpu":
        env["cpu_model"] = cpu_model()
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["tf32"] = bool(torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)
    return env


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``; "cpu" when neither
    says). Recorded in every summary: CPU training is bit-exact on one machine but not across CPU models
    (results/superseded/cpu300-teacher-a/README.md)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (empty where there is none)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def cpu_model() -> str:
    """The CPU's family and model numbers and its widest vector extension, e.g. ``"family 25 model 1 avx2"``
    (``"unknown"`` where ``/proc/cpuinfo`` does not say). Virtual machines often report only a generic model
    name ("AMD EPYC"), and two CPUs of one name can round differently (an AVX-512 and an AVX2 machine run
    other kernels), so a CPU run's summary records this beside :func:`cpu_name`."""
    info = _cpuinfo()
    if "cpu family" not in info or "model" not in info:
        return "unknown"
    flags = set(info.get("flags", "").split())
    isa = next((f for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags), "none")
    return f"family {info['cpu family']} model {info['model']} {isa}"


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run a block with ``n`` torch CPU threads (None: unchanged), then restore the number before."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher to build once the data set (and so its class count) is loaded: an architecture, its
    options and a weights file (a teacher run's ``weights.pt`` or a published checkpoint)."""

    model: str
    weights: str
    options: dict = field(default_factory=dict)

    def build(self, num_classes: int, in_channels: int) -> nn.Module:
        return create_model(self.model, num_classes, in_channels=in_channels, weights=self.weights, **self.options)


class DataChangedError(RuntimeError):
    """The data a run would load are not the data its config was made for."""


class Trainer:
    """Trains one run into ``run_dir``; :meth:`fit` resumes from ``checkpoints/latest.pt`` when present."""

    def __init__(self, cfg: ResolvedRun | RunConfig, run_dir: str | os.PathLike | RunDir, teacher: nn.Module | TeacherSpec | None = None,
                 cache_dir: str | os.PathLike | None = None, log: Callable[[str], None] | None = None,
                 callbacks: list | None = None):
        self.cfg = resolve(cfg)
        self.run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.run_dir = self.run.path
        self.cache_dir = Path(cache_dir) if cache_dir else self.run_dir.parent.parent / "cache"
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.device = resolve_device(self.cfg.device)
        if self.device.type == "cuda":
            float32_on_cuda()
        if self.cfg.num_threads:
            torch.set_num_threads(self.cfg.num_threads)
        cfg = self.cfg
        self.train_set = load_dataset(cfg.dataset, root=cfg.data_root, train=True, **cfg.dataset_options)
        self.test_set = load_dataset(cfg.dataset, root=cfg.data_root, train=False, **cfg.dataset_options)
        found = data_fingerprint(cfg.dataset, root=cfg.data_root, **cfg.dataset_options)
        if found != cfg.data_fingerprint:
            raise DataChangedError(
                f"the {cfg.dataset!r} data found now (fingerprint {found}) are not the data this run was configured "
                f"for ({cfg.data_fingerprint}); a run's results belong to its data. Resolve the config again "
                "(a new run id) or restore the original files.")
        self.images = self.train_set.images.to(self.device)
        self.targets = self.train_set.targets.to(self.device)
        self.test_images = self.test_set.images.to(self.device)
        self.test_targets = self.test_set.targets.to(self.device)
        side = min(self.train_set.image_shape[1:])
        if cfg.augment and cfg.crop_padding >= side:
            raise ConfigError(f"crop_padding={cfg.crop_padding}: must be smaller than the {cfg.dataset} images' side "
                              f"({side} pixels; reflect padding needs it), e.g. crop_padding={max(side // 8, 1)}")
        self.augment = CropFlip(padding=cfg.crop_padding if cfg.augment else 0, hflip=cfg.hflip and cfg.augment)
        self.schedule = list(cfg.schedule)
        self.curriculum = cfg.curriculum

        channels = self.train_set.image_shape[0]
        if isinstance(teacher, TeacherSpec):  # built before seeding: its construction must not move the RNG
            teacher = teacher.build(self.train_set.num_classes, channels)
        torch.manual_seed(cfg.seed)
        self.student = create_model(cfg.model, self.train_set.num_classes, in_channels=channels,
                                    **cfg.model_options).to(self.device)
        self.teacher = teacher.to(self.device).eval() if teacher is not None else None
        if self.teacher is not None:
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        req = cfg.requirements
        self.need_features = "teacher_features" in req            # live teacher forward with features
        self.need_student_features = "student_features" in req
        self.need_teacher = cfg.needs_teacher
        self.need_step_teacher = bool(req & {"teacher_logits", "teacher_features"})
        self.need_snapshot = "snapshot" in req
        if self.need_teacher and self.teacher is None:
            raise ValueError(f"run {cfg.method!r} needs a teacher model")
        # the loss terms, in summation order; built right after the student, so that the global RNG gives
        # every trainable extra (e.g. the FitNets regressor) the same initialisation on every run
        ctx = TermContext(num_classes=self.train_set.num_classes, num_samples=len(self.train_set),
                          student=self.student, teacher=self.teacher, device=self.device, seed=cfg.seed,
                          targets=self.train_set.targets, image_shape=tuple(self.train_set.image_shape))
        self.terms = nn.ModuleDict({name: TERMS.get(name)(params, ctx) for name, params in cfg.terms.items()})
        self.terms.to(self.device)
        params = list(self.student.parameters()) + list(self.terms.parameters())
        if cfg.channels_last:
            self.student = self.student.to(memory_format=torch.channels_last)
            if self.teacher is not None:
                self.teacher = self.teacher.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                         weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=list(cfg.milestones),
                                                              gamma=cfg.gamma)
        self.forward = torch.compile(self.student) if cfg.compile else self.student
        self.autocast = autocast_context(self.device, cfg.bf16)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        #: the phases' scoring and pools, through the same object a user's own loop uses
        cur = self.curriculum
        self.sequence = Curriculum(self.train_set, schedule=self.schedule, generator=self.generator,
                                   score=cur.score if cur else "max_logit", order=cur.order if cur else "easy_first",
                                   score_options=cfg.score_options)
        self.cache: TeacherLogitCache | None = None
        self.teacher_source = "none"
        self.snapshot: nn.Module | None = None
        self._metrics: list[dict] = []
        #: called before every epoch (the run store checks that it still holds the run's lock)
        self.epoch_hook: Callable[[], None] | None = None
        #: told of phase starts, finished epochs and the end (:mod:`kdrepro.callbacks`); fit() adds the config's
        #: metrics writers and, without a progress bar, :class:`kdrepro.callbacks.ProgressLines`
        self.callbacks: list = list(callbacks or [])

    @property
    def metrics(self) -> list[dict]:
        """The finished epochs' metrics rows so far."""
        return self._metrics

    def _notify(self, event: str, *args) -> None:
        for callback in self.callbacks:
            method = getattr(callback, event, None)
            if method is not None:
                method(self, *args)

    # ------------------------------------------------------------------ teacher
    def prepare_teacher(self) -> None:
        if not self.need_teacher:
            return
        if self.need_features:
            self.teacher_source = "live"
            self.log("teacher: live forward passes (a loss term needs the teacher's feature maps, which the "
                     "logit cache does not hold)")
            return
        if not self.cfg.teacher_cache:
            self.teacher_source = "live"
            self.log("teacher: live forward passes (teacher_cache=false)")
            return
        with torch_threads(self.cfg.cache_threads):  # back to num_threads for training
            self.cache, hit = TeacherLogitCache.load_or_build(
                self.teacher, self.train_set, self.augment, self.device, self.cache_dir,
                progress=self.cfg.progress, channels_last=self.cfg.channels_last, dtype=self.cfg.teacher_cache_dtype)
        self.teacher_source = "cache"
        if self.cfg.has_teacher_run:  # the group's other runs may start now (kdrepro.executors)
            mark_ready(group_marker(self.cache_dir, cache_group(self.cfg)), self.cache.path)
        self.log(f"teacher: logit cache {'hit' if hit else 'built'} "
                 f"({len(self.train_set)} images x {self.augment.num_views} views)")

    def _teacher_logits(self, x: torch.Tensor, idx: torch.Tensor, views: torch.Tensor):
        """Teacher logits (and features when needed) for a batch."""
        if self.cache is not None:
            return self.cache.lookup(idx, views), None
        with torch.no_grad():
            if self.need_features:
                return self.teacher(x, return_features=True)
            return self.teacher(x), None

    # ------------------------------------------------------------------ curriculum
    def start_phase(self, phase: sequencer.Phase) -> torch.Tensor:
        """Snapshot the student, score every training image, and select the phase's pool."""
        all_idx = torch.arange(len(self.train_set))
        if not phase.curriculum:
            return all_idx
        cur = self.curriculum
        snapshot = copy.deepcopy(self.student).eval()
        for p in snapshot.parameters():
            p.requires_grad_(False)
        self.run.save(snapshot.state_dict(), self.run.snapshot(phase.index))
        teacher_logits = None
        if sequencer.SCORES.get(cur.score).needs_teacher and self.cache is not None:
            teacher_logits = self.cache.lookup(all_idx.to(self.device),
                                               torch.full_like(all_idx, self.augment.identity_view).to(self.device))
        scores = self.sequence.scores(snapshot, teacher=self.teacher, device=self.device, teacher_logits=teacher_logits)
        pool = self.sequence.select(phase, scores)
        top1, top5 = evaluate(snapshot, self.test_set, self.test_images, self.test_targets, self.cfg.channels_last)
        self.run.save({"phase": phase.index, "start_epoch": phase.start, "end_epoch": phase.end,
                       "fraction": phase.fraction, "score": cur.score, "order": cur.order,
                       "scores": scores.float().cpu(), "targets": self.train_set.targets.cpu(),
                       "pool": pool.cpu(), "snapshot_test_top1": top1, "snapshot_test_top5": top5},
                      self.run.curriculum_record(phase.index))
        self.snapshot = snapshot if self.need_snapshot else None
        self.log(f"phase {phase.index}: epochs {phase.start + 1}-{phase.end}, {len(pool)}/{len(self.train_set)} "
                 f"images ({phase.fraction:.0%} of each class, {cur.order}, {cur.score}); snapshot top-1 {top1:.2f}")
        return pool

    # ------------------------------------------------------------------ one epoch
    def epoch_plan(self, pool: torch.Tensor, phase: sequencer.Phase) -> tuple[list[torch.Tensor], torch.Tensor, bool]:
        """The epoch's batches of indices and every image's view, drawn once at the epoch start from the
        run's CPU generator (a seed gives the same batches on every device): the shuffle, then one view
        per image in batch order (the same numbers as drawing them batch by batch)."""
        order = pool[torch.randperm(len(pool), generator=self.generator)]
        augment_now = self.cfg.augment and not (self.curriculum is not None and
                                                self.curriculum.quirk_no_warmup_augment and not phase.curriculum)
        if augment_now:
            views = self.augment.sample_views(len(order), generator=self.generator)
        else:
            views = torch.full((len(order),), self.augment.identity_view, dtype=torch.long)
        return batches(order, self.cfg.batch_size), views, augment_now

    def train_epoch(self, pool: torch.Tensor, phase: sequencer.Phase, epoch: int | None = None) -> dict:
        """One epoch over ``pool``. Loss parts and correct counts accumulate on the device (float64) and are
        read once at the end: nothing in a step makes the CPU wait for the device."""
        cfg = self.cfg
        epoch = len(self._metrics) + 1 if epoch is None else epoch
        self.student.train()
        chunks, views_all, _ = self.epoch_plan(pool, phase)
        order_dev = torch.cat(chunks).to(self.device, non_blocking=True)
        views_dev = views_all.to(self.device, non_blocking=True)
        sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = steps = start = 0
        for chunk in chunks:
            n = len(chunk)
            idx, views = order_dev[start:start + n], views_dev[start:start + n]
            start += n
            x = self.train_set.normalize(self.augment.apply(self.images[idx], views, check=False))
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = self.targets[idx]
            t_logits = t_feats = None
            if self.need_step_teacher:
                t_logits, t_feats = self._teacher_logits(x, idx, views)
            with self.autocast:
                if self.need_student_features:
                    s_logits, s_feats = self.forward(x, return_features=True)
                else:
                    s_logits, s_feats = self.forward(x), None
                step = StepInputs(student_logits=s_logits, targets=y, indices=idx, images=x, epoch=epoch,
                                  curriculum=phase.curriculum, student_features=s_feats, teacher_logits=t_logits,
                                  teacher_features=t_feats, snapshot=self.snapshot)
                parts = {}
                for term in self.terms.values():
                    if term.applies(phase.curriculum):
                        parts.update(term(step))
                loss = sum(parts.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            for k, v in parts.items():
                sums[k] = sums[k] + v.detach().double() * n if k in sums else v.detach().double() * n
            sums["loss"] = sums["loss"] + loss.detach().double() * n if "loss" in sums else loss.detach().double() * n
            correct += (s_logits.detach().argmax(1) == y).sum()
            seen += n
            steps += 1
        out = {f"train_{k}": v.item() / seen for k, v in sums.items()}
        if not all(math.isfinite(v) for v in out.values()):
            bad = ", ".join(f"{k} {v}" for k, v in out.items() if not math.isfinite(v))
            raise TrainingDiverged(f"training diverged in epoch {epoch} of {self.run_dir.name} "
                                   f"(non-finite loss: {bad}); nothing of this epoch was saved. Lower lr or a "
                                   "loss weight, or turn off the option that caused it.", epoch=epoch)
        out.update(train_top1=100.0 * correct.item() / seen, steps=steps, images=seen)
        return out

    # ------------------------------------------------------------------ state
    def _state(self, epoch: int, phase_index: int, pool: torch.Tensor, metrics: list, counters: dict) -> dict:
        state = {"epoch": epoch, "phase": phase_index, "pool": pool.cpu(), "metrics": metrics, "counters": counters,
                 "model": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng_torch": torch.get_rng_state(),
                 "rng_generator": self.generator.get_state()}
        terms = {name: term.state_dict() for name, term in self.terms.items() if term.state_dict()}
        if terms:
            state["terms"] = terms
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _restore(self, path: Path) -> dict:
        try:
            state = self.run.load(path, map_location=self.device)
        except RunFileError as err:
            raise CheckpointError(str(err)) from None
        missing = [k for k in ("epoch", "phase", "pool", "metrics", "counters", "model", "optimizer", "scheduler",
                               "rng_torch", "rng_generator") if not isinstance(state, dict) or k not in state]
        if missing:
            raise CheckpointError(f"{path} is not a kdrepro training checkpoint (it lacks {', '.join(missing)}); "
                                  "delete it to restart the run from scratch")
        load_state(self.student, state["model"], path, f"model {self.cfg.model!r}")
        saved_terms = dict(state.get("terms", {}))
        if "hint" in state and "fitnet" in self.terms:  # checkpoints of kdrepro 0.1
            saved_terms["fitnet"] = {f"hint.{k}": v for k, v in state["hint"].items()}
        for name, term in self.terms.items():
            if term.state_dict():
                if name not in saved_terms:
                    raise CheckpointError(f"{path} holds no state for the loss term {name!r}; delete it to restart")
                load_state(term, saved_terms[name], path, f"loss term {name!r}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_torch"].cpu())
        self.generator.set_state(state["rng_generator"].cpu())
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), self.device)
        phase = self.schedule[state["phase"]]
        if phase.curriculum and self.need_snapshot:
            snap_path = self.run.snapshot(phase.index)
            self.snapshot = copy.deepcopy(self.student).eval()
            try:
                snap = self.run.load(snap_path, map_location=self.device)
            except RunFileError as err:
                raise CheckpointError(str(err)) from None
            load_state(self.snapshot, snap, snap_path, "snapshot")
        return state

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.run_dir)
        latest = self.run.latest
        epoch, metrics = 0, []
        self._metrics = metrics
        counters = {"iterations": 0, "images_seen": 0, "train_seconds": 0.0, "total_seconds": 0.0}
        pool, phase_index = None, -1
        self.prepare_teacher()
        try:
            init_record = run_init_stages(self)  # AB, FT, FSP: before the first epoch, resumable
        except StageDiverged as err:
            return self._record_divergence(TrainingDiverged(str(err), epoch=0, where=err.where), metrics,
                                           counters, None)
        if latest.exists():
            state = self._restore(latest)
            epoch, metrics, counters = state["epoch"], state["metrics"], state["counters"]
            self._metrics = metrics
            pool, phase_index = state["pool"], state["phase"]
            self.log(f"resuming {self.run_dir.name} after epoch {epoch}/{cfg.epochs}")
        bar = tqdm(total=cfg.epochs, initial=epoch, desc=self.run_dir.name, unit="ep", disable=_quiet(cfg.progress))
        self.callbacks += metrics_writers_for(cfg.metrics_writers, self.run_dir, self.log)
        if cfg.progress is None and bar.disable:  # no bar: the output is not a terminal
            self.callbacks.append(ProgressLines(cfg.epochs, cfg.log_every, self.log, self.run_dir.name))
        while epoch < cfg.epochs:
            if self.epoch_hook is not None:
                self.epoch_hook()
            t0 = time.perf_counter()
            phase = sequencer.phase_at(self.schedule, epoch)
            if phase.index != phase_index:
                pool, phase_index = self.start_phase(phase), phase.index
                self._notify("on_phase", phase, len(pool))
            lr = self.optimizer.param_groups[0]["lr"]
            t_train = time.perf_counter()
            try:
                row = self.train_epoch(pool, phase, epoch + 1)
            except TrainingDiverged as err:
                bar.close()
                return self._record_divergence(err, metrics, counters, init_record)
            train_seconds = time.perf_counter() - t_train
            self.scheduler.step()
            top1, top5 = evaluate(self.student, self.test_set, self.test_images, self.test_targets, cfg.channels_last)
            epoch += 1
            counters["iterations"] += row.pop("steps")
            counters["images_seen"] += row.pop("images")
            counters["train_seconds"] += train_seconds
            counters["total_seconds"] += time.perf_counter() - t0
            metrics.append({"epoch": epoch, "phase": phase.index, "curriculum": phase.curriculum,
                            "pool_size": len(pool), "lr": lr, **row, "test_top1": top1, "test_top5": top5,
                            "iterations": counters["iterations"], "images_seen": counters["images_seen"],
                            "train_seconds": round(counters["train_seconds"], 3),
                            "wall_seconds": round(counters["total_seconds"], 3)})
            self.run.save(self._state(epoch, phase_index, pool, metrics, counters), latest)
            self.run.write_metrics(metrics)
            self._notify("on_epoch", metrics[-1])
            bar.update(1)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", top1=f"{top1:.2f}", pool=len(pool))
        bar.close()
        # again, for a run resumed after its last epoch's checkpoint was saved but before its metrics were
        # written (a crash between the two): otherwise metrics.jsonl would stay one epoch short for good
        self.run.write_metrics(metrics)
        self.run.save(self.student.state_dict(), self.run.weights)
        summary = summarize(cfg, metrics, counters, environment(self.device), self.teacher_source,
                            self.train_set.num_classes)
        # provenance: which weights this run ended with, and which teacher weights taught it. A run id names
        # what a run computes, not the bits it got (CPU training is bit-exact on one machine, not across
        # machines), so a student records the hash of its teacher's weights and RunStore.load flags it
        # ("teacher_changed") when the teacher run in the store now holds other weights
        summary["weights_hash"] = state_dict_hash(self.student)
        return self._finish(summary, init_record)

    def _finish(self, summary: dict, init_record: list | None) -> dict:
        """Write the summary, with the teacher's weights hash and the initialisation stages' record."""
        summary["teacher_weights_hash"] = state_dict_hash(self.teacher) if self.teacher is not None else None
        if init_record is not None:
            summary["init"] = init_record
        self.run.write_summary(summary)
        self._notify("on_end", summary)
        return summary

    def _record_divergence(self, err: TrainingDiverged, metrics: list[dict], counters: dict,
                           init_record: list | None) -> dict:
        """Finish a run whose loss turned non-finite: its finished epochs' metrics are kept, and the summary
        (:func:`diverged_summary`) says where it diverged; no weights are written (there is no usable model)."""
        self.log(f"{err} The run is recorded as finished with the flag 'diverged' (docs/run-store.md).")
        self.run.write_metrics(metrics)
        summary = diverged_summary(self.cfg, metrics, counters, environment(self.device), self.teacher_source,
                                   self.train_set.num_classes, err)
        return self._finish(summary, init_record)


def diverged_summary(cfg: ResolvedRun, metrics: list[dict], counters: dict, env: dict, teacher_source: str,
                     num_classes: int | None, err: TrainingDiverged) -> dict:
    """The summary of a run whose loss became non-finite: finished, flagged ``diverged``, with
    ``diverged = {"epoch", "where", "message"}`` (``epoch`` 0: an initialisation stage), ``epochs`` = the
    epochs it completed (their metrics are kept), and no accuracy: ``last_top1``, ``best_top1`` and
    ``best_epoch`` are None, so that no table averages the run with finished ones."""
    summary = _summary(cfg, metrics, counters, env, teacher_source, num_classes,
                       dict(last_top1=None, last_top5=None, best_top1=None, best_epoch=None))
    summary.update(flags=["diverged"], diverged={"epoch": err.epoch or 0, "where": err.where, "message": str(err)},
                   weights_hash=None)
    return summary


def summarize(cfg: ResolvedRun, metrics: list[dict], counters: dict, env: dict, teacher_source: str,
              num_classes: int | None = None) -> dict:
    best = max(metrics, key=lambda m: m["test_top1"])
    last = metrics[-1]
    accuracy = dict(last_top1=last["test_top1"], last_top5=last["test_top5"], best_top1=best["test_top1"],
                    best_epoch=best["epoch"])
    return _summary(cfg, metrics, counters, env, teacher_source, num_classes, accuracy)


def _summary(cfg: ResolvedRun, metrics: list[dict], counters: dict, env: dict, teacher_source: str,
             num_classes: int | None, accuracy: dict) -> dict:
    return {"run_id": cfg.run_id, "method": cfg.method, "dataset": cfg.dataset, "model": cfg.model,
            "teacher": (cfg.config.teacher or {}).get("model") if cfg.config.teacher else cfg.teacher_weights,
            "seed": cfg.seed, "epochs": len(metrics), "last_top1": accuracy["last_top1"],
            "last_top5": accuracy["last_top5"], "best_top1": accuracy["best_top1"],
            "best_epoch": accuracy["best_epoch"], "iterations": counters["iterations"],
            "images_seen": counters["images_seen"], "train_seconds": round(counters["train_seconds"], 2),
            "wall_seconds": round(counters["total_seconds"], 2), "teacher_source": teacher_source,
            "num_classes": num_classes, "flags": health_flags(metrics, num_classes), "environment": env,
            "finished": True}


#: a loss this many times its first epoch's value (or more) counts as exploded
LOSS_EXPLOSION_FACTOR = 100.0


def health_flags(metrics: list[dict], num_classes: int | None) -> list[str]:
    """Warnings about a finished run that the NaN guard does not catch (docs/run-store.md, "Health flags"):

    * ``chance_level``: the last epoch's test top-1 is within 1.5x of chance (100 / classes), e.g. a
      collapse to one class;
    * ``loss_exploded``: some epoch's training loss is at least :data:`LOSS_EXPLOSION_FACTOR` times the
      first epoch's.

    Tables and figures mark flagged runs."""
    flags = []
    if num_classes and metrics and metrics[-1]["test_top1"] <= 1.5 * 100.0 / num_classes:
        flags.append("chance_level")
    losses_ = [m.get("train_loss") for m in metrics if m.get("train_loss") is not None]
    if losses_ and losses_[0] > 0 and max(losses_) >= LOSS_EXPLOSION_FACTOR * losses_[0]:
        flags.append("loss_exploded")
    return flags
