"""Tensor-resident image data sets.

Every data set is held in memory as one ``uint8`` tensor of images ``[N, C, H, W]`` and one ``int64``
tensor of targets, so that training can move it to the device once and augment whole batches there
(:mod:`kdrepro.augment`), in the style of airbench.

:func:`load_dataset` reads the real on-disk formats itself:

========================  ============================================================================
name                      source
========================  ============================================================================
``cifar10``               ``cifar-10-batches-py/`` (the python version: pickled batches)
``cifar100``              ``cifar-100-python/`` (100 fine labels)
``svhn``                  ``train_32x32.mat`` / ``test_32x32.mat`` (the ``extra`` split is not used)
``cinic10``               ``CINIC-10/{train,test}/<class>/*.png`` (``valid/`` is not used)
``cifar10-5k``            a fixed 5,085/1,017-image subset of CIFAR-10 (see :func:`build_cifar10_5k`)
``digits``                scikit-learn's bundled 8x8 digits: the offline default, needs no download
``npz``                   a user's ``.npz`` with ``x_train, y_train, x_test, y_test`` (option ``path=``)
``imagefolder``           a user's ``<path>/{train,test}/<class>/*.png|jpg`` (option ``path=``)
========================  ============================================================================

Files are searched for in, in order: the ``root`` argument, the ``KDREPRO_DATA`` environment variable,
``./data``. ``download=True`` downloads into the first of those. Normalisation statistics are those of
the training split (published values where the literature fixes them, as in the authors' code
``HaoranZhao1988/kd``, ``train_cinic.py``); the test split always uses the training split's statistics.

Files are validated while read: a truncated or malformed file raises :class:`CorruptDatasetError`, never
a silently partial data set. CIFAR batches are Python pickles: load them only from a trusted source.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from pydantic import BaseModel, BeforeValidator, ConfigDict

from .registry import Registry
from .values import Float, PositiveInt, Seed

__all__ = [
    "DATASETS",
    "DataOptions",
    "DataSet",
    "register_dataset",
    "ImageDataset",
    "DatasetNotFoundError",
    "CorruptDatasetError",
    "load_dataset",
    "list_datasets",
    "build_cifar10_5k",
    "data_fingerprint",
    "split_fingerprint",
    "CIFAR10_CLASSES",
]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# Published per-channel statistics (pixel values / 255).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # authors' train_cinic.py
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)  # authors' train_cinic.py
SVHN_MEAN, SVHN_STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)  # SVHN train split, widely used
CINIC10_MEAN = (0.47889522, 0.47227842, 0.43047404)  # CINIC-10 README; authors' train_cinic.py
CINIC10_STD = (0.24205776, 0.23828046, 0.25874835)

CINIC10_URL = "https://datashare.ed.ac.uk/bitstream/handle/10283/3192/CINIC-10.tar.gz"
CINIC10_MD5 = "6ee4d0c996905fe93221de577967a372"
CIFAR10_5K_PER_BATCH = 1017
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are in none of the searched places."""


class CorruptDatasetError(ValueError):
    """A data set file exists but is truncated, malformed or inconsistent."""


class ImageDataset(torch.utils.data.Dataset):
    """A whole split held as tensors: ``images`` uint8 ``[N, C, H, W]``, ``targets`` int64 ``[N]``.

    Items are ``(image, target, index)`` with ``image`` the float32 normalised ``[C, H, W]`` tensor; no
    augmentation is applied here (batched augmentation lives in :mod:`kdrepro.augment`). An optional
    ``transform`` is applied to the normalised float image. The tensors are treated as immutable.
    """

    def __init__(
        self,
        name: str,
        images: torch.Tensor,
        targets: torch.Tensor,
        classes: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 tensor [N, C, H, W]; got {images.dtype} {tuple(images.shape)}")
        if targets.dim() != 1 or len(targets) != len(images):
            raise ValueError(
                f"targets must be 1-D with one entry per image ({len(images)}); got {tuple(targets.shape)}"
            )
        channels = images.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need {channels} entries (one per channel); got {len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive; got {tuple(std)}")
        targets = targets.to(torch.int64)
        if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= len(classes)):
            raise ValueError(
                f"targets must lie in [0, {len(classes)}) for {len(classes)} classes; "
                f"got range [{int(targets.min())}, {int(targets.max())}]"
            )
        self.name = name
        self.images = images
        self.targets = targets
        self.classes = [str(c) for c in classes]
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        index = int(i)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {i} is out of range for data set {self.name!r} of {len(self)} images")
        index %= len(self)
        image = self.normalize(self.images[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index]), index

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 ``[..., C, H, W]`` -> float32 ``(x / 255 - mean) / std``, on ``x``'s device."""
        if x_uint8.dtype != torch.uint8:
            raise TypeError(f"normalize expects uint8 pixels 0..255; got {x_uint8.dtype} (pass the raw images)")
        if x_uint8.dim() < 3 or x_uint8.shape[-3] != len(self.mean):
            raise ValueError(
                f"normalize expects [..., {len(self.mean)}, H, W] images for {self.name!r}; got {tuple(x_uint8.shape)}"
            )
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x_uint8.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x_uint8.device).view(-1, 1, 1)
        return (x_uint8.to(torch.float32) / 255.0 - mean) / std

    def fingerprint(self) -> str:
        """16 hex digits of a BLAKE2b hash of the images and targets (shapes, dtypes and bytes)."""
        digest = hashlib.blake2b(digest_size=8)
        for tensor in (self.images, self.targets):
            array = np.ascontiguousarray(tensor.detach().cpu().numpy())
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(memoryview(array).cast("B"))
        return digest.hexdigest()

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, n={len(self)}, image_shape={self.image_shape}, "
            f"num_classes={self.num_classes})"
        )


