"""The exact teacher-logit cache (:mod:`kdrepro.cache`): lookups equal a live teacher forward on the same
augmented view, files are reused only for the same teacher, data and augmentation, and a damaged file is
rebuilt rather than trusted.

Tiny and real: the first 12 images of scikit-learn's 8x8 digits, a resnet8 teacher, reflect padding 1 with
flips (3 x 3 x 2 = 18 views per image).
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdrepro.augment import CropFlip
from kdrepro.cache import TeacherLogitCache, cache_key
from kdrepro.data import ImageDataset, load_dataset
from kdrepro.models import create_model

CPU = torch.device("cpu")
N_IMAGES = 12
PADDING = 1


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny forwards: one thread avoids OpenMP contention on a busy machine (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset() -> ImageDataset:
    full = load_dataset("digits")
    return ImageDataset("digits-12", full.images[:N_IMAGES], full.targets[:N_IMAGES], full.classes, full.mean,
                        full.std)


@pytest.fixture(scope="module")
def augment() -> CropFlip:
    return CropFlip(padding=PADDING, hflip=True)


def make_teacher(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("resnet8", 10, in_channels=1).eval()


def view_float64(images: torch.Tensor, view: int, mean, std, padding: int = PADDING) -> torch.Tensor:
    """One documented view written out independently of CropFlip: normalise in float64, reflect-pad,
    crop at ``(dy, dx)``, then flip; ``view = (dy * (2p + 1) + dx) * 2 + flip``."""
    side = 2 * padding + 1
    flip, offset = view % 2, view // 2
    dy, dx = offset // side, offset % side
    m = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    x = (images.to(torch.float64) / 255.0 - m) / s
    h, w = x.shape[-2:]
    x = F.pad(x, (padding,) * 4, mode="reflect")[..., dy:dy + h, dx:dx + w]
    return x.flip(-1) if flip else x


def live_logits_float64(teacher: torch.nn.Module, dataset: ImageDataset, num_views: int) -> torch.Tensor:
    """``[N, V, C]`` logits of a float64 copy of the teacher on every view of every image."""
    t64 = copy.deepcopy(teacher).double().eval()
    with torch.no_grad():
        rows = [t64(view_float64(dataset.images, v, dataset.mean, dataset.std)) for v in range(num_views)]
    return torch.stack(rows, dim=1)


def assert_float16_close(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal up to float16 rounding (relative 2^-11) plus float32-vs-float64 arithmetic."""
    scale = want.abs().max().item()
    torch.testing.assert_close(got.double(), want, rtol=1e-3, atol=1e-3 * scale)


@pytest.mark.parametrize("channels_last", [False, True])
def test_lookup_equals_live_teacher_forward_on_the_same_view(dataset, augment, channels_last):
    teacher = make_teacher()
    cache = TeacherLogitCache.build(copy.deepcopy(teacher), dataset, augment, CPU, batch_size=5,
                                    channels_last=channels_last)
    assert augment.num_views == 18
    assert cache.logits.dtype == torch.float16
    assert cache.logits.shape == (N_IMAGES, 18, 10)
    want = live_logits_float64(teacher, dataset, augment.num_views)

    # every (image, view) pair, looked up in a shuffled order
    idx = torch.arange(N_IMAGES).repeat_interleave(18)
    views = torch.arange(18).repeat(N_IMAGES)
    perm = torch.randperm(len(idx), generator=torch.Generator().manual_seed(0))
    got = cache.lookup(idx[perm], views[perm])
    assert got.dtype == torch.float32
    assert_float16_close(got, want[idx[perm], views[perm]])

    # the check can fail: a lookup one view off is far outside the tolerance
    with pytest.raises(AssertionError):
        assert_float16_close(cache.lookup(idx, (views + 1) % 18), want[idx, views])


