"""Benchmark kdrepro's fast KD path against a training loop written the authors' way.

For each teacher:student pair (default resnet110:resnet20 and resnet56:resnet20) the script runs, in one
process on one machine, the same number of KD steps (batch 128, T = 3, CE + 0.1 * T^2 * KL, SGD with
Nesterov momentum) in two ways:

* **reference** -- the loop of the authors' ``train_slkd.py`` (github.com/HaoranZhao1988/kd): a torch
  ``Dataset`` of PIL images through ``Pad(4, reflect), RandomCrop(32), RandomHorizontalFlip, ToTensor,
  Normalize``, a ``DataLoader`` with worker processes, a live teacher forward at every step, and (as the
  authors re-sort the training set at every curriculum epoch) one ranking pass per epoch: a snapshot of the
  student scores every training image (test transform, max logit) and the scores are sorted per class.
  The ranking pass is timed once and charged per step (``steps / steps_per_epoch`` of a pass);
* **kdrepro** -- :class:`kdrepro.engine.Trainer` with a KD :class:`kdrepro.config.RunConfig` (recipe
  ``slkd``): tensor-resident data, batched crop/flip on the device and teacher logits looked up in the exact
  per-view cache. :meth:`~kdrepro.engine.Trainer.prepare_teacher` (the one-off cache build) is timed apart
  from :meth:`~kdrepro.engine.Trainer.train_epoch`. Several runtime variants are timed (channels-last on
  and off, and the live teacher instead of the cache); the config defaults give the headline figure.

The timed steps run in ``--rounds`` rounds in which the loops take turns, so a machine whose load changes
while the benchmark runs (other jobs) affects all of them alike.

The cache is built for ``--cache-images`` images only (a resnet110 pass over 162 views of 5,085 images
takes tens of minutes on a CPU) and its cost is extrapolated linearly per image to the whole data set and
to full CIFAR-10; kdrepro then trains on those cached images (throughput does not depend on which images).
Break-even: cache cost / teacher-forward time a run saves, the latter measured as the reference loop's
teacher forward per image times the images a run sees (epochs x data-set size).

Results go to ``<out>/bench_<device>.json`` and ``.md`` with the machine and library versions.
Run ``python benchmarks/bench_kd.py --help`` for the options.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import kdrepro  # before torchvision: the import guard
from kdrepro._torchvision import import_torchvision
from kdrepro.augment import CropFlip
from kdrepro.config import RECIPES, RunConfig
from kdrepro.data import CIFAR10_MEAN, CIFAR10_STD, CorruptDatasetError, DatasetNotFoundError, load_dataset
from kdrepro.engine import Trainer, resolve_device
from kdrepro.models import create_model, list_models
from kdrepro.sequencer import make_schedule

REPO = Path(__file__).resolve().parent.parent
CIFAR10_TRAIN_IMAGES = 50_000
SYNTHETIC_IMAGES = 5_085  # the size of cifar10-5k, so both data sources give the same epoch length
NUM_CLASSES = 10
TARGETS = {"cpu": 2.5, "cuda": 10.0}
RECIPE = RECIPES["slkd"]
SHORT_BUDGET_EPOCHS = 30


@dataclass(frozen=True)
class Variant:
    """A kdrepro runtime configuration to time."""

    name: str
    teacher_cache: bool
    channels_last: bool


# The first variant uses the RunConfig defaults and gives the headline figure.
VARIANTS = {
    "default": Variant("default (cache, channels_last)", teacher_cache=True, channels_last=True),
    "nchw": Variant("cache, NCHW", teacher_cache=True, channels_last=False),
    "live": Variant("live teacher, NCHW", teacher_cache=False, channels_last=False),
}


# --------------------------------------------------------------------------------------------- data
@dataclass
class Data:
    images: np.ndarray   # uint8 [N, 3, 32, 32]
    targets: np.ndarray  # int64 [N]
    source: str


def load_images(choice: str) -> Data:
    """The real CIFAR-10-5k subset when found (``choice`` auto or cifar10-5k), else synthetic images."""
    if choice in ("auto", "cifar10-5k"):
        try:
            ds = load_dataset("cifar10-5k")
            return Data(ds.images.numpy(), ds.targets.numpy(), f"cifar10-5k ({len(ds)} real CIFAR-10 images)")
        except (DatasetNotFoundError, CorruptDatasetError) as err:
            if choice == "cifar10-5k":
                raise SystemExit(f"--data cifar10-5k: {err}\nUse --data synthetic to run without it.") from None
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(SYNTHETIC_IMAGES, 3, 32, 32), dtype=np.uint8)
    targets = rng.permutation(np.arange(SYNTHETIC_IMAGES) % NUM_CLASSES).astype(np.int64)
    return Data(images, targets, f"synthetic ({SYNTHETIC_IMAGES} random uint8 images, 10 classes; "
                                 "throughput does not depend on image content)")


def write_npz(data: Data, count: int, path: Path) -> Path:
    """The first ``count`` images as kdrepro's ``npz`` data set (a few of them double as its test split)."""
    x, y = data.images[:count], data.targets[:count]
    np.savez(path, x_train=x, y_train=y, x_test=x[:64], y_test=y[:64],
             classes=np.array([str(c) for c in range(NUM_CLASSES)]))
    return path