# --------------------------------------------------------------------------------------------------
# Search roots and errors


def _search_roots(root: str | os.PathLike | None) -> list[Path]:
    """``root``, then ``$KDREPRO_DATA``, then ``./data`` (absolute, without duplicates)."""
    candidates = [root, os.environ.get("KDREPRO_DATA") or None, "data"]
    roots: list[Path] = []
    for candidate in candidates:
        if candidate is not None:
            path = Path(candidate).expanduser().absolute()
            if path not in roots:
                roots.append(path)
    return roots


def _not_found(name: str, searched: Sequence[Path], how: str | None = None) -> DatasetNotFoundError:
    """The error for a missing data set; ``searched[0]``'s root is where ``download=True`` would put it."""
    lines = [f"Data set {name!r} not found. Searched:"] + [f"  {p}" for p in searched]
    if how is None:
        target = searched[0].parent
        how = (f"To download it into {target}, run: "
               f"kdrepro.data.load_dataset({name!r}, root={str(target)!r}, download=True)")
    lines.append(how)
    return DatasetNotFoundError("\n".join(lines))


def _corrupt(
    path: Path, problem: str, remedy: str = "delete it and download again with download=True"
) -> CorruptDatasetError:
    return CorruptDatasetError(f"{path}: {problem}; {remedy}.")


def _check_labels(path: Path, labels: np.ndarray, n: int, num_classes: int, remedy: str | None = None) -> np.ndarray:
    extra = () if remedy is None else (remedy,)
    if labels.ndim != 1 or len(labels) != n:
        raise _corrupt(path, f"expected {n} labels (one per image), found shape {labels.shape}", *extra)
    if not np.issubdtype(labels.dtype, np.integer):
        raise _corrupt(path, f"labels must be integers, found dtype {labels.dtype}", *extra)
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise _corrupt(path, f"labels must lie in [0, {num_classes}), found range [{labels.min()}, {labels.max()}]",
                       *extra)
    return labels.astype(np.int64)


def _channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of ``images / 255``, accumulated in float64 by chunks.

    A constant channel (std 0) gets std 1, i.e. it is only centred.
    """
    channels = images.shape[1]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    for start in range(0, len(images), 4096):
        chunk = images[start : start + 4096].astype(np.float64) / 255.0
        total += chunk.sum(axis=(0, 2, 3))
        total_sq += np.square(chunk).sum(axis=(0, 2, 3))
    count = len(images) * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) if s > 0 else 1.0 for s in std)


def _make(
    name: str, x: np.ndarray, y: np.ndarray, classes: Sequence[str], mean: Sequence[float], std: Sequence[float]
) -> ImageDataset:
    return ImageDataset(name, torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), classes, mean, std)


# --------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (python version: pickled dicts with 'data' [N, 3072] uint8, R, G, B planes)


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise _corrupt(path, "file is missing from the data set directory")
    try:
        with open(path, "rb") as handle:
            content = pickle.load(handle, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            ImportError, OSError) as err:
        raise _corrupt(path, f"cannot be unpickled ({type(err).__name__}: {err})") from err
    if not isinstance(content, dict):
        raise _corrupt(path, f"expected a pickled dict, found {type(content).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in content.items()}


def _read_cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file -> images ``[N, 3, 32, 32]`` uint8 and labels ``[N]`` int64."""
    batch = _unpickle(path)
    for key in ("data", label_key):
        if key not in batch:
            raise _corrupt(path, f"has no {key!r} entry (found {sorted(batch)})")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise _corrupt(path, f"'data' must be uint8 [N, 3072], found {data.dtype} {data.shape}")
    labels = _check_labels(path, np.asarray(batch[label_key]), len(data), num_classes)
    # Each row holds the 1024 red, then green, then blue values, each plane row-major.
    return data.reshape(-1, 3, 32, 32), labels


def _read_cifar_classes(path: Path, key: str, num_classes: int) -> list[str]:
    meta = _unpickle(path)
    names = meta.get(key)
    if names is None or len(names) != num_classes:
        raise _corrupt(path, f"expected {num_classes} class names under {key!r}")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _find_dir(roots: Sequence[Path], dirname: str) -> tuple[Path | None, list[Path]]:
    searched = [r / dirname for r in roots]
    return next((p for p in searched if p.is_dir()), None), searched


def _cifar_dir(name: str, roots: Sequence[Path], download: bool) -> Path:
    """The CIFAR folder in the first root that has one; ``download=True`` fetches or repairs it there."""
    dirname = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
    found, searched = _find_dir(roots, dirname)
    if not download:
        if found is None:
            raise _not_found(name, searched)
        return found
    from ._torchvision import import_torchvision

    datasets = import_torchvision().datasets
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    target = found.parent if found is not None else roots[0]
    target.mkdir(parents=True, exist_ok=True)
    # torchvision checks every file's MD5 and downloads the archive again when one is missing or damaged.
    cls(str(target), train=False, download=True)
    return target / dirname


