"""One training loop for every run: teacher or vanilla student (CE), KD student (KD, FitNets, AT or a
combination) and SLKD student (KD + the snapshot sequencer).

The loop follows the authors' ``train_slkd.py`` (github.com/HaoranZhao1988/kd) where it defines the
method, and airbench where it defines speed:

* data stay on the device as uint8 tensors; each batch is cropped, flipped and normalised there
  (:class:`kdrepro.augment.CropFlip`); shuffling and augmentation draw from one seeded CPU generator, so a
  seed gives the same batches on every device;
* the teacher's logits come from the exact per-view cache (:mod:`kdrepro.cache`) when the losses need
  only logits, from a live forward pass otherwise (FitNets and AT need the teacher's features);
* at the start of each curriculum phase a frozen copy of the student (the snapshot) scores every
  un-augmented training image once, and the phase trains on the easiest fraction of each class
  (:mod:`kdrepro.sequencer`); the authors re-sort every epoch with the same snapshot, which selects the
  same pool;
* loss = ce_weight * CE + kd_weight * T^2 KL(teacher || student) [+ mse_weight * MSE(student, teacher
  logits) in curriculum phases] [+ fitnet_weight * hint] [+ at_weight * AT];
* after every epoch the state (model, optimiser, scheduler, RNG states, phase, pool, metrics) is written
  atomically to ``checkpoints/latest.pt`` and the metrics to ``metrics.jsonl``, so a run killed at any
  moment resumes from its last finished epoch and ends with the same numbers (on CPU, fixed seed).
"""
from __future__ import annotations

import copy
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import __version__, losses, sequencer
from .augment import CropFlip
from .cache import TeacherLogitCache, _quiet, atomic_save
from .config import RunConfig
from .data import ImageDataset, load_dataset
from .models import create_model

EVAL_BATCH = 1000


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupt, or written for another model or class count."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stops before saving the epoch."""


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


def planned_steps(cfg: RunConfig, targets: torch.Tensor) -> int:
    """The optimizer steps a run will take, from its schedule, its batch size and the class counts
    ``targets`` of its training set: each phase's pool holds ``ceil(fraction * n_c)`` images of every class
    (:func:`kdrepro.sequencer.select_pool`) and is cut into :func:`batches` every epoch."""
    cfg = cfg.resolved()
    counts = torch.bincount(targets.long()).tolist()
    total = 0
    for phase in cfg.schedule():
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


