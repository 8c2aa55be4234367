"""The sequencer: scores by hand, pools against brute force, scoring a tiny data set, schedules."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

import kdrepro  # noqa: F401  (torchvision guard, kept for uniformity)
from kdrepro.sequencer import (
    SCORES,
    Phase,
    make_schedule,
    phase_at,
    score_instances,
    scores_from_logits,
    select_pool,
)

# SVHN train class counts (digits 0..9: 4948, 13861, ...) divided by 100, in a shuffled label order.
SVHN_LIKE = [49, 138, 105, 84, 74, 68, 57, 55, 50, 46]


def make_labels(counts: list[int], seed: int = 0) -> torch.Tensor:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def brute_force_pool(scores: torch.Tensor, targets: torch.Tensor, fraction: float, easy_first: bool) -> list[int]:
    """Per class: sort (score, index) pairs by hand in Python and keep ceil(fraction * n_c)."""
    s, y = scores.tolist(), targets.tolist()
    chosen = []
    for c in sorted(set(y)):
        members = [i for i in range(len(y)) if y[i] == c]
        key = (lambda i: (-s[i], i)) if easy_first else (lambda i: (s[i], i))
        k = max(1, math.ceil(round(fraction * len(members), 9)))
        chosen += sorted(members, key=key)[:k]
    return sorted(chosen)


# ------------------------------------------------------------------------------------------------ scores


def test_scores_by_hand():
    z = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    y = torch.tensor([0, 0])
    assert scores_from_logits(z, y, "max_logit").tolist() == [2.0, 3.0]
    # margin: row 0 the true class is the max (2 - 1), row 1 it is not (0 - 3)
    assert scores_from_logits(z, y, "margin").tolist() == pytest.approx([1.0, -3.0])
    p0 = math.exp(2) / (math.exp(2) + math.exp(1) + 1)
    p1 = 1 / (1 + math.exp(3) + math.exp(1))
    assert scores_from_logits(z, y, "true_class_prob").tolist() == pytest.approx([p0, p1], rel=1e-6)
    assert scores_from_logits(z, y, "ce_loss").tolist() == pytest.approx([math.log(p0), math.log(p1)], rel=1e-6)


def test_teacher_kl_by_hand():
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0], [1.0, 0.0]])
    y = torch.tensor([0, 1])
    # row 0: p_t = (3/4, 1/4), p_s = (1/2, 1/2); row 1: identical distributions -> KL 0
    kl0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    got = scores_from_logits(z, y, "teacher_kl", teacher_logits=t)
    assert got.tolist() == pytest.approx([-kl0, 0.0], abs=1e-7)
    with pytest.raises(ValueError, match="teacher_logits"):
        scores_from_logits(z, y, "teacher_kl")


@pytest.mark.parametrize("score", ["true_class_prob", "ce_loss", "margin"])
def test_higher_score_means_easier(score):
    z = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])  # both predict class of row index
    y = torch.tensor([0, 0])  # row 0 right and confident, row 1 wrong
    s = scores_from_logits(z, y, score)
    assert s[0] > s[1]


def test_scores_reject_bad_input():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="'entropy'"):
        scores_from_logits(z, torch.tensor([0, 1]), "entropy")
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        scores_from_logits(z, torch.tensor([0, 3]), "margin")


# ------------------------------------------------------------------------------------------------- pools


@pytest.mark.parametrize("counts", [[23] * 10, [7] * 100, SVHN_LIKE], ids=["10-classes", "100-classes", "svhn-like"])
@pytest.mark.parametrize("fraction", [0.2, 0.4, 0.6, 0.8, 1.0, 0.05])
def test_easy_and_hard_first_match_brute_force_per_class(counts, fraction):
    targets = make_labels(counts)
    scores = torch.randn(len(targets), generator=torch.Generator().manual_seed(1)).round(decimals=1)  # has ties
    for order, easy in (("easy_first", True), ("hard_first", False)):
        pool = select_pool(scores, targets, fraction, order)
        assert pool.dtype == torch.long
        assert pool.tolist() == brute_force_pool(scores, targets, fraction, easy)
        per_class = torch.bincount(targets[pool], minlength=len(counts)).tolist()
        assert per_class == [max(1, math.ceil(round(fraction * n, 9))) for n in counts]


def test_pool_sizes_are_ceil_of_fraction_per_class_despite_float_noise():
    # in floating point 0.07 * 100 = 7.000000000000001 and 0.28 * 25 = 7.000000000000001
    targets = torch.tensor([0] * 100 + [1] * 25 + [2] * 3)
    sizes = lambda f: torch.bincount(targets[select_pool(torch.zeros(128), targets, f)]).tolist()  # noqa: E731
    assert sizes(0.07) == [7, 2, 1]
    assert sizes(0.28) == [28, 7, 1]
    assert sizes(0.01) == [1, 1, 1]  # at least one instance per class


def test_ties_broken_by_index():
    targets = torch.zeros(6, dtype=torch.long)
    scores = torch.tensor([1.0, 2.0, 2.0, 0.0, 2.0, 0.0])
    assert select_pool(scores, targets, 0.5, "easy_first").tolist() == [1, 2, 4]
    assert select_pool(scores, targets, 0.5, "hard_first").tolist() == [0, 3, 5]
    assert select_pool(torch.zeros(6), targets, 0.5, "easy_first").tolist() == [0, 1, 2]


def test_easy_first_pools_are_nested():
    targets = make_labels([40] * 10)
    scores = torch.randint(0, 5, (len(targets),), generator=torch.Generator().manual_seed(2)).float()
    pools = [set(select_pool(scores, targets, f).tolist()) for f in (0.2, 0.4, 0.6, 0.8, 1.0)]
    for small, large in zip(pools, pools[1:]):
        assert small < large
    assert pools[-1] == set(range(len(targets)))


def test_random_order_is_reproducible_seed_dependent_and_uniform():
    targets = make_labels([10, 20])
    scores = torch.randn(30)
    draw = lambda seed: select_pool(scores, targets, 0.3, "random", torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))
    assert torch.equal(select_pool(scores, targets, 0.3, "random"), select_pool(-scores, targets, 0.3, "random"))
    counts = torch.bincount(targets[draw(5)], minlength=2).tolist()
    assert counts == [3, 6]

    g = torch.Generator().manual_seed(6)
    trials = 1500
    hits = torch.zeros(30)
    for _ in range(trials):
        hits[select_pool(scores, targets, 0.3, "random", g)] += 1
    # each member of a class is kept with probability k_c / n_c = 0.3; binomial sd = sqrt(1500*.3*.7) ~ 17.7
    assert (hits - 0.3 * trials).abs().max() < 5 * math.sqrt(trials * 0.3 * 0.7)


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5, float("nan")])
def test_select_pool_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match=re.escape(repr(fraction))):
        select_pool(torch.zeros(4), torch.zeros(4, dtype=torch.long), fraction)


def test_select_pool_rejects_bad_order_and_shapes():
    with pytest.raises(ValueError, match="'easiest'"):
        select_pool(torch.zeros(4), torch.zeros(4, dtype=torch.long), 0.5, "easiest")
    with pytest.raises(ValueError, match=r"\(4,\) and \(3,\)"):
        select_pool(torch.zeros(4), torch.zeros(3, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="NaN"):
        select_pool(torch.tensor([0.0, float("nan")]), torch.zeros(2, dtype=torch.long), 0.5)


# --------------------------------------------------------------------------------------- score_instances


class TinyDataset:
    """Same attributes as kdrepro.data.ImageDataset that score_instances uses."""

    def __init__(self, n: int = 11, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 1, 4, 4), generator=g, dtype=torch.uint8)
        self.targets = torch.randint(0, 3, (n,), generator=g)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 - 0.5) / 0.25

    def np_normalized(self) -> np.ndarray:
        return (self.images.numpy().astype(np.float64) / 255.0 - 0.5) / 0.25


class TinyNet(nn.Module):
    """Linear classifier behind a Dropout: only eval mode gives deterministic, computable logits."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.drop(x.flatten(1)))