def test_lookup_matches_the_augmentation_used_in_training(dataset, augment):
    """The engine feeds ``normalize(augment.apply(images[idx], views))``: the cache agrees with it."""
    teacher = make_teacher()
    cache = TeacherLogitCache.build(copy.deepcopy(teacher), dataset, augment, CPU)
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(0, N_IMAGES, (32,), generator=gen)
    views = augment.sample_views(32, generator=gen)
    with torch.no_grad():
        live = teacher.double()(dataset.normalize(augment.apply(dataset.images[idx], views)).double())
    assert_float16_close(cache.lookup(idx, views), live)


def cache_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("teacher-logits-*.pt"))


def forbid_build(monkeypatch) -> None:
    def build(cls, *args, **kwargs):
        raise AssertionError("the cache was rebuilt although a valid file exists")

    monkeypatch.setattr(TeacherLogitCache, "build", classmethod(build))


def test_load_or_build_writes_once_then_hits(dataset, augment, tmp_path, monkeypatch):
    teacher = make_teacher()
    first, hit = TeacherLogitCache.load_or_build(teacher, dataset, augment, CPU, tmp_path)
    assert hit is False
    files = cache_files(tmp_path)
    assert [f.name for f in files] == [f"teacher-logits-{cache_key(teacher, dataset, augment)}.pt"]
    assert list(tmp_path.glob("*.tmp")) == []
    mtime = files[0].stat().st_mtime_ns

    forbid_build(monkeypatch)
    second, hit = TeacherLogitCache.load_or_build(teacher, dataset, augment, CPU, tmp_path)
    assert hit is True
    assert torch.equal(second.logits, first.logits)
    assert files[0].stat().st_mtime_ns == mtime
    assert_float16_close(second.logits.float(), live_logits_float64(teacher, dataset, augment.num_views))


def test_changed_teacher_weights_miss_and_get_their_own_logits(dataset, augment, tmp_path):
    teacher = make_teacher()
    old, _ = TeacherLogitCache.load_or_build(teacher, dataset, augment, CPU, tmp_path)
    retrained = copy.deepcopy(teacher)
    with torch.no_grad():
        retrained.fc.weight.mul_(2.0).add_(0.01)
    assert cache_key(retrained, dataset, augment) != cache_key(teacher, dataset, augment)

    new, hit = TeacherLogitCache.load_or_build(retrained, dataset, augment, CPU, tmp_path)
    assert hit is False
    assert len(cache_files(tmp_path)) == 2
    want = live_logits_float64(retrained, dataset, augment.num_views)
    assert_float16_close(new.logits.float(), want)
    assert not torch.allclose(new.logits.float(), old.logits.float(), rtol=1e-2, atol=1e-2)


def test_other_data_or_augmentation_gives_another_key(dataset, augment):
    teacher = make_teacher()
    key = cache_key(teacher, dataset, augment)
    other_images = dataset.images.clone()
    other_images[0, 0, 0, 0] ^= 1
    other_data = ImageDataset("digits-12", other_images, dataset.targets, dataset.classes, dataset.mean, dataset.std)
    assert cache_key(teacher, other_data, augment) != key
    assert cache_key(teacher, dataset, CropFlip(padding=PADDING, hflip=False)) != key
    assert cache_key(teacher, dataset, CropFlip(padding=2, hflip=True)) != key
    assert cache_key(make_teacher(), dataset, CropFlip(padding=PADDING, hflip=True)) == key
    # the same images normalised otherwise reach the teacher as other inputs
    renormalised = ImageDataset("digits-12", dataset.images, dataset.targets, dataset.classes,
                                tuple(0.0 for _ in dataset.mean), tuple(1.0 for _ in dataset.std))
    assert cache_key(teacher, renormalised, augment) != key


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a torch file" * 10)


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _wrong_shape(path: Path) -> None:
    torch.save(torch.zeros(N_IMAGES - 1, 18, 10, dtype=torch.float16), path)


def _zeroed_with_checksum(path: Path) -> None:
    from kdrepro.cache import logits_checksum

    logits = torch.zeros(N_IMAGES, 18, 10, dtype=torch.float16)
    torch.save({"logits": logits, "sha256": logits_checksum(logits)}, path)