def _load_cifar10(roots: list[Path], train: bool, download: bool) -> ImageDataset:
    """CIFAR-10 (Krizhevsky, 2009): 50,000 train / 10,000 test 32x32 RGB images, 10 classes."""
    folder = _cifar_dir("cifar10", roots, download)
    files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    parts = [_read_cifar_batch(folder / f, "labels", 10) for f in files]
    classes = _read_cifar_classes(folder / "batches.meta", "label_names", 10)
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return _make("cifar10", x, y, classes, CIFAR10_MEAN, CIFAR10_STD)


def _load_cifar100(roots: list[Path], train: bool, download: bool) -> ImageDataset:
    """CIFAR-100 with its 100 fine labels: 50,000 train / 10,000 test images."""
    folder = _cifar_dir("cifar100", roots, download)
    x, y = _read_cifar_batch(folder / ("train" if train else "test"), "fine_labels", 100)
    classes = _read_cifar_classes(folder / "meta", "fine_label_names", 100)
    return _make("cifar100", x, y, classes, CIFAR100_MEAN, CIFAR100_STD)


# --------------------------------------------------------------------------------------------------
# CIFAR-10-5k: a fixed real subset for CPU-scale experiments


def _cifar10_5k_arrays(cifar_dir: Path, per_batch: int) -> dict[str, np.ndarray]:
    """The first ``per_batch`` images of each training batch (in batch order) and of the test batch."""
    train = [_read_cifar_batch(cifar_dir / f"data_batch_{i}", "labels", 10) for i in range(1, 6)]
    test_x, test_y = _read_cifar_batch(cifar_dir / "test_batch", "labels", 10)
    for (x, _), f in zip(train + [(test_x, test_y)], [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        if len(x) < per_batch:
            raise _corrupt(cifar_dir / f, f"holds {len(x)} images, fewer than per_batch={per_batch}")
    return {
        "x_train": np.concatenate([x[:per_batch] for x, _ in train]),
        "y_train": np.concatenate([y[:per_batch] for _, y in train]),
        "x_test": test_x[:per_batch],
        "y_test": test_y[:per_batch],
    }


def build_cifar10_5k(
    cifar_root: str | os.PathLike, out_path: str | os.PathLike, per_batch: int = CIFAR10_5K_PER_BATCH
) -> Path:
    """Write ``cifar10-5k.npz`` from a full CIFAR-10 (python version) and return its path.

    ``cifar_root`` is the ``cifar-10-batches-py`` directory or a folder holding it. The subset is the first
    ``per_batch`` (1,017) images of each of the five training batches, batch 1 first, and the first
    ``per_batch`` of the test batch: 5,085 train and 1,017 test images, arrays ``x_train`` uint8
    ``[N, 3, 32, 32]``, ``y_train`` int64, ``x_test``, ``y_test``.
    """
    cifar_dir = Path(cifar_root)
    if not (cifar_dir / "data_batch_1").is_file() and (cifar_dir / "cifar-10-batches-py").is_dir():
        cifar_dir = cifar_dir / "cifar-10-batches-py"
    if not cifar_dir.is_dir():
        raise _not_found("cifar10", [cifar_dir])
    arrays = _cifar10_5k_arrays(cifar_dir, per_batch)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return out


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _load_cifar10_5k(
    roots: list[Path], train: bool, download: bool, path: str | os.PathLike | None = None,
    per_batch: int = CIFAR10_5K_PER_BATCH,
) -> ImageDataset:
    """CIFAR-10-5k: real CIFAR-10 images, the first 1,017 of each training batch and of the test batch.

    Looked for as: the ``path`` option; ``cifar10-5k.npz`` in the search roots; ``../shared/data/
    cifar10-5k.npz`` relative to the current directory and to the repository root; else built from a
    full CIFAR-10 in the search roots (downloaded when ``download=True``). A ``per_batch`` other than
    1,017 always builds from full CIFAR-10. Normalised with CIFAR-10's published statistics (not the
    subset's own, which differ in the third decimal) so that full-CIFAR-10 recipes apply unchanged.
    """
    if per_batch < 1:
        raise ValueError(f"per_batch must be a positive number of images per batch; got {per_batch}")
    if path is not None:
        candidates = [Path(path).expanduser().absolute()]
    elif per_batch == CIFAR10_5K_PER_BATCH:
        shared = Path("shared") / "data" / "cifar10-5k.npz"  # ../shared/data/ beside the project
        candidates = [r / "cifar10-5k.npz" for r in roots] + [Path.cwd().parent / shared, _repo_root().parent / shared]
    else:
        candidates = []
    npz = next((c for c in candidates if c.is_file()), None)
    if npz is not None:
        arrays = _read_npz_arrays(npz)
        for split, n in (("train", 5 * per_batch), ("test", per_batch)):
            x = arrays[f"x_{split}"]
            if x.shape != (n, 3, 32, 32) or x.dtype != np.uint8:
                raise _corrupt(npz, f"'x_{split}' must be uint8 ({n}, 3, 32, 32), found {x.dtype} {x.shape}",
                               "rebuild it with kdrepro.data.build_cifar10_5k")
            arrays[f"y_{split}"] = _check_labels(npz, arrays[f"y_{split}"], n, 10)
    elif path is not None:
        raise _not_found("cifar10-5k", candidates, "Check the path= option, or build the file with "
                         "kdrepro.data.build_cifar10_5k('<folder with cifar-10-batches-py>', path).")
    else:
        cifar, searched = _find_dir(roots, "cifar-10-batches-py")
        if cifar is None and not download:
            raise _not_found(
                "cifar10-5k", candidates + searched,
                f"It is built from full CIFAR-10; to download that into {roots[0]}, run: "
                f"kdrepro.data.load_dataset('cifar10-5k', root={str(roots[0])!r}, download=True)",
            )
        arrays = _cifar10_5k_arrays(_cifar_dir("cifar10", roots, download), per_batch)
    split = "train" if train else "test"
    return _make("cifar10-5k", arrays[f"x_{split}"], arrays[f"y_{split}"], CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD)


# --------------------------------------------------------------------------------------------------
# SVHN (cropped digits, .mat files: X [32, 32, 3, N] uint8, y [N, 1] with 10 meaning digit 0)


def _load_svhn(roots: list[Path], train: bool, download: bool) -> ImageDataset:
    """SVHN cropped digits (Netzer et al., 2011): 73,257 train / 26,032 test images.

    ``train=True`` is the ``train`` split only: the ``extra`` split (531,131 images) is not used, as in
    the knowledge-distillation lineage the authors' code builds on. Label 10 in the files means digit 0.
    """
    filename = "train_32x32.mat" if train else "test_32x32.mat"
    searched = [p for r in roots for p in (r / filename, r / "svhn" / filename)]
    found = next((p for p in searched if p.is_file()), None)
    if found is None and not download:
        raise _not_found("svhn", searched)
    if download:  # torchvision checks the file's MD5 and downloads it again when missing or damaged
        from ._torchvision import import_torchvision

        target = found.parent if found is not None else roots[0] / "svhn"
        target.mkdir(parents=True, exist_ok=True)
        import_torchvision().datasets.SVHN(str(target), split="train" if train else "test", download=True)
        found = target / filename
    import scipy.io

    try:
        mat = scipy.io.loadmat(found)
    except (ValueError, TypeError, OSError, EOFError, KeyError, IndexError, scipy.io.matlab.MatReadError) as err:
        raise _corrupt(found, f"cannot be read as a MATLAB file ({type(err).__name__}: {err})") from err
    if "X" not in mat or "y" not in mat:
        raise _corrupt(found, f"must hold arrays 'X' and 'y', found {sorted(k for k in mat if not k.startswith('__'))}")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"])
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise _corrupt(found, f"'X' must be uint8 (32, 32, 3, N), found {x.dtype} {x.shape}")
    y = y.reshape(-1)
    if len(y) != x.shape[3] or (len(y) and (y.min() < 1 or y.max() > 10)) or np.any(y != np.round(y)):
        raise _corrupt(found, f"'y' must hold {x.shape[3]} integer labels in 1..10")
    labels = (y.astype(np.int64) % 10)
    images = np.transpose(x, (3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W)
    return _make("svhn", images, labels, [str(d) for d in range(10)], SVHN_MEAN, SVHN_STD)


# --------------------------------------------------------------------------------------------------
# Image folders (CINIC-10 and user folders)


def _read_image(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise _corrupt(path, f"is not a readable image ({type(err).__name__}: {err})",
                       "replace or delete the file") from err
    return array[:, :, None] if array.ndim == 2 else array


def _read_image_folder(
    split_dir: Path, classes: Sequence[str], mode: str, size: tuple[int, int] | None, expected_hw=None
) -> tuple[np.ndarray, np.ndarray]:
    """``split_dir/<class>/*`` -> images ``[N, C, H, W]`` and labels, classes in the given order, files sorted."""
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        class_dir = split_dir / cls
        if not class_dir.is_dir():
            continue
        for file in sorted(p for p in class_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES):
            array = _read_image(file, mode, size)
            expected_hw = expected_hw or array.shape[:2]
            if array.shape[:2] != tuple(expected_hw):
                raise CorruptDatasetError(
                    f"{file}: image is {array.shape[0]}x{array.shape[1]} (HxW) but the data set's images are "
                    f"{expected_hw[0]}x{expected_hw[1]}; all images must share one size (for your own "
                    "folders, load_dataset('imagefolder', path=..., size=(H, W)) resizes them)"
                )
            images.append(array)
            labels.append(label)
    if not images:
        raise _corrupt(split_dir, f"holds no {'/'.join(_IMAGE_SUFFIXES)} images in its class folders",
                       "check the folder layout <path>/<split>/<class>/<image>")
    return np.stack(images).transpose(0, 3, 1, 2), np.asarray(labels, dtype=np.int64)


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _find_cinic_dir(roots: Sequence[Path]) -> tuple[Path | None, list[Path]]:
    searched = [r / d for r in roots for d in ("CINIC-10", "cinic10", "cinic-10")]
    searched += [r / "CINIC-10" / "CINIC-10" for r in roots]
    found = next((p for p in searched if (p / "train").is_dir() and (p / "test").is_dir()), None)
    return found, searched


def _load_cinic10(roots: list[Path], train: bool, download: bool) -> ImageDataset:
    """CINIC-10 (Darlow et al., 2018): 90,000 train / 90,000 test 32x32 PNGs in CIFAR-10's 10 classes.

    Reads ``train/`` or ``test/`` only; ``valid/`` is never used (neither the paper nor the authors'
    ``train_cinic.py`` uses it). Any grey-scale PNG is converted to RGB, as torchvision's ``ImageFolder``
    (the authors' loader) does. Decoding 90,000 PNGs takes a while on every load.
    """
    folder, searched = _find_cinic_dir(roots)
    if folder is None:
        if not download:
            raise _not_found("cinic10", searched)
        from ._torchvision import import_torchvision

        import_torchvision()
        from torchvision.datasets.utils import download_and_extract_archive

        roots[0].mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(
            CINIC10_URL, str(roots[0]), str(roots[0] / "CINIC-10"), md5=CINIC10_MD5, remove_finished=True
        )
        folder, searched = _find_cinic_dir(roots[:1])
        if folder is None:
            raise _corrupt(roots[0] / "CINIC-10", "the extracted archive has no train/ and test/ folders")
    split_dir = folder / ("train" if train else "test")
    missing = sorted(set(CIFAR10_CLASSES) - set(_class_dirs(split_dir)))
    if missing:
        raise _corrupt(split_dir, f"lacks the class folders {missing}")
    x, y = _read_image_folder(split_dir, CIFAR10_CLASSES, "RGB", None, expected_hw=(32, 32))
    return _make("cinic10", x, y, CIFAR10_CLASSES, CINIC10_MEAN, CINIC10_STD)


def _user_path(name: str, path: str | os.PathLike | None) -> Path:
    if path is None:
        raise ValueError(f"data set {name!r} needs the option path=...: load_dataset({name!r}, path='/path/to/data')")
    resolved = Path(path).expanduser().absolute()
    if not resolved.exists():
        raise _not_found(name, [resolved], "Check the path= option.")
    return resolved


def _load_imagefolder(
    roots: list[Path], train: bool, download: bool, path: str | os.PathLike | None = None,
    size: tuple[int, int] | None = None, channels: int = 3,
) -> ImageDataset:
    """A user's ``<path>/train/<class>/*.png|jpg`` and ``<path>/test/<class>/...``.

    Classes are the sorted sub-folder names of ``train/`` (torchvision's ``ImageFolder`` convention).
    ``size=(H, W)`` resizes every image (bilinear); without it all images must share one size.
    ``channels`` is 3 (RGB) or 1 (grey). Statistics come from the training images, so both splits are read.
    """
    folder = _user_path("imagefolder", path)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB); got {channels}")
    if size is not None:
        size = (int(size[0]), int(size[1]))
    for split in ("train", "test"):
        if not (folder / split).is_dir():
            raise _not_found("imagefolder", [folder / split], "Lay the images out as <path>/train/<class>/* "
                             "and <path>/test/<class>/*.")
    classes = _class_dirs(folder / "train")
    unknown = sorted(set(_class_dirs(folder / "test")) - set(classes))
    if unknown:
        raise ValueError(f"{folder / 'test'}: class folders {unknown} do not exist under {folder / 'train'}")
    mode = "RGB" if channels == 3 else "L"
    x_train, y_train = _read_image_folder(folder / "train", classes, mode, size)
    mean, std = _channel_stats(x_train)
    if train:
        x, y = x_train, y_train
    else:
        x, y = _read_image_folder(folder / "test", classes, mode, size, expected_hw=x_train.shape[2:])
    return _make("imagefolder", x, y, classes, mean, std)


# --------------------------------------------------------------------------------------------------
# User arrays (.npz) and scikit-learn digits


def _read_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """All arrays of a ``.npz`` file; it must hold ``x_train, y_train, x_test, y_test``."""
    import zipfile

    remedy = "recreate it with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise _corrupt(path, "is a single .npy array, not an .npz archive", remedy)
        with archive:
            arrays = {k: archive[k] for k in archive.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        if isinstance(err, CorruptDatasetError):
            raise
        if "allow_pickle" in str(err) or "pickle" in str(err).lower():
            raise _corrupt(path, "holds Python objects (pickled arrays), which kdrepro does not load (loading them can "
                                 "run code)", "save plain numeric arrays") from None
        raise _corrupt(path, f"is not a readable .npz archive ({type(err).__name__}: {str(err).splitlines()[0]})",
                       remedy) from None
    missing = {"x_train", "y_train", "x_test", "y_test"} - set(arrays)
    if missing:
        raise _corrupt(path, f"lacks the arrays {sorted(missing)} (found {sorted(arrays)})", remedy)
    return arrays


def _to_nchw(path: Path, key: str, x: np.ndarray, layout: str | None) -> np.ndarray:
    if x.dtype != np.uint8 or x.ndim != 4:
        raise _corrupt(path, f"{key!r} must be a uint8 array [N, C, H, W] or [N, H, W, C], found {x.dtype} {x.shape}",
                       "convert it with x.astype(numpy.uint8) after scaling to 0..255")
    if layout is None:
        nchw, nhwc = x.shape[1] in (1, 3), x.shape[3] in (1, 3)
        if nchw == nhwc:
            raise ValueError(
                f"{path}: cannot tell whether {key!r} of shape {x.shape} is NCHW or NHWC (channels must be 1 or "
                f"3); pass layout='NCHW' or layout='NHWC'"
            )
        layout = "NCHW" if nchw else "NHWC"
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC'; got {layout!r}")
    return x if layout == "NCHW" else x.transpose(0, 3, 1, 2)


def _load_npz(
    roots: list[Path], train: bool, download: bool, path: str | os.PathLike | None = None,
    layout: str | None = None,
) -> ImageDataset:
    """A user's ``.npz`` with uint8 ``x_train, x_test`` (NCHW or NHWC) and integer ``y_train, y_test``.

    The layout is detected from which axis has size 1 or 3 (``layout=`` settles ambiguous shapes). An
    optional ``classes`` array names the classes; otherwise they are ``'0'..str(max label)``.
    Statistics come from ``x_train``.
    """
    file = _user_path("npz", path)
    arrays = _read_npz_arrays(file)
    remedy = "fix the arrays in your file and save it again"
    for key in ("x_train", "x_test"):
        if arrays[key].ndim != 4 or len(arrays[key]) == 0:
            raise _corrupt(file, f"{key!r} must hold at least one image [N, C, H, W] or [N, H, W, C], found shape "
                                 f"{arrays[key].shape}", remedy)
    x_train = _to_nchw(file, "x_train", arrays["x_train"], layout)
    x_test = _to_nchw(file, "x_test", arrays["x_test"], layout)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise _corrupt(file, f"x_train images are {x_train.shape[1:]} but x_test images are {x_test.shape[1:]}",
                       "save both splits with one image shape")
    y_train = np.asarray(arrays["y_train"])
    if "classes" in arrays:
        classes = [str(c) for c in arrays["classes"].reshape(-1)]
    else:  # as many classes as the training labels name: 0..max(y_train)
        top = int(y_train.max()) if y_train.size and np.issubdtype(y_train.dtype, np.integer) else 0
        classes = range(top + 1)  # names made below, once the labels are checked
    y_train = _check_labels(file, y_train, len(x_train), len(classes), remedy)
    present = np.unique(y_train)
    if len(present) != len(classes):
        # the first absent classes lie below len(present) + 5 (never build the whole range: a label of 1e8)
        absent = np.setdiff1d(np.arange(min(len(classes), len(present) + 5)), present)[:5].tolist()
        raise _corrupt(file, f"the training labels must use every class 0..{len(classes) - 1}; "
                             f"{len(classes) - len(present)} class(es) have no training image (first: {absent})",
                       "relabel the classes as 0..C-1, every one with training images")
    classes = [str(c) for c in classes]
    x, key = (x_train, "y_train") if train else (x_test, "y_test")
    y = y_train if train else _check_labels(file, np.asarray(arrays[key]), len(x), len(classes), remedy)
    mean, std = _channel_stats(x_train)
    return _make("npz", x, y, classes, mean, std)


def _load_digits(
    roots: list[Path], train: bool, download: bool, test_fraction: float = 0.2, seed: int = 0
) -> ImageDataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, UCI optdigits test set): no download.

    Pixel values 0..16 are scaled to 0..255 (``round(v * 255 / 16)``), one channel. The split is
    stratified and deterministic: for each class in turn, a ``numpy.random.default_rng(seed)`` permutation
    of that class's indices puts ``round(test_fraction * n_class)`` images in the test split; both splits
    keep the original order. The defaults give 1,438 train / 359 test images. Statistics come from the
    training images. This is the package's embedded offline default.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1; got {test_fraction}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(y), dtype=bool)
    for label in range(10):
        members = np.flatnonzero(y == label)
        is_test[rng.permutation(members)[: int(round(test_fraction * len(members)))]] = True
    mean, std = _channel_stats(x[~is_test])
    keep = ~is_test if train else is_test
    return _make("digits", x[keep], y[keep], [str(d) for d in range(10)], mean, std)


# --------------------------------------------------------------------------------------------------
# The registry of data sets

class DataOptions(BaseModel):
    """A data set's typed options (``dataset_options`` of a run config); a data set without options has
    exactly these (none). Values are coerced once, when a run config is resolved."""

    model_config = ConfigDict(extra="forbid", frozen=True)


#: a file or folder path (``os.PathLike`` accepted, kept as text)
PathOption = Annotated[str, BeforeValidator(lambda v: os.fspath(v) if isinstance(v, os.PathLike) else v)]


class PathOptions(DataOptions):
    path: PathOption | None = None


class Cifar10_5kOptions(PathOptions):
    per_batch: PositiveInt = CIFAR10_5K_PER_BATCH


class NpzOptions(PathOptions):
    layout: str | None = None


class ImageFolderOptions(PathOptions):
    size: tuple[PositiveInt, PositiveInt] | None = None
    channels: PositiveInt = 3


class DigitsOptions(DataOptions):
    test_fraction: Float = 0.2
    seed: Seed = 0


@dataclass(frozen=True)
class DataSet:
    """A registered data set: ``load(roots, train, download, **options) -> ImageDataset``, its typed
    options, its number of classes when fixed, and ``sources(roots, options)``: the files it reads (for the
    fingerprint's memo; None when it reads no files of its own)."""

    load: Callable[..., ImageDataset]
    Options: type[DataOptions] = DataOptions
    num_classes: int | None = None
    sources: Callable[[list[Path], dict], list[Path]] | None = None


#: every data set by name (``--set dataset=<name>``); a plugin adds its own with :func:`register_dataset`
DATASETS: Registry[DataSet] = Registry("data set", hyphens=True)


def register_dataset(name: str, options: type[DataOptions] = DataOptions, num_classes: int | None = None,
                     sources: Callable[[list[Path], dict], list[Path]] | None = None):
    """``@register_dataset("name", options=MyOptions)`` on ``load(roots, train, download, **options)``: the
    data set ``name`` (lower case), its options a :class:`DataOptions` model. ``roots`` are the folders to
    search (:func:`load_dataset`); the loader returns an :class:`ImageDataset` (uint8 images
    ``[N, C, H, W]``, int64 targets, class names and the per-channel normalisation). Registering a data set changes no run id."""
    def wrap(load: Callable[..., ImageDataset]) -> Callable[..., ImageDataset]:
        DATASETS.register(name, DataSet(load, options, num_classes, sources))
        return load
    return wrap


def _walk(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def _path_sources(roots: list[Path], options: dict) -> list[Path]:
    if options.get("path") is None:
        return []
    path = Path(options["path"]).expanduser().absolute()
    return [path] if path.is_file() else _walk(path)


def _cifar_sources(name: str) -> Callable[[list[Path], dict], list[Path]]:
    def sources(roots: list[Path], options: dict) -> list[Path]:
        folder, _ = _find_dir(roots, {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name])
        return _walk(folder) if folder else []
    return sources


def _svhn_sources(roots: list[Path], options: dict) -> list[Path]:
    found = [next((p for r in roots for p in (r / f, r / "svhn" / f) if p.is_file()), None)
             for f in ("train_32x32.mat", "test_32x32.mat")]
    return [p for p in found if p is not None]


def _cifar10_5k_sources(roots: list[Path], options: dict) -> list[Path]:
    if options.get("path") is not None:
        return _path_sources(roots, options)
    shared = Path("shared") / "data" / "cifar10-5k.npz"
    candidates = [r / "cifar10-5k.npz" for r in roots] + [Path.cwd().parent / shared, _repo_root().parent / shared]
    npz = next((c for c in candidates if c.is_file()), None) if options.get("per_batch", CIFAR10_5K_PER_BATCH) \
        == CIFAR10_5K_PER_BATCH else None
    return [npz] if npz else _cifar_sources("cifar10")(roots, {})


def _cinic_sources(roots: list[Path], options: dict) -> list[Path]:
    folder, _ = _find_cinic_dir(roots)
    return _walk(folder / "train") + _walk(folder / "test") if folder else []


register_dataset("cifar10", num_classes=10, sources=_cifar_sources("cifar10"))(_load_cifar10)
register_dataset("cifar100", num_classes=100, sources=_cifar_sources("cifar100"))(_load_cifar100)
register_dataset("svhn", num_classes=10, sources=_svhn_sources)(_load_svhn)
register_dataset("cinic10", num_classes=10, sources=_cinic_sources)(_load_cinic10)
register_dataset("cifar10-5k", Cifar10_5kOptions, num_classes=10, sources=_cifar10_5k_sources)(_load_cifar10_5k)
register_dataset("digits", DigitsOptions, num_classes=10)(_load_digits)
register_dataset("npz", NpzOptions, sources=_path_sources)(_load_npz)
register_dataset("imagefolder", ImageFolderOptions, sources=_path_sources)(_load_imagefolder)


def _dataset(name: str) -> tuple[str, DataSet]:
    """``(registered name, data set)`` of ``name`` (any case); ``ValueError`` naming the valid names."""
    key = name.lower() if isinstance(name, str) else name
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS.names())}")
    return key, DATASETS.get(key)


def dataset_num_classes(name: str) -> int | None:
    """The number of classes of a registered data set when it is fixed (None: it depends on the files)."""
    key = name.lower() if isinstance(name, str) else name
    return DATASETS.get(key).num_classes if key in DATASETS else None


# --------------------------------------------------------------------------------------------------
# Data identity: what a run id records about its data (kdrepro.resolution.ResolvedRun.identity)

#: content fingerprints (:func:`split_fingerprint`) of fixed data sets, used when the files are not here
#: (planning without the data); checked against the files whenever they are
KNOWN_FINGERPRINTS = {"cifar10-5k": "f1516047c8d7b99c"}
_OFFICIAL = ("cifar10", "cifar100", "svhn")
_FINGERPRINTS: dict[tuple, str] = {}


def split_fingerprint(train: "ImageDataset", test: "ImageDataset") -> str:
    """16 hex digits identifying the content of a data set: both splits' images and targets and the class
    names (a BLAKE2b hash over :meth:`ImageDataset.fingerprint` of each split)."""
    digest = hashlib.blake2b(digest_size=8)
    for part in (train.fingerprint(), test.fingerprint(), "\x1f".join(map(str, train.classes))):
        digest.update(part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def _official_files(name: str) -> dict[str, str]:
    """``{file name: MD5}`` of the official release (torchvision's own lists)."""
    from ._torchvision import import_torchvision

    datasets = import_torchvision().datasets
    if name == "svhn":
        return {v[1]: v[2] for k, v in datasets.SVHN.split_list.items() if k in ("train", "test")}
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    return {f: md5 for f, md5 in cls.train_list + cls.test_list}


#: images per class and split of the official CINIC-10 release (train and test; valid/ is not used)
CINIC10_PER_CLASS = 9000


def _official_cinic_layout(files: list[Path]) -> bool:
    """Whether CINIC-10's train/ and test/ hold exactly the release's 9,000 PNGs per class (a layout check:
    the release has no per-file checksums; its archive's MD5 is checked when kdrepro downloads it)."""
    counts: dict[tuple[str, str], int] = {}
    for f in files:
        if f.suffix.lower() == ".png":
            key = (f.parent.parent.name, f.parent.name)
            counts[key] = counts.get(key, 0) + 1
    return len(counts) == 20 and all(n == CINIC10_PER_CLASS for n in counts.values())


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_option_defaults(name: str) -> dict:
    """``{option: default}`` of data set ``name`` (its :class:`DataOptions` model)."""
    _, spec = _dataset(name)
    return {k: f.default for k, f in spec.Options.model_fields.items()}


def check_dataset_options(name: str, options: dict) -> dict:
    """``options`` of data set ``name`` coerced once to their declared types (``"1e-1"`` from YAML is a
    float, ``true`` is not a seed); raises ``ValueError`` with one line naming the option, the value and
    what is allowed, or the options the data set accepts. Ranges are the loader's to check."""
    from .values import typed_options

    _, spec = _dataset(name)
    return typed_options(spec.Options, options, "dataset_options", f"data set {name!r}")


def data_fingerprint(name: str, root: str | os.PathLike | None = None, **options) -> str:
    """What identifies a data set's content in a run id, independent of where it lives.

    * CIFAR-10, CIFAR-100, SVHN: ``"<name>-official"`` when every file matches the official release's MD5
      (or when the files are not here yet: they are checked when a run loads them), else the content
      fingerprint of the files found (a modified copy gets its own runs);
    * CINIC-10: ``"cinic10-official"`` when its train/ and test/ have the release's layout (9,000 PNGs per
      class and split; the release publishes no per-file checksums) or are not here yet;
    * every other data set (and CIFAR files that differ from the release): :func:`split_fingerprint` of
      the loaded splits. For ``cifar10-5k`` without its files, the known fingerprint of the official
      subset (:data:`KNOWN_FINGERPRINTS`).

    Memoised per process by the files' paths, sizes and modification times, so a changed file is
    fingerprinted again. Raises like :func:`load_dataset` when the data are needed and missing.
    """
    key_name, spec = _dataset(name)
    roots = _search_roots(root)
    sources = spec.sources(roots, options) if spec.sources is not None else []
    stats = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sources)
    key = (key_name, tuple(map(str, roots)), repr(sorted(options.items())), stats)
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = _compute_fingerprint(key_name, root, options, sources)
    return _FINGERPRINTS[key]


def _compute_fingerprint(name: str, root, options: dict, sources: list[Path]) -> str:
    if name in _OFFICIAL:
        official = _official_files(name)
        found = {p.name: p for p in sources if p.name in official}
        if not found or (set(found) == set(official) and all(_md5(p) == official[n] for n, p in found.items())):
            return f"{name}-official"
    if name in KNOWN_FINGERPRINTS and not sources and set(options) <= {"path"} and "path" not in options:
        return KNOWN_FINGERPRINTS[name]
    if name == "cinic10" and (not sources or _official_cinic_layout(sources)):
        return "cinic10-official"
    train = load_dataset(name, root=root, train=True, **options)
    test = load_dataset(name, root=root, train=False, **options)
    return split_fingerprint(train, test)


def list_datasets() -> list[str]:
    """The names :func:`load_dataset` accepts (:data:`DATASETS`)."""
    return list(DATASETS.names())


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    train: bool = True,
    download: bool = False,
    **options,
) -> ImageDataset:
    """Load split ``train``/test of data set ``name`` as an :class:`ImageDataset`.

    ``root`` is searched first, then ``$KDREPRO_DATA``, then ``./data``; ``download=True`` fetches a
    missing data set into the first of those. ``options`` are data-set specific: ``cifar10-5k``:
    ``path``, ``per_batch``; ``npz``: ``path``, ``layout``; ``imagefolder``: ``path``, ``size``,
    ``channels``; ``digits``: ``test_fraction``, ``seed``.

    Raises :class:`DatasetNotFoundError` (lists every path searched and the download call),
    :class:`CorruptDatasetError` for unreadable files, ``ValueError`` for an unknown name or option.
    """
    key, spec = _dataset(name)
    accepted = list(spec.Options.model_fields)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"data set {key!r} does not take option(s) {unknown}; it accepts: {', '.join(accepted) or 'none'}"
        )
    return spec.load(_search_roots(root), bool(train), bool(download), **options)