def np_logits(net: TinyNet, x: np.ndarray) -> np.ndarray:
    w = net.fc.weight.detach().numpy().astype(np.float64)
    b = net.fc.bias.detach().numpy().astype(np.float64)
    return x.reshape(len(x), -1) @ w.T + b


def test_score_instances_scores_unaugmented_images_in_eval_mode_and_restores_mode():
    torch.manual_seed(0)
    data, net = TinyDataset(), TinyNet()
    net.train()
    got = score_instances(net, data, "max_logit", batch_size=4)
    assert net.training and net.drop.training
    assert got.dtype == torch.float32 and got.device.type == "cpu" and got.shape == (11,)
    np.testing.assert_allclose(got.numpy(), np_logits(net, data.np_normalized()).max(axis=1), rtol=1e-5, atol=1e-5)
    net.eval()
    score_instances(net, data)
    assert not net.training


@pytest.mark.parametrize("score", SCORES)
def test_score_instances_independent_of_batch_size(score):
    torch.manual_seed(0)
    data, net, teacher = TinyDataset(), TinyNet(), TinyNet()
    results = [score_instances(net, data, score, teacher=teacher, batch_size=b) for b in (1, 3, 11, 512)]
    for r in results[1:]:
        torch.testing.assert_close(r, results[0])