# ---------------------------------------------------------------------------------- reference loop
class PILImages(torch.utils.data.Dataset):
    """Images as PIL through a torchvision transform, like ``torchvision.datasets.CIFAR10``."""

    def __init__(self, data: Data, transform: Callable):
        from PIL import Image

        self._to_pil = Image.fromarray
        self.images = np.ascontiguousarray(data.images.transpose(0, 2, 3, 1))  # HWC, as CIFAR10 stores it
        self.targets = data.targets.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self._to_pil(self.images[i])), self.targets[i]


def authors_transforms() -> tuple[Callable, Callable]:
    """``train_slkd.py``'s train and test transforms (CIFAR-10 statistics)."""
    transforms = import_torchvision().transforms
    normalize = transforms.Normalize(mean=CIFAR10_MEAN, std=CIFAR10_STD)
    train = transforms.Compose([transforms.Pad(4, padding_mode="reflect"), transforms.RandomCrop(32),
                                transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize])
    test = transforms.Compose([transforms.ToTensor(), normalize])
    return train, test


def cycle_epochs(loader: torch.utils.data.DataLoader) -> Iterator:
    """Batches epoch after epoch; each epoch starts a new iterator (new workers), as the authors' loop."""
    while True:
        yield from loader


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ReferenceLoop:
    """KD steps the authors' way (see the module docstring). The DataLoader iterator lives across calls of
    :meth:`run`; its workers keep the prefetch queue full, as they do in an uninterrupted loop."""

    def __init__(self, data: Data, teacher: torch.nn.Module, student: torch.nn.Module, device: torch.device,
                 args: argparse.Namespace):
        train_tf, test_tf = authors_transforms()
        pin = device.type == "cuda"
        loader = torch.utils.data.DataLoader(PILImages(data, train_tf), batch_size=args.batch_size, shuffle=True,
                                             num_workers=args.workers, pin_memory=pin)
        self.rank_loader = torch.utils.data.DataLoader(PILImages(data, test_tf), batch_size=args.batch_size,
                                                       shuffle=True, num_workers=args.workers, pin_memory=pin)
        self.batches = cycle_epochs(loader)
        self.steps_per_epoch = math.ceil(len(data.targets) / args.batch_size)
        self.device = device
        self.teacher, self.student = teacher.to(device).eval(), student.to(device).train()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.opt = torch.optim.SGD(self.student.parameters(), lr=RECIPE["lr"], momentum=RECIPE["momentum"],
                                   nesterov=True, weight_decay=RECIPE["weight_decay"])
        self.round_seconds: list[float] = []
        self.teacher_seconds = 0.0
        self.images = 0

    def run(self, steps: int, timed: bool = True) -> None:
        """``steps`` training steps; when ``timed``, add their time, teacher time and images to the totals."""
        device = self.device
        temperature, kd_weight = RECIPE["losses"]["kd"]["T"], RECIPE["losses"]["kd"]["weight"]
        cudnn_benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = device.type == "cuda"  # as train_slkd.py sets it
        seconds = teacher_seconds = 0.0
        images = 0
        for _ in range(steps):
            sync(device)
            t0 = time.perf_counter()
            x, y = next(self.batches)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            s_logits = self.student(x)
            sync(device)
            t1 = time.perf_counter()
            with torch.no_grad():
                t_logits = self.teacher(x)
            sync(device)
            t2 = time.perf_counter()
            kl = F.kl_div(F.log_softmax(s_logits / temperature, dim=1), F.softmax(t_logits / temperature, dim=1),
                          reduction="sum") * temperature ** 2 / x.size(0)
            loss = F.cross_entropy(s_logits, y) + kd_weight * kl
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            loss.item()  # the authors log the losses and the accuracy every step
            (s_logits.argmax(1) == y).sum().item()
            sync(device)
            seconds += time.perf_counter() - t0
            teacher_seconds += t2 - t1
            images += len(x)
        torch.backends.cudnn.benchmark = cudnn_benchmark
        if timed:
            self.round_seconds.append(seconds)
            self.teacher_seconds += teacher_seconds
            self.images += images

    def time_ranking_pass(self) -> float:
        """Seconds for the authors' ``sort_training_data``: a frozen copy of the student scores every image
        (max logit) through the test transform; the scores are sorted in descending order within each class."""
        sync(self.device)
        t0 = time.perf_counter()
        snapshot = copy.deepcopy(self.student).eval()
        scores, labels = [], []
        with torch.no_grad():
            for x, y in self.rank_loader:
                scores.append(snapshot(x.to(self.device, non_blocking=True)).max(dim=1).values.cpu())
                labels.append(y)
        scores_all, labels_all = torch.cat(scores), torch.cat(labels)
        for c in range(NUM_CLASSES):
            torch.sort(scores_all[labels_all == c], descending=True)
        sync(self.device)
        return time.perf_counter() - t0

    def close(self) -> None:
        """Stop the DataLoader workers."""
        self.batches.close()


