"""teacher_cache_dtype: a float32 cache equals the float64 teacher to float32 arithmetic (tighter than float16
can), lives in a file of its own, keeps the float16 file's name, and leaves run ids unchanged."""
from __future__ import annotations

import copy

import pytest
import torch

from kdrepro.augment import CropFlip
from kdrepro.cache import TeacherLogitCache
from kdrepro.config import RunConfig
from kdrepro.losses import kd_loss

from test_cache import CPU, N_IMAGES, live_logits_float64, make_teacher

pytest.importorskip("numpy")


@pytest.fixture(scope="module")
def dataset():
    from test_cache import ImageDataset, load_dataset
    full = load_dataset("digits")
    return ImageDataset("digits-12", full.images[:N_IMAGES], full.targets[:N_IMAGES], full.classes, full.mean,
                        full.std)


def test_float32_cache_is_tighter_than_float16(dataset):
    augment = CropFlip(padding=1, hflip=True)
    teacher = make_teacher()
    want = live_logits_float64(teacher, dataset, augment.num_views)
    half = TeacherLogitCache.build(copy.deepcopy(teacher), dataset, augment, CPU)
    single = TeacherLogitCache.build(copy.deepcopy(teacher), dataset, augment, CPU, dtype="float32")
    assert half.logits.dtype == torch.float16 and single.logits.dtype == torch.float32
    scale = want.abs().max().item()
    err32 = (single.logits.double() - want).abs().max().item()
    err16 = (half.logits.double() - want).abs().max().item()
    assert err32 <= 1e-5 * scale < err16  # float16 rounds at 2^-11 relative; float32 only its arithmetic
    # the KD loss from either cache against the float64 teacher's
    student = torch.randn(N_IMAGES, 10, dtype=torch.float64)
    exact = kd_loss(student, want[:, 0], 4.0).item()
    rel32 = abs(kd_loss(student, single.logits[:, 0].double(), 4.0).item() - exact) / exact
    rel16 = abs(kd_loss(student, half.logits[:, 0].double(), 4.0).item() - exact) / exact
    assert rel32 < 1e-6 and rel32 < rel16 < 1e-3


def test_each_dtype_has_its_own_file_and_float16_keeps_its_name(dataset, tmp_path):
    augment = CropFlip(padding=1, hflip=False)
    teacher = make_teacher()
    half, hit = TeacherLogitCache.load_or_build(teacher, dataset, augment, CPU, tmp_path)
    single, hit32 = TeacherLogitCache.load_or_build(teacher, dataset, augment, CPU, tmp_path, dtype="float32")
    assert not hit and not hit32 and half.path != single.path
    assert single.path.name.endswith("-f32.pt") and not half.path.name.endswith("-f32.pt")
    again, hit = TeacherLogitCache.load_or_build(teacher, dataset, augment, CPU, tmp_path, dtype="float32")
    assert hit and again.logits.dtype == torch.float32


def test_the_dtype_is_not_part_of_a_run_id():
    base = dict(method="kd", dataset="digits", model="resnet8", teacher={"model": "resnet14"})
    a = RunConfig.from_dict(base).resolved()
    b = RunConfig.from_dict({**base, "teacher_cache_dtype": "float32"}).resolved()
    assert a.run_id == b.run_id and b.teacher_cache_dtype == "float32"
    with pytest.raises(Exception, match="teacher_cache_dtype"):
        RunConfig.from_dict({**base, "teacher_cache_dtype": "bfloat16"})