def test_score_instances_teacher_kl_from_model_or_precomputed_logits():
    torch.manual_seed(0)
    data, net, teacher = TinyDataset(), TinyNet(), TinyNet()
    teacher.train()
    from_model = score_instances(net, data, "teacher_kl", teacher=teacher, batch_size=5)
    assert teacher.training
    x = data.np_normalized()
    z, t = np_logits(net, x), np_logits(teacher, x)
    log_p_s = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    log_p_t = t - np.log(np.exp(t).sum(axis=1, keepdims=True))
    expected = -(np.exp(log_p_t) * (log_p_t - log_p_s)).sum(axis=1)
    np.testing.assert_allclose(from_model.numpy(), expected, rtol=1e-4, atol=1e-6)
    precomputed = score_instances(net, data, "teacher_kl", teacher_logits=torch.from_numpy(t).float(), batch_size=4)
    np.testing.assert_allclose(precomputed.numpy(), expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="teacher"):
        score_instances(net, data, "teacher_kl")


# ---------------------------------------------------------------------------------------------- schedule


def spans(schedule: list[Phase]) -> list[tuple[int, int, float, bool]]:
    return [(p.start, p.end, p.fraction, p.curriculum) for p in schedule]


def check_well_formed(schedule: list[Phase], epochs: int) -> None:
    assert [p.index for p in schedule] == list(range(len(schedule)))
    assert schedule[0].start == 0 and schedule[-1].end == epochs
    for a, b in zip(schedule, schedule[1:]):
        assert a.end == b.start and a.start < a.end
    assert schedule[-1].fraction == 1.0


def test_authors_schedule_at_300_epochs():
    s = make_schedule(300)
    check_well_formed(s, 300)
    assert spans(s) == [(0, 40, 1.0, False), (40, 70, 0.2, True), (70, 110, 0.4, True),
                        (110, 150, 0.6, True), (150, 200, 0.8, True), (200, 300, 1.0, True)]


