"""CropFlip against torchvision's pad/crop/flip, and the distribution of its views."""
import numpy as np
import pytest
import scipy.stats
import torch

from kdrepro._torchvision import import_torchvision
from kdrepro.augment import CropFlip

tv = import_torchvision()
import torchvision.transforms.v2.functional as TF  # noqa: E402  (after kdrepro's import guard)


@pytest.fixture(autouse=True)
def one_thread():
    """Thousands of tiny torchvision calls: intra-op threads only add contention on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reference(image: torch.Tensor, dy: int, dx: int, flip: int, padding: int, mode: str) -> torch.Tensor:
    """torchvision: pad, crop at (dy, dx) with the input's size, then flip horizontally if asked."""
    _, height, width = image.shape
    padded = TF.pad(image, [padding], padding_mode=mode)
    out = TF.crop(padded, top=dy, left=dx, height=height, width=width)
    return TF.horizontal_flip(out) if flip else out


@pytest.mark.parametrize("mode", ["reflect", "constant"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_every_view_matches_torchvision(mode, dtype):
    aug = CropFlip(padding=4, hflip=True, padding_mode=mode)
    assert aug.num_views == 162
    gen = torch.Generator().manual_seed(0)
    # Non-square images catch height/width mix-ups; float images are shifted off zero so that a
    # wrongly zero-filled pixel cannot go unnoticed.
    base = torch.randint(1, 256, (3, 3, 9, 11), generator=gen)
    images = base.to(dtype) if dtype == torch.uint8 else base.to(dtype) / 7.0 + 0.5
    views = torch.arange(aug.num_views).repeat(len(images))
    batch = images.repeat_interleave(aug.num_views, dim=0)
    out = aug.apply(batch, views)
    assert out.dtype == dtype and out.shape == batch.shape
    dy, dx, flip = aug.decode(views)
    for k in range(len(batch)):
        expected = reference(batch[k], int(dy[k]), int(dx[k]), int(flip[k]), 4, mode)
        where = f"view {int(views[k])}: dy={int(dy[k])}, dx={int(dx[k])}, flip={int(flip[k])}"
        assert torch.equal(out[k], expected), where


def test_decode_covers_every_offset_and_flip_once():
    aug = CropFlip(padding=4)
    dy, dx, flip = aug.decode(torch.arange(aug.num_views))
    triples = set(zip(dy.tolist(), dx.tolist(), flip.tolist()))
    assert triples == {(a, b, f) for a in range(9) for b in range(9) for f in (0, 1)}
    assert torch.equal(aug.encode(dy, dx, flip), torch.arange(aug.num_views))
    assert aug.decode(torch.tensor([aug.identity_view])) == (torch.tensor([4]), torch.tensor([4]), torch.tensor([0]))


def test_identity_view_is_a_no_op_and_padding_zero_is_identity():
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (5, 3, 8, 8), generator=gen, dtype=torch.uint8)
    aug = CropFlip(padding=4)
    ident = torch.full((5,), aug.identity_view)
    assert torch.equal(aug.apply(images, ident), images)
    assert torch.equal(aug.apply(images.float(), ident), images.float())

    none = CropFlip(padding=0, hflip=False)
    assert none.num_views == 1 and none.identity_view == 0
    assert torch.equal(none.apply(images, none.sample_views(5, gen)), images)

    flip_only = CropFlip(padding=0, hflip=True)
    assert flip_only.num_views == 2
    assert torch.equal(flip_only.apply(images, torch.ones(5, dtype=torch.long)), images.flip(-1))

    no_flip = CropFlip(padding=2, hflip=False)
    assert no_flip.num_views == 25 and no_flip.identity_view == 12
    views = torch.arange(25) % 25
    out = no_flip.apply(images[:1].expand(25, -1, -1, -1), views)
    dy, dx, flip = no_flip.decode(views)
    assert not flip.any()
    for k in range(25):
        assert torch.equal(out[k], reference(images[0], int(dy[k]), int(dx[k]), 0, 2, "reflect"))


def test_bad_arguments_are_rejected_with_clear_messages():
    with pytest.raises(ValueError, match="padding"):
        CropFlip(padding=-1)
    with pytest.raises(ValueError, match="padding_mode"):
        CropFlip(padding_mode="wrap")
    aug = CropFlip(padding=4)
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"\[0, 162\)"):
        aug.apply(images, torch.tensor([0, 162]))
    with pytest.raises(ValueError, match="one view per image"):
        aug.apply(images, torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        aug.apply(images[0], torch.tensor([0]))
    with pytest.raises(ValueError, match="reflect padding 4"):
        aug.apply(torch.zeros(1, 3, 4, 4), torch.tensor([0]))


def test_sample_views_is_reproducible_and_uniform():
    aug = CropFlip(padding=4)
    a = aug.sample_views(50, torch.Generator().manual_seed(7))
    b = aug.sample_views(50, torch.Generator().manual_seed(7))
    assert a.dtype == torch.long and torch.equal(a, b)

    draws = aug.sample_views(162 * 200, torch.Generator().manual_seed(3))
    counts = torch.bincount(draws, minlength=aug.num_views).numpy()
    assert len(counts) == aug.num_views and counts.min() > 0
    assert scipy.stats.chisquare(counts).pvalue > 1e-3
    dy, dx, flip = aug.decode(draws)
    assert set(dy.tolist()) == set(range(9)) and set(dx.tolist()) == set(range(9)) and set(flip.tolist()) == {0, 1}


def test_view_distribution_matches_torchvision_random_crop_and_flip():
    """Identify each torchvision output among the 162 candidate views of a marker image, then compare."""
    aug = CropFlip(padding=4)
    marker = torch.randint(0, 256, (3, 32, 32), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    candidates = aug.apply(marker.expand(aug.num_views, -1, -1, -1), torch.arange(aug.num_views))
    lookup = {candidates[v].numpy().tobytes(): v for v in range(aug.num_views)}
    assert len(lookup) == aug.num_views, "the marker image must make every view distinct"

    pipeline = tv.transforms.Compose([
        tv.transforms.RandomCrop(32, padding=4, padding_mode="reflect"),
        tv.transforms.RandomHorizontalFlip(),
    ])
    torch.manual_seed(11)
    n = 162 * 30
    seen = np.array([lookup[pipeline(marker).numpy().tobytes()] for _ in range(n)])
    tv_counts = np.bincount(seen, minlength=aug.num_views)
    ours = np.bincount(aug.sample_views(n, torch.Generator().manual_seed(12)).numpy(), minlength=aug.num_views)

    assert tv_counts.min() > 0, "torchvision reached a view CropFlip's numbering lacks, or vice versa"
    assert scipy.stats.chisquare(tv_counts).pvalue > 1e-3
    assert scipy.stats.chi2_contingency(np.stack([tv_counts, ours])).pvalue > 1e-3