class KdreproLoop:
    """A :class:`~kdrepro.engine.Trainer` for one variant; the constructor times ``prepare_teacher()``."""

    def __init__(self, variant: Variant, npz: Path, teacher_name: str, student_name: str, teacher: torch.nn.Module,
                 device: torch.device, workdir: Path, args: argparse.Namespace):
        cfg = RunConfig(method="kd", recipe="slkd", dataset="npz", dataset_options={"path": str(npz)},
                        model=student_name, teacher={"model": teacher_name}, seed=0, batch_size=args.batch_size,
                        device=device.type, teacher_cache=variant.teacher_cache,
                        channels_last=variant.channels_last, progress=False)
        cache_dir = workdir / "cache"
        run_dir = workdir / variant.name.replace(" ", "_").replace(",", "")
        self.trainer = Trainer(cfg, run_dir, teacher=copy.deepcopy(teacher), cache_dir=cache_dir,
                               log=lambda m: None)
        had_cache = any(cache_dir.glob("*.pt"))
        sync(device)
        t0 = time.perf_counter()
        self.trainer.prepare_teacher()
        sync(device)
        self.prepare_seconds = time.perf_counter() - t0
        self.cache_hit = None if self.trainer.cache is None else had_cache
        self.variant, self.device, self.batch_size = variant, device, args.batch_size
        self.phase = make_schedule(1, pacing="none")[0]
        self.pools = torch.Generator().manual_seed(1)
        self.round_seconds: list[float] = []
        self.images = 0

    def run(self, steps: int, timed: bool = True) -> None:
        """``train_epoch`` over a pool of ``steps * batch`` indices drawn with replacement."""
        pool = torch.randint(0, len(self.trainer.train_set), (steps * self.batch_size,), generator=self.pools)
        sync(self.device)
        t0 = time.perf_counter()
        row = self.trainer.train_epoch(pool, self.phase)
        sync(self.device)
        if timed:
            self.round_seconds.append(time.perf_counter() - t0)
            self.images += row["images"]