def test_authors_schedule_scaled_to_30_epochs():
    s = make_schedule(30, "authors")
    check_well_formed(s, 30)
    assert [p.end for p in s] == [4, 7, 11, 15, 20, 30]
    assert [p.fraction for p in s] == [1.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert [p.curriculum for p in s] == [False] + [True] * 5


@pytest.mark.parametrize("epochs", [10, 45, 47, 50, 100, 160])
def test_authors_schedule_rounds_its_boundaries_at_any_budget(epochs):
    # phase end = e * epochs / 300 rounded half up; 10 epochs: 1.33, 2.33, 3.67, 5, 6.67, 10 -> 1, 2, 4, 5, 7, 10;
    # 45 epochs: 6, 10.5, 16.5, 22.5, 30, 45 -> 6, 11, 17, 23, 30, 45
    expected = [int(math.floor(e * epochs / 300 + 0.5)) for e in (40, 70, 110, 150, 200, 300)]
    assert [p.end for p in make_schedule(epochs)] == expected


@pytest.mark.parametrize("epochs", [30, 60, 120, 240, 300])
def test_authors_schedule_equals_their_epoch_tests_at_multiples_of_30(epochs):
    # train_slkd.py, 1-based epoch e: warm-up while e <= 4*num, phase k while e <= k*num, num = epochs/30
    ends = [sum(1 for e in range(1, epochs + 1) if 30 * e <= k * epochs) for k in (4, 7, 11, 15, 20, 30)]
    assert [p.end for p in make_schedule(epochs)] == ends


@pytest.mark.parametrize("pacing", ["linear", "root", "step"])
def test_pacing_functions(pacing):
    s0, epochs, warm, k = 0.2, 300, 40, 5
    sched = make_schedule(epochs, pacing, num_phases=k, start_fraction=s0)
    check_well_formed(sched, epochs)
    assert spans(sched)[0] == (0, warm, 1.0, False)
    curriculum = sched[1:]
    assert [p.start for p in curriculum] == [40, 92, 144, 196, 248]  # 260 curriculum epochs in 5 equal phases
    t = [j / (k - 1) for j in range(k)]
    expected = {
        "linear": [s0 + (1 - s0) * x for x in t],
        "root": [math.sqrt(s0**2 + (1 - s0**2) * x) for x in t],
        "step": [s0 + (1 - s0) * j / (k - 1) for j in range(k)],
    }[pacing]
    assert [p.fraction for p in curriculum] == pytest.approx(expected)
    assert all(p.curriculum for p in curriculum)


def test_root_pacing_grows_faster_than_linear_and_custom_warmup():
    root = make_schedule(30, "root", warmup=0, num_phases=3, start_fraction=0.1)
    linear = make_schedule(30, "linear", warmup=0, num_phases=3, start_fraction=0.1)
    assert [p.end for p in root] == [10, 20, 30] and root[0].curriculum
    assert root[1].fraction == pytest.approx(math.sqrt(0.01 + 0.99 * 0.5))
    assert linear[1].fraction == pytest.approx(0.55)
    assert root[1].fraction > linear[1].fraction


def test_custom_and_none_schedules():
    s = make_schedule(30, "custom", phase_ends=[10, 20, 30], fractions=[0.3, 0.6, 1.0], warmup=5)
    assert spans(s) == [(0, 5, 1.0, False), (5, 10, 0.3, True), (10, 20, 0.6, True), (20, 30, 1.0, True)]
    s = make_schedule(30, "custom", phase_ends=[10, 30], fractions=[0.5, 1.0])
    assert spans(s) == [(0, 10, 0.5, True), (10, 30, 1.0, True)]
    assert spans(make_schedule(12, "none")) == [(0, 12, 1.0, False)]


def test_full_pacing_keeps_every_image_after_the_authors_warm_up():
    from kdrepro.sequencer import PACINGS, PacingParams

    build = PACINGS.get("full")[1]
    assert spans(build(300, PacingParams())) == [(0, 40, 1.0, False), (40, 300, 1.0, True)]
    assert spans(build(20, PacingParams())) == [(0, 3, 1.0, False), (3, 20, 1.0, True)]  # round(40 * 20 / 300)


@pytest.mark.parametrize(
    "kwargs, bad",
    [
        (dict(epochs=30, pacing="cosine"), "'cosine'"),
        (dict(epochs=30, pacing="custom", phase_ends=[10, 20, 30], fractions=[0.0, 0.5, 1.0]), "0.0"),
        (dict(epochs=30, pacing="custom", phase_ends=[10, 30], fractions=[0.5, 1.2]), "1.2"),
        (dict(epochs=30, pacing="custom", phase_ends=[10, 20, 30], fractions=[0.5, 0.5, 1.0]), "[0.5, 0.5, 1.0]"),
        (dict(epochs=30, pacing="custom", phase_ends=[10, 30], fractions=[0.2, 0.5]), "0.5"),
        (dict(epochs=30, pacing="custom", phase_ends=[10, 10, 30], fractions=[0.2, 0.5, 1.0]), "[10, 10, 30]"),
        (dict(epochs=30, pacing="custom", phase_ends=[20, 10, 30], fractions=[0.2, 0.5, 1.0]), "[20, 10, 30]"),
        (dict(epochs=30, pacing="custom", phase_ends=[10, 20, 30], fractions=[0.2, 0.5, 1.0], warmup=10),
         "warm-up of 10"),
        (dict(epochs=30, pacing="custom", phase_ends=[10, 40], fractions=[0.5, 1.0]), "40"),
        (dict(epochs=30, pacing="custom", phase_ends=[10, 20], fractions=[0.5, 1.0]), "20"),
        (dict(epochs=30, pacing="custom", phase_ends=[10, 30], fractions=[1.0]), "[1.0]"),
        (dict(epochs=30, pacing="custom"), "phase_ends"),
        (dict(epochs=5, pacing="authors"), "epochs=5"),
        (dict(epochs=4, pacing="linear"), "epochs=4"),
        (dict(epochs=30, pacing="linear", warmup=30), "warmup=30"),
        (dict(epochs=30, pacing="linear", start_fraction=0.0), "0.0"),
        (dict(epochs=30, pacing="root", start_fraction=1.5), "1.5"),
        (dict(epochs=30, pacing="step", num_phases=0), "num_phases"),
        (dict(epochs=0), "epochs"),
        (dict(epochs=30, pacing="authors", warmup=5), "warmup=5"),
        (dict(epochs=30, pacing="linear", phase_ends=[10, 30]), "phase_ends"),
    ],
)
def test_make_schedule_invalid_cases_name_the_bad_value(kwargs, bad):
    with pytest.raises(ValueError, match=re.escape(bad)):
        make_schedule(**kwargs)


def test_phase_at():
    s = make_schedule(300)
    assert phase_at(s, 0).index == 0 and phase_at(s, 39).index == 0
    assert phase_at(s, 40).index == 1 and phase_at(s, 40).fraction == 0.2
    assert phase_at(s, 299).index == 5
    for epoch in (300, -1):
        with pytest.raises(ValueError, match=re.escape(repr(epoch))):
            phase_at(s, epoch)
