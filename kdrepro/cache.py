"""An exact teacher-logit cache over every augmented view.

The teacher is frozen and in eval mode, so its logits on a given augmented view of a given image never
change. The CIFAR augmentation (reflect-pad 4, random 32x32 crop, horizontal flip) has only
9 x 9 x 2 = 162 views per image (:class:`kdrepro.augment.CropFlip`), so the teacher's logits for all of them
can be computed once, stored in half precision (``teacher_cache_dtype: float16``, the default) or in single
precision (``float32``), and looked up during distillation instead of running the teacher at every step. Every student run that shares a teacher and a data set (KD, SLKD, ablations,
seeds) reuses the same file.

The key is the hash of the teacher's weights, the data set's fingerprint and the augmentation, so a
retrained teacher or another data set never hits a stale cache. Lookups equal a live teacher forward on
the same view up to float16 rounding (``tests/test_cache.py``): the KD loss moves by about 2e-5 relative
against live float32 logits, at half the memory and file size of a float32 cache, which equals the live
forward exactly (on the same device). A float32 cache is a file of its own (``...-f32.pt``).

A cache file holds ``{"logits": [N, V, C] float16 (or float32), "sha256": <checksum of the logits' bytes>}``. Loading
checks the shape and the checksum, and compares a sample of entries against a live forward of the teacher
(:func:`spot_check`); a file that fails either (damaged, zeroed, written for other weights) is rebuilt, never
trusted. A file of an earlier kdrepro (the bare tensor, no checksum) is used when its sample agrees with the
teacher, and is rewritten with its checksum.

Runs that read one teacher run's cache form a *cache group* (:func:`cache_group`). The first run of a group
to load or build the file writes ``<cache>/groups/<group>.json`` naming it, so a scheduler can start the
group's other runs as soon as the file exists rather than when the run that built it finishes
(:mod:`kdrepro.executors`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .augment import CropFlip
from .rundir import RunFileError, atomic_save, read_json, write_json


def state_dict_hash(model: torch.nn.Module) -> str:
    """A stable hash of a model's weights and buffers."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def logits_checksum(logits: torch.Tensor) -> str:
    """The sha256 of a logit tensor's bytes (on the CPU, contiguous), as hex."""
    t = logits.detach().cpu().contiguous()
    return hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"").hexdigest()


#: how many (image, view) entries :func:`spot_check` compares with a live teacher forward
SPOT_CHECK = 64


def spot_check(logits: torch.Tensor, teacher: torch.nn.Module, dataset, augment: CropFlip, device: torch.device,
               channels_last: bool = False, count: int = SPOT_CHECK) -> bool:
    """Whether ``count`` fixed, spread-out entries of ``logits`` (``[N, V, C]``) equal the teacher's live
    logits on the same views, up to float16 rounding and the arithmetic of another device (1 % of the
    largest logit)."""
    n, v = logits.shape[:2]
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(n, generator=gen)[:count]
    views = torch.randint(0, v, (len(idx),), generator=gen)
    teacher = teacher.to(device).eval()
    with torch.inference_mode():
        x = dataset.normalize(augment.apply(dataset.images[idx].to(device), views.to(device)))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        live = teacher(x).float().cpu()
    stored = logits[idx.to(logits.device), views.to(logits.device)].float().cpu()
    if stored.shape != live.shape or not torch.isfinite(stored).all():
        return False
    scale = max(live.abs().max().item(), 1e-6)
    return bool(((stored - live).abs() <= 1e-2 * scale).all())


def cache_key(teacher: torch.nn.Module, dataset, augment: CropFlip) -> str:
    """Teacher weights, images and labels, the views (padding, its mode, flips) and the normalisation the
    teacher sees its inputs through (the same images normalised otherwise give other logits)."""
    aug = f"p{augment.padding}{augment.padding_mode[0]}{'f' if augment.hflip else 'n'}"
    norm = hashlib.sha256(repr((tuple(map(float, dataset.mean)), tuple(map(float, dataset.std)))).encode())
    return f"{state_dict_hash(teacher)}-{dataset.fingerprint()}-{aug}-n{norm.hexdigest()[:8]}"


def cache_group(cfg) -> str:
    """The group of a run that reads a teacher run's logit cache: runs with the same teacher run, data set,
    data-set options and augmentation read the same file (``cfg``: a :class:`kdrepro.resolution.ResolvedRun`
    with a teacher run)."""
    group = [cfg.teacher.run_id, cfg.dataset, cfg.dataset_options, cfg.augment, cfg.crop_padding,
             cfg.hflip]
    return hashlib.sha256(json.dumps(group, sort_keys=True, default=str).encode()).hexdigest()[:16]


def group_marker(cache_dir: str | os.PathLike, group: str) -> Path:
    """``<cache>/groups/<group>.json`` (``group``: :func:`cache_group`): written once the group's cache file
    exists (:func:`mark_ready`)."""
    return Path(cache_dir) / "groups" / f"{group}.json"


def mark_ready(marker: Path, cache_path: Path) -> None:
    """Record that ``cache_path`` (a file of the same cache folder) holds the group's logits. Only a hint for
    scheduling, so a marker that cannot be written is left out rather than stopping the run."""
    try:
        write_json(marker, {"file": Path(cache_path).name})
    except RunFileError:
        pass