def split_steps(steps: int, rounds: int) -> list[int]:
    """``steps`` as ``rounds`` near-equal positive chunks."""
    rounds = min(rounds, steps)
    return [steps // rounds + (i < steps % rounds) for i in range(rounds)]


def calibrate_batch_norm(model: torch.nn.Module, data: Data, images: int = 256) -> torch.nn.Module:
    """Set BatchNorm statistics from real batches and return the model in eval mode.

    The teacher keeps its random weights (speed does not depend on them), but with the initial running
    statistics (mean 0, variance 1) a deep residual net's activations grow block after block in eval mode,
    and resnet110's logits overflow float16 in the cache. Measured statistics keep them at a trained
    network's scale.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    mean = torch.tensor(CIFAR10_MEAN).view(1, -1, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, -1, 1, 1)
    model.train()
    with torch.no_grad():
        for start in range(0, images, 128):
            model((torch.from_numpy(data.images[start:start + 128]).float() / 255 - mean) / std)
    for m in norms:
        m.momentum = 0.1
    return model.eval()


# ------------------------------------------------------------------------------------------ one pair
def bench_pair(pair: str, data: Data, device: torch.device, args: argparse.Namespace, workdir: Path) -> dict:
    """Time the reference loop and every kdrepro variant, interleaved in rounds so that all of them see the
    same machine load; the ranking pass is timed once and charged per step."""
    teacher_name, student_name = pair.split(":")
    print(f"\n== {teacher_name} -> {student_name} ==", flush=True)
    torch.manual_seed(0)
    teacher = calibrate_batch_norm(create_model(teacher_name, NUM_CLASSES), data)
    student = create_model(student_name, NUM_CLASSES)
    cache_images = len(data.targets) if args.cache_images == 0 else min(args.cache_images, len(data.targets))
    pair_dir = workdir / pair.replace(":", "-")
    pair_dir.mkdir()
    npz = write_npz(data, cache_images, pair_dir / "train.npz")

    ref = ReferenceLoop(data, copy.deepcopy(teacher), copy.deepcopy(student), device, args)
    loops = []
    for key in args.variants:
        loops.append(KdreproLoop(VARIANTS[key], npz, teacher_name, student_name, teacher, device, pair_dir, args))
        if loops[-1].cache_hit is False:
            print(f"teacher-logit cache for {cache_images} images x {CropFlip().num_views} views built in "
                  f"{loops[-1].prepare_seconds:.1f} s", flush=True)
    runners = [ref, *loops]
    for runner in runners:
        runner.run(args.warmup, timed=False)
    chunks = split_steps(args.steps, args.rounds)
    for i, n in enumerate(chunks):
        for runner in runners[i % len(runners):] + runners[:i % len(runners)]:
            runner.run(n)
    rank_seconds = ref.time_ranking_pass()
    ref.close()

    rank_per_step = rank_seconds / ref.steps_per_epoch
    ref_seconds = sum(ref.round_seconds) + rank_per_step * args.steps
    ref_ips = ref.images / ref_seconds
    print(f"reference: {ref_ips:8.1f} img/s  (teacher forward {ref.teacher_seconds / ref_seconds:.0%} of its time; "
          f"ranking pass {rank_seconds:.1f} s, charged {rank_per_step * args.steps:.1f} s)", flush=True)
    variants = []
    for loop in loops:
        ips = loop.images / sum(loop.round_seconds)
        round_ratios = [(r + rank_per_step * n) / k for r, k, n in zip(ref.round_seconds, loop.round_seconds, chunks)]
        variants.append({"variant": loop.variant.name, "teacher_cache": loop.variant.teacher_cache,
                         "channels_last": loop.variant.channels_last, "prepare_seconds": loop.prepare_seconds,
                         "cache_hit": loop.cache_hit, "seconds": sum(loop.round_seconds), "images": loop.images,
                         "images_per_second": ips, "ratio": ips / ref_ips, "round_ratios": round_ratios})
        print(f"kdrepro {loop.variant.name:<32} {ips:8.1f} img/s  x{ips / ref_ips:.2f} "
              f"(rounds {min(round_ratios):.2f}-{max(round_ratios):.2f})", flush=True)

    built = next((loop for loop in loops if loop.cache_hit is False), None)
    cache = None
    if built is not None:
        per_image = built.prepare_seconds / cache_images
        teacher_per_image = ref.teacher_seconds / ref.images
        cache = {
            "images_built": cache_images, "views": CropFlip().num_views, "built_by_variant": built.variant.name,
            "seconds": built.prepare_seconds, "seconds_per_image": per_image,
            "extrapolated": cache_images < len(data.targets),
            "seconds_full_dataset": per_image * len(data.targets),
            "seconds_cifar10": per_image * CIFAR10_TRAIN_IMAGES,
            "teacher_seconds_per_image_reference": teacher_per_image,
            # runs after which the cache has paid for itself; independent of the data-set size
            "break_even_runs": {str(e): per_image / (teacher_per_image * e)
                                for e in (RECIPE["epochs"], SHORT_BUDGET_EPOCHS)},
        }
    headline = variants[0]
    best = max(variants, key=lambda v: v["images_per_second"])
    target = TARGETS[device.type]
    return {
        "pair": f"{teacher_name}->{student_name}", "teacher": teacher_name, "student": student_name,
        "reference": {"seconds": sum(ref.round_seconds), "teacher_seconds": ref.teacher_seconds,
                      "ranking_pass_seconds": rank_seconds, "ranking_charged_seconds": rank_per_step * args.steps,
                      "images": ref.images, "images_per_second": ref_ips,
                      "images_per_second_without_ranking": ref.images / sum(ref.round_seconds),
                      "teacher_fraction": ref.teacher_seconds / ref_seconds},
        "kdrepro": variants, "headline_variant": headline["variant"], "ratio": headline["ratio"],
        "best_variant": best["variant"], "best_ratio": best["ratio"],
        "target": target, "met": headline["ratio"] >= target, "cache": cache, "kdrepro_train_images": cache_images,
    }


# ------------------------------------------------------------------------------------------ report
def machine(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": import_torchvision().__version__, "numpy": np.__version__,
            "kdrepro": kdrepro.__version__, "platform": platform.platform(), "cpu": cpu_model(),
            "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device.type}
    if hasattr(os, "getloadavg"):
        info["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        git = ["git", "-C", str(REPO)]
        commit = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
        info["git_commit"] = commit + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        info["git_commit"] = None
    return info


def display_path(path: Path) -> str:
    """``path`` relative to the repository when inside it (the report is committed), else absolute."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(rows: list[dict]) -> list[str]:
    lines = ["| pair | reference img/s | kdrepro img/s | ratio | target | met | best variant (ratio) |",
             "|---|---:|---:|---:|---:|:---:|---|"]
    for r in rows:
        k = r["kdrepro"][0]
        lines.append(f"| {r['pair']} | {r['reference']['images_per_second']:.1f} | {k['images_per_second']:.1f} | "
                     f"{r['ratio']:.2f}x | {r['target']:g}x | {'yes' if r['met'] else 'no'} | "
                     f"{r['best_variant']} ({r['best_ratio']:.2f}x) |")
    return lines


def details(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        ref = r["reference"]
        lines += ["", f"### {r['pair']}", "",
                  f"Reference: {ref['images_per_second']:.1f} img/s with the ranking pass charged "
                  f"({ref['images_per_second_without_ranking']:.1f} img/s without it); the live teacher forward "
                  f"takes {ref['teacher_fraction']:.0%} of its time; one ranking pass over the training set "
                  f"takes {ref['ranking_pass_seconds']:.2f} s.", "",
                  "| kdrepro variant | img/s | ratio to reference | ratio by round | prepare_teacher s |",
                  "|---|---:|---:|---|---:|"]
        for k in r["kdrepro"]:
            note = {None: "live", True: "cache hit", False: "cache built"}[k["cache_hit"]]
            by_round = ", ".join(f"{x:.2f}" for x in k["round_ratios"])
            lines.append(f"| {k['variant']} | {k['images_per_second']:.1f} | {k['ratio']:.2f}x | {by_round} | "
                         f"{k['prepare_seconds']:.2f} ({note}) |")
        c = r["cache"]
        if c:
            ext = " (extrapolated linearly per image)" if c["extrapolated"] else ""
            be = c["break_even_runs"]
            lines += ["", f"Teacher-logit cache: {c['seconds']:.1f} s for {c['images_built']} images x {c['views']} "
                      f"views ({c['seconds_per_image'] * 1000:.0f} ms per image); whole data set "
                      f"{c['seconds_full_dataset'] / 60:.1f} min{ext}, full CIFAR-10 (50,000 images) "
                      f"{c['seconds_cifar10'] / 60:.1f} min{ext}. Break-even after "
                      f"{be[str(RECIPE['epochs'])]:.2f} runs of {RECIPE['epochs']} epochs, "
                      f"{be[str(SHORT_BUDGET_EPOCHS)]:.2f} runs of {SHORT_BUDGET_EPOCHS} epochs "
                      "(cache cost / reference teacher-forward time per run)."]
    return lines


def write_report(report: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"bench_{report['machine']['device']}"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    m, o = report["machine"], report["options"]
    hw = m.get("gpu") or f"{m['cpu']}, {m['cpu_cores']} cores"
    md = [f"# KD throughput: kdrepro vs the authors' loop ({m['device']})", "",
          f"{report['date']} on {hw}; torch {m['torch']}, torchvision {m['torchvision']}, python {m['python']}, "
          f"{m['torch_threads']} torch threads, kdrepro {m['kdrepro']} (git {m['git_commit']}).", "",
          f"Data: {report['data']}. {o['steps']} timed steps of batch {o['batch_size']} after {o['warmup']} warm-up "
          f"steps, in {o['rounds']} interleaved rounds; reference DataLoader with {o['workers']} workers. "
          f"1-minute load average {m.get('load_average_1min_at_start')} at the start, {m.get('load_average_1min_at_end')} at "
          "the end (other jobs on the machine slow every loop). Generated by `benchmarks/bench_kd.py`.", ""]
    md += table(report["pairs"]) + details(report["pairs"])
    md_path.write_text("\n".join(md) + "\n")
    return json_path, md_path


# ------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--pairs", default="resnet110:resnet20,resnet56:resnet20",
                   help="comma-separated teacher:student model pairs")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per loop")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up steps before them")
    p.add_argument("--rounds", type=int, default=3,
                   help="the timed steps run in this many rounds, the loops taking turns (fair under varying load)")
    p.add_argument("--batch-size", type=int, default=RECIPE["batch_size"], help="batch size of both loops")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes of the reference loop")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--cache-images", type=int, default=None,
                   help="images to build the teacher-logit cache for (then extrapolated); default 128 on CPU, "
                        "all (0) on GPU")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"kdrepro variants to time, first = headline; from {', '.join(VARIANTS)}")
    p.add_argument("--data", default="auto", choices=["auto", "cifar10-5k", "synthetic"],
                   help="auto: cifar10-5k when found, else synthetic images")
    p.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks", help="output folder")
    args = p.parse_args(argv)
    for name in ("steps", "warmup", "rounds", "batch_size", "workers"):
        if getattr(args, name) < (1 if name in ("steps", "rounds", "batch_size") else 0):
            p.error(f"--{name.replace('_', '-')}={getattr(args, name)} is too small")
    if args.cache_images is not None and args.cache_images < 0:
        p.error(f"--cache-images={args.cache_images}: use a positive count, or 0 for all images")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        p.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    args.pairs = [q.strip() for q in args.pairs.split(",") if q.strip()]
    for pair in args.pairs:
        names = pair.split(":")
        bad = [n for n in names if n not in list_models()]
        if len(names) != 2 or bad:
            p.error(f"--pairs: {pair!r} must be teacher:student with names from kdrepro.models.list_models()")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
    except RuntimeError as err:
        raise SystemExit(f"--device {args.device}: {err}") from None
    if args.cache_images is None:
        args.cache_images = 128 if device.type == "cpu" else 0
    data = load_images(args.data)
    print(f"device {device}, {torch.get_num_threads()} threads; data: {data.source}")
    load_before = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="kdrepro-bench-") as tmp:
        rows = [bench_pair(pair, data, device, args, Path(tmp)) for pair in args.pairs]
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {**machine(device), "load_average_1min_at_start": load_before}, "data": data.source,
              "options": {k: display_path(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "pairs": rows}
    print()
    print("\n".join(table(rows) + details(rows)))
    json_path, md_path = write_report(report, args.out)
    print(f"\nwrote {json_path} and {md_path}")
    return report


if __name__ == "__main__":
    main()