def load_checkpoint(path: Path, device: torch.device) -> dict:
    """``torch.load(weights_only=True)`` with an error that says which file and what to do."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:
        first_line = (str(err).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"cannot read checkpoint {path} ({type(err).__name__}: {first_line}). It is corrupt or "
                              "from an incompatible version; delete it to restart the run from scratch.") from None


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
    correct1 = correct5 = 0
    k = min(5, dataset.num_classes)
    for start in range(0, len(images), EVAL_BATCH):
        x = dataset.normalize(images[start:start + EVAL_BATCH])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = targets[start:start + EVAL_BATCH]
        top = model(x).topk(k, dim=1).indices
        correct1 += (top[:, 0] == y).sum().item()
        correct5 += (top == y[:, None]).any(dim=1).sum().item()
    model.train(was_training)
    return 100.0 * correct1 / len(images), 100.0 * correct5 / len(images)


def environment(device: torch.device) -> dict:
    import torchvision

    env = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
           "kdrepro": __version__, "platform": platform.platform(), "device": str(device),
           "threads": torch.get_num_threads()}
    env["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    return env


class Trainer:
    """Trains one run into ``run_dir``; :meth:`fit` resumes from ``checkpoints/latest.pt`` when present."""

    def __init__(self, cfg: RunConfig, run_dir: str | os.PathLike, teacher: nn.Module | None = None,
                 cache_dir: str | os.PathLike | None = None, log: Callable[[str], None] | None = None):
        self.cfg = cfg.resolved()
        self.run_dir = Path(run_dir)
        self.cache_dir = Path(cache_dir) if cache_dir else self.run_dir.parent.parent / "cache"
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.device = resolve_device(self.cfg.device)
        if self.cfg.num_threads:
            torch.set_num_threads(self.cfg.num_threads)
        cfg = self.cfg
        self.train_set = load_dataset(cfg.dataset, root=cfg.data_root, train=True, **cfg.dataset_options)
        self.test_set = load_dataset(cfg.dataset, root=cfg.data_root, train=False, **cfg.dataset_options)
        self.images = self.train_set.images.to(self.device)
        self.targets = self.train_set.targets.to(self.device)
        self.test_images = self.test_set.images.to(self.device)
        self.test_targets = self.test_set.targets.to(self.device)
        self.augment = CropFlip(padding=cfg.crop_padding if cfg.augment else 0, hflip=cfg.hflip and cfg.augment)
        self.schedule = cfg.schedule()

        torch.manual_seed(cfg.seed)
        channels = self.train_set.image_shape[0]
        self.student = create_model(cfg.model, self.train_set.num_classes, in_channels=channels,
                                    **cfg.model_options).to(self.device)
        self.teacher = teacher.to(self.device).eval() if teacher is not None else None
        if self.teacher is not None:
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.need_features = cfg.needs_teacher_features
        self.need_teacher = cfg.needs_teacher
        if self.need_teacher and self.teacher is None:
            raise ValueError(f"run {cfg.method!r} needs a teacher model")
        self.hint = None
        params = list(self.student.parameters())
        if cfg.fitnet_weight > 0:
            s_ch, t_ch = self.student.stage_channels, self.teacher.stage_channels
            for name, chans in (("student", s_ch), ("teacher", t_ch)):
                if not -len(chans) <= cfg.fitnet_stage < len(chans):
                    raise ValueError(f"fitnet_stage={cfg.fitnet_stage} is out of range for the {name} "
                                     f"({len(chans)} stages)")
            self.hint = losses.FitNetHint(s_ch[cfg.fitnet_stage], t_ch[cfg.fitnet_stage]).to(self.device)
            params += list(self.hint.parameters())
        if cfg.channels_last:
            self.student = self.student.to(memory_format=torch.channels_last)
            if self.teacher is not None:
                self.teacher = self.teacher.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                         weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=list(cfg.milestones),
                                                              gamma=cfg.gamma)
        self.forward = torch.compile(self.student) if cfg.compile else self.student
        self.autocast = cfg.bf16 and self.device.type == "cuda"
        if cfg.bf16 and not self.autocast:
            self.log("bf16 autocast is for GPUs; training in float32 on the CPU")
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.cache: TeacherLogitCache | None = None
        self.teacher_source = "none"
        self.snapshot: nn.Module | None = None
        self._metrics: list[dict] = []

    # ------------------------------------------------------------------ teacher
    def prepare_teacher(self) -> None:
        if not self.need_teacher:
            return
        if self.need_features:
            self.teacher_source = "live"
            self.log("teacher: live forward passes (FitNets/AT need the teacher's feature maps, which the "
                     "logit cache does not hold)")
            return
        if not self.cfg.teacher_cache:
            self.teacher_source = "live"
            self.log("teacher: live forward passes (teacher_cache=false)")
            return
        self.cache, hit = TeacherLogitCache.load_or_build(
            self.teacher, self.train_set, self.augment, self.device, self.cache_dir,
            progress=self.cfg.progress, channels_last=self.cfg.channels_last)
        self.teacher_source = "cache"
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
        cfg = self.cfg
        snapshot = copy.deepcopy(self.student).eval()
        for p in snapshot.parameters():
            p.requires_grad_(False)
        atomic_save(snapshot.state_dict(), self.run_dir / "snapshots" / f"phase{phase.index}.pt")
        teacher_logits = None
        if cfg.score == "teacher_kl":
            teacher_logits = (self.cache.lookup(all_idx.to(self.device),
                                                torch.full_like(all_idx, self.augment.identity_view).to(self.device))
                              if self.cache is not None else None)
        scores = sequencer.score_instances(snapshot, self.train_set, cfg.score, teacher=self.teacher,
                                           device=self.device, teacher_logits=teacher_logits)
        pool = sequencer.select_pool(scores, self.train_set.targets, phase.fraction, cfg.order, self.generator)
        top1, top5 = evaluate(snapshot, self.test_set, self.test_images, self.test_targets, cfg.channels_last)
        atomic_save({"phase": phase.index, "start_epoch": phase.start, "end_epoch": phase.end,
                     "fraction": phase.fraction, "score": cfg.score, "order": cfg.order,
                     "scores": scores.float().cpu(), "targets": self.train_set.targets.cpu(),
                     "pool": pool.cpu(), "snapshot_test_top1": top1, "snapshot_test_top5": top5},
                    self.run_dir / "curriculum" / f"phase{phase.index}.pt")
        self.snapshot = snapshot if cfg.quirk_mse_to_snapshot else None
        self.log(f"phase {phase.index}: epochs {phase.start + 1}-{phase.end}, {len(pool)}/{len(self.train_set)} "
                 f"images ({phase.fraction:.0%} of each class, {cfg.order}, {cfg.score}); snapshot top-1 {top1:.2f}")
        return pool

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self, pool: torch.Tensor, phase: sequencer.Phase) -> dict:
        cfg = self.cfg
        self.student.train()
        order = pool[torch.randperm(len(pool), generator=self.generator)]
        augment_now = cfg.augment and not (cfg.quirk_no_warmup_augment and cfg.method == "slkd"
                                           and not phase.curriculum)
        sums: dict[str, float] = {}
        correct = seen = steps = 0
        for idx_cpu in batches(order, cfg.batch_size):
            if augment_now:
                views_cpu = self.augment.sample_views(len(idx_cpu), generator=self.generator)
            else:
                views_cpu = torch.full((len(idx_cpu),), self.augment.identity_view, dtype=torch.long)
            idx, views = idx_cpu.to(self.device), views_cpu.to(self.device)
            x = self.train_set.normalize(self.augment.apply(self.images[idx], views))
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = self.targets[idx]
            t_logits = t_feats = None
            if self.need_teacher:
                t_logits, t_feats = self._teacher_logits(x, idx, views)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
                if self.need_features:
                    s_logits, s_feats = self.forward(x, return_features=True)
                else:
                    s_logits, s_feats = self.forward(x), None
                parts = self._losses(s_logits, s_feats, y, t_logits, t_feats, x, phase)
                loss = sum(parts.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            n = len(idx)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v.item() * n
            sums["loss"] = sums.get("loss", 0.0) + loss.item() * n
            correct += (s_logits.argmax(1) == y).sum().item()
            seen += n
            steps += 1
        out = {f"train_{k}": v / seen for k, v in sums.items()}
        if not all(math.isfinite(v) for v in out.values()):
            raise TrainingDiverged(f"training diverged in epoch {len(self._metrics) + 1} of {self.run_dir.name} "
                                   f"(non-finite loss: {out}); nothing of this epoch was saved. Lower lr or a "
                                   "loss weight, or turn off the option that caused it.")
        out.update(train_top1=100.0 * correct / seen, steps=steps, images=seen)
        return out

    def _losses(self, s_logits, s_feats, y, t_logits, t_feats, x, phase) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        s_logits = s_logits.float()
        parts = {}
        if cfg.ce_weight > 0:
            parts["ce"] = cfg.ce_weight * losses.cross_entropy(s_logits, y)
        if cfg.kd_weight > 0:
            parts["kd"] = cfg.kd_weight * losses.kd_loss(s_logits, t_logits, cfg.temperature)
        if cfg.mse_weight > 0 and phase.curriculum:
            if self.snapshot is not None:  # quirk: the snapshot's logits as the target
                with torch.no_grad():
                    target = self.snapshot(x).float()
            else:
                target = t_logits
            parts["mse"] = cfg.mse_weight * losses.logit_mse(s_logits, target)
        if cfg.fitnet_weight > 0:
            st = cfg.fitnet_stage
            parts["fitnet"] = cfg.fitnet_weight * self.hint(s_feats["stages"][st].float(), t_feats["stages"][st])
        if cfg.at_weight > 0:
            parts["at"] = cfg.at_weight * losses.attention_transfer(
                [f.float() for f in s_feats["stages"]], t_feats["stages"], p=cfg.at_p)
        return parts

    # ------------------------------------------------------------------ state
    def _state(self, epoch: int, phase_index: int, pool: torch.Tensor, metrics: list, counters: dict) -> dict:
        state = {"epoch": epoch, "phase": phase_index, "pool": pool.cpu(), "metrics": metrics, "counters": counters,
                 "model": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng_torch": torch.get_rng_state(),
                 "rng_generator": self.generator.get_state()}
        if self.hint is not None:
            state["hint"] = self.hint.state_dict()
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _restore(self, path: Path) -> dict:
        state = load_checkpoint(path, self.device)
        load_state(self.student, state["model"], path, f"model {self.cfg.model!r}")
        if self.hint is not None:
            load_state(self.hint, state["hint"], path, "FitNets regressor")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_torch"].cpu())
        self.generator.set_state(state["rng_generator"].cpu())
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), self.device)
        phase = self.schedule[state["phase"]]
        if phase.curriculum and self.cfg.quirk_mse_to_snapshot:
            snap_path = self.run_dir / "snapshots" / f"phase{phase.index}.pt"
            self.snapshot = copy.deepcopy(self.student).eval()
            load_state(self.snapshot, load_checkpoint(snap_path, self.device), snap_path, "snapshot")
        return state

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        latest = self.run_dir / "checkpoints" / "latest.pt"
        epoch, metrics = 0, []
        self._metrics = metrics
        counters = {"iterations": 0, "images_seen": 0, "train_seconds": 0.0, "total_seconds": 0.0}
        pool, phase_index = None, -1
        self.prepare_teacher()
        if latest.exists():
            state = self._restore(latest)
            epoch, metrics, counters = state["epoch"], state["metrics"], state["counters"]
            self._metrics = metrics
            pool, phase_index = state["pool"], state["phase"]
            self.log(f"resuming {self.run_dir.name} after epoch {epoch}/{cfg.epochs}")
        bar = tqdm(total=cfg.epochs, initial=epoch, desc=self.run_dir.name, unit="ep", disable=_quiet(cfg.progress))
        while epoch < cfg.epochs:
            t0 = time.perf_counter()
            phase = sequencer.phase_at(self.schedule, epoch)
            if phase.index != phase_index:
                pool, phase_index = self.start_phase(phase), phase.index
            lr = self.optimizer.param_groups[0]["lr"]
            t_train = time.perf_counter()
            row = self.train_epoch(pool, phase)
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
            atomic_save(self._state(epoch, phase_index, pool, metrics, counters), latest)
            _atomic_write_text(self.run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))
            bar.update(1)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", top1=f"{top1:.2f}", pool=len(pool))
        bar.close()
        atomic_save(self.student.state_dict(), self.run_dir / "weights.pt")
        summary = summarize(cfg, metrics, counters, environment(self.device), self.teacher_source)
        _atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary


def summarize(cfg: RunConfig, metrics: list[dict], counters: dict, env: dict, teacher_source: str) -> dict:
    best = max(metrics, key=lambda m: m["test_top1"])
    last = metrics[-1]
    return {"run_id": cfg.run_id, "method": cfg.method, "dataset": cfg.dataset, "model": cfg.model,
            "teacher": (cfg.teacher or {}).get("model") if cfg.teacher else cfg.teacher_weights,
            "seed": cfg.seed, "epochs": len(metrics), "last_top1": last["test_top1"], "last_top5": last["test_top5"],
            "best_top1": best["test_top1"], "best_epoch": best["epoch"], "iterations": counters["iterations"],
            "images_seen": counters["images_seen"], "train_seconds": round(counters["train_seconds"], 2),
            "wall_seconds": round(counters["total_seconds"], 2), "teacher_source": teacher_source,
            "environment": env, "finished": True}


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