def cache_ready(marker: Path) -> bool:
    """Whether ``marker`` exists and the cache file it names is there. Only a hint for scheduling: a run
    still computes its cache key from the teacher's weights, and a marker left by an earlier teacher with the
    same run id only makes the group's runs start together, each finding or building its own file."""
    try:
        name = read_json(marker)["file"]
    except (RunFileError, OSError, KeyError, TypeError):
        return False
    return isinstance(name, str) and "/" not in name and (Path(marker).parent.parent / name).is_file()


#: the dtypes a cache may store, by their config name
DTYPES = {"float16": torch.float16, "float32": torch.float32}


class TeacherLogitCache:
    """Teacher logits for every (image, view): a float16 (or float32) tensor ``[N, V, C]`` on the training device."""

    def __init__(self, logits: torch.Tensor, augment: CropFlip, path: Path | None = None):
        self.logits = logits
        self.augment = augment
        self.path = path  # the file it was loaded from or saved to

    def lookup(self, indices: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Float32 teacher logits for images ``indices`` seen through ``views``."""
        return self.logits[indices, views].float()

    @classmethod
    def build(cls, teacher: torch.nn.Module, dataset, augment: CropFlip, device: torch.device,
              batch_size: int = 1024, progress: bool | None = None, channels_last: bool = False,
              dtype: str = "float16") -> "TeacherLogitCache":
        """Run the teacher once over every view of every image, storing ``dtype`` (``float16``/``float32``)."""
        store = DTYPES[dtype]
        teacher = teacher.to(device).eval()
        images = dataset.images.to(device)
        n, v = len(dataset), augment.num_views
        out, peak = None, 0.0
        bar = tqdm(total=n * v, desc="teacher-logit cache", unit="img", unit_scale=True, disable=_quiet(progress))
        with torch.inference_mode():
            for view in range(v):
                for start in range(0, n, batch_size):
                    x = images[start:start + batch_size]
                    views = torch.full((len(x),), view, dtype=torch.long, device=device)
                    x = dataset.normalize(augment.apply(x, views))
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    logits = teacher(x)
                    if out is None:
                        out = torch.empty((n, v, logits.shape[1]), dtype=store, device=device)
                    out[start:start + len(x), view] = logits.to(store)
                    largest = logits.abs().max().item()
                    peak = largest if math.isnan(largest) else max(peak, largest)  # max() would drop a NaN
                    bar.update(len(x))
        bar.close()
        if not peak <= torch.finfo(store).max:  # also catches NaN (peak stays NaN once seen)
            raise ValueError(
                f"the teacher's logits do not fit float16 (largest |logit| {peak:.4g}; float16 holds up to 65504): "
                "the teacher is probably untrained or diverged. Check its accuracy, or train with "
                "teacher_cache: false")
        return cls(out, augment)

    @classmethod
    def load_or_build(cls, teacher, dataset, augment, device, cache_dir: str | os.PathLike,
                      progress: bool | None = None, channels_last: bool = False,
                      dtype: str = "float16") -> tuple["TeacherLogitCache", bool]:
        """Return ``(cache, hit)``; builds and saves atomically on a miss."""
        suffix = "" if dtype == "float16" else "-f32"
        path = Path(cache_dir) / f"teacher-logits-{cache_key(teacher, dataset, augment)}{suffix}.pt"
        if path.exists():
            logits, checked = _read_cache(path, device, (len(dataset), augment.num_views), DTYPES[dtype])
            if logits is not None and spot_check(logits, teacher, dataset, augment, device, channels_last):
                if not checked:  # an earlier kdrepro's file: keep it, with its checksum from now on
                    _write_cache(logits, path)
                return cls(logits, augment, path), True
        cache = cls.build(teacher, dataset, augment, device, progress=progress, channels_last=channels_last,
                          dtype=dtype)
        _write_cache(cache.logits, path)
        cache.path = path
        return cache, False


def _write_cache(logits: torch.Tensor, path: Path) -> None:
    cpu = logits.cpu()
    atomic_save({"logits": cpu, "sha256": logits_checksum(cpu)}, path)


def _read_cache(path: Path, device, shape: tuple[int, int],
                dtype: torch.dtype = torch.float16) -> tuple[torch.Tensor | None, bool]:
    """``(logits, checksummed)`` of a cache file; ``(None, False)`` when it is damaged, of another shape, or
    its checksum disagrees (it is then rebuilt, never trusted)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None, False
    if isinstance(data, dict):
        logits, checksum = data.get("logits"), data.get("sha256")
        if not isinstance(logits, torch.Tensor) or checksum != logits_checksum(logits):
            return None, False
        checked = True
    elif isinstance(data, torch.Tensor):
        logits, checked = data, False
    else:
        return None, False
    if logits.dim() != 3 or tuple(logits.shape[:2]) != shape or logits.dtype != dtype:
        return None, False
    return logits.to(device), checked


def _quiet(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None lets tqdm stay quiet when the output is not a terminal."""
    return None if progress is None else not progress