def _zeroed_bare(path: Path) -> None:
    torch.save(torch.zeros(N_IMAGES, 18, 10, dtype=torch.float16), path)


def _one_entry_changed(path: Path) -> None:
    data = torch.load(path, weights_only=True)
    data["logits"][3, 5, 2] += 1.0  # the checksum no longer matches
    torch.save(data, path)


@pytest.mark.parametrize("damage", [_garbage, _truncated, _wrong_shape, _zeroed_with_checksum, _zeroed_bare,
                                    _one_entry_changed],
                         ids=["garbage", "truncated", "wrong-shape", "zeroed-with-checksum", "zeroed-bare",
                              "one-entry-changed"])
def test_corrupt_cache_file_is_rebuilt_not_trusted(dataset, augment, tmp_path, monkeypatch, damage):
    teacher = make_teacher()
    TeacherLogitCache.load_or_build(teacher, dataset, augment, CPU, tmp_path)
    (path,) = cache_files(tmp_path)
    damage(path)

    rebuilt, hit = TeacherLogitCache.load_or_build(teacher, dataset, augment, CPU, tmp_path)
    assert hit is False
    want = live_logits_float64(teacher, dataset, augment.num_views)
    assert_float16_close(rebuilt.logits.float(), want)

    forbid_build(monkeypatch)  # the rebuilt file replaced the damaged one and is now a hit
    again, hit = TeacherLogitCache.load_or_build(teacher, dataset, augment, CPU, tmp_path)
    assert hit is True
    assert_float16_close(again.logits.float(), want)


def test_logits_beyond_float16_are_refused_with_the_largest_value(dataset, augment):
    class Huge(torch.nn.Module):  # logits of +-1e5: float16 (max 65504) would store inf
        def forward(self, x):
            return torch.tensor([1e5, -2e5, 3.0]).expand(len(x), 3).clone()

    with pytest.raises(ValueError, match=r"do not fit float16 \(largest \|logit\| 2e\+05"):
        TeacherLogitCache.build(Huge(), dataset, augment, CPU)


def test_a_teacher_with_nan_logits_is_refused_even_after_finite_batches(dataset, augment):
    class NaNLater(torch.nn.Module):  # finite logits for the first view, NaN afterwards
        calls = 0

        def forward(self, x):
            self.calls += 1
            out = torch.ones(len(x), 3)
            return out if self.calls == 1 else out * float("nan")

    with pytest.raises(ValueError, match=r"largest \|logit\| nan"):
        TeacherLogitCache.build(NaNLater(), dataset, augment, CPU)


def test_a_cache_file_carries_the_checksum_of_its_logits(dataset, augment, tmp_path):
    import hashlib

    teacher = make_teacher()
    cache, _ = TeacherLogitCache.load_or_build(teacher, dataset, augment, CPU, tmp_path)
    (path,) = cache_files(tmp_path)
    data = torch.load(path, weights_only=True)
    assert torch.equal(data["logits"], cache.logits.cpu())
    assert data["sha256"] == hashlib.sha256(cache.logits.cpu().numpy().tobytes()).hexdigest()


def test_an_earlier_bare_cache_that_agrees_with_the_teacher_is_kept_and_gets_a_checksum(dataset, augment, tmp_path,
                                                                                         monkeypatch):
    teacher = make_teacher()
    first, _ = TeacherLogitCache.load_or_build(teacher, dataset, augment, CPU, tmp_path)
    (path,) = cache_files(tmp_path)
    torch.save(first.logits.cpu(), path)  # the format of kdrepro before checksums
    forbid_build(monkeypatch)
    again, hit = TeacherLogitCache.load_or_build(teacher, dataset, augment, CPU, tmp_path)
    assert hit is True and torch.equal(again.logits, first.logits)
    assert isinstance(torch.load(path, weights_only=True), dict)  # upgraded in place
