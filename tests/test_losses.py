"""Losses against independent float64 computations (numpy), hand-worked examples and the authors' formula."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kdrepro  # noqa: F401  (torchvision guard, kept for uniformity)
from kdrepro.losses import (
    FitNetHint,
    attention_map,
    attention_transfer,
    cross_entropy,
    kd_loss,
    logit_mse,
)


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_kd(s: np.ndarray, t: np.ndarray, temperature: float) -> float:
    """T^2 * (1/B) * sum_i sum_c p_t log(p_t / p_s), written out with explicit loops."""
    p_s, p_t = np_softmax(s / temperature), np_softmax(t / temperature)
    total = 0.0
    for i in range(s.shape[0]):
        for c in range(s.shape[1]):
            total += p_t[i, c] * (math.log(p_t[i, c]) - math.log(p_s[i, c]))
    return temperature**2 * total / s.shape[0]


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 5, generator=g, dtype=torch.float64) * 2
    t = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3
    return s, t


def test_cross_entropy_matches_numpy(logits):
    s, _ = logits
    y = torch.tensor([0, 4, 2, 2, 1, 3])
    p = np_softmax(s.numpy())
    expected = -np.mean([math.log(p[i, y[i]]) for i in range(len(y))])
    assert cross_entropy(s, y).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 3.0, 4.0])
def test_kd_loss_matches_explicit_float64_loops(logits, temperature):
    s, t = logits
    assert kd_loss(s, t, temperature).item() == pytest.approx(np_kd(s.numpy(), t.numpy(), temperature), rel=1e-10)


def test_kd_loss_hand_example_is_summed_over_classes_not_averaged():
    # p_t = (3/4, 1/4), p_s = (1/2, 1/2): KL = 3/4 ln(3/2) + 1/4 ln(1/2), no division by C = 2.
    s = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kd_loss(s, t, 1.0).item() == pytest.approx(expected, rel=1e-12)


def test_kd_loss_gradient_is_t_times_softmax_difference_over_batch(logits):
    s, t = logits
    temperature = 3.0
    s = s.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(kd_loss(s, t, temperature), s)
    sn, tn = s.detach().numpy(), t.numpy()
    expected = temperature * (np_softmax(sn / temperature) - np_softmax(tn / temperature)) / sn.shape[0]
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("c", [1.0, 2.0, 4.0])
def test_kd_loss_scales_with_t_squared(logits, c):
    # softmax(c*z / c) = softmax(z): the only remaining dependence on T = c is the T^2 factor.
    s, t = logits
    ratio = kd_loss(c * s, c * t, c) / kd_loss(s, t, 1.0)
    assert ratio.item() == pytest.approx(c * c, rel=1e-12)


def test_kd_loss_is_batch_averaged(logits):
    s, t = logits
    duplicated = kd_loss(torch.cat([s, s]), torch.cat([t, t]), 3.0)
    assert duplicated.item() == pytest.approx(kd_loss(s, t, 3.0).item(), rel=1e-12)


def test_kd_loss_zero_when_student_equals_teacher(logits):
    s, _ = logits
    assert kd_loss(s, s.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-14)


def test_kd_loss_equals_authors_kldivloss_sum_formula(logits):
    # train_slkd.py: KLDivLoss(reduction='sum')(log_softmax(s/T), softmax(t/T)) * (T*T) / B
    s, t = logits
    temperature = 3.0
    authors = torch.nn.KLDivLoss(reduction="sum")(
        F.log_softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1)
    ) * (temperature * temperature) / s.shape[0]
    assert kd_loss(s, t, temperature).item() == pytest.approx(authors.item(), rel=1e-12)


def test_kd_loss_rejects_bad_input(logits):
    s, t = logits
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(s, t, 0.0)
    with pytest.raises(ValueError, match=r"\(6, 4\)"):
        kd_loss(s, t[:, :4], 3.0)


def test_logit_mse_is_mean_over_all_elements(logits):
    s, t = logits
    sn, tn = s.numpy(), t.numpy()
    expected = sum((sn[i, c] - tn[i, c]) ** 2 for i in range(6) for c in range(5)) / 30
    assert logit_mse(s, t).item() == pytest.approx(expected, rel=1e-12)
    assert logit_mse(s, t).item() == pytest.approx(torch.nn.MSELoss()(s, t).item(), rel=1e-12)


def test_teacher_side_gets_no_gradient(logits):
    s, t = logits
    t = t.clone().requires_grad_(True)
    (kd_loss(s.requires_grad_(True), t, 3.0) + logit_mse(s, t)).backward()
    assert t.grad is None


# ---------------------------------------------------------------------------------- attention transfer


def test_attention_map_hand_example():
    f = torch.tensor([[[[1.0, -2.0], [3.0, 4.0]]]], dtype=torch.float64)  # 1x1x2x2
    # p = 2: squares (1, 4, 9, 16), norm sqrt(354)
    expected = np.array([[1.0, 4.0, 9.0, 16.0]]) / math.sqrt(354.0)
    np.testing.assert_allclose(attention_map(f).numpy(), expected, rtol=1e-12)
    # p = 1 uses |f|: (1, 2, 3, 4) / sqrt(30)
    np.testing.assert_allclose(attention_map(f, p=1.0).numpy(), np.array([[1, 2, 3, 4]]) / math.sqrt(30), rtol=1e-12)


def test_attention_map_averages_over_channels():
    f = torch.tensor([[[[1.0, 0.0]], [[3.0, 2.0]]]], dtype=torch.float64)  # 1x2x1x2
    m = np.array([(1 + 9) / 2, (0 + 4) / 2])
    np.testing.assert_allclose(attention_map(f).numpy(), (m / np.linalg.norm(m))[None], rtol=1e-12)


def np_at(f: np.ndarray, p: float) -> np.ndarray:
    a = (np.abs(f) ** p).mean(axis=1).reshape(f.shape[0], -1)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def np_block_mean(f: np.ndarray, size: int) -> np.ndarray:
    b, c, h, w = f.shape
    k = h // size
    return f.reshape(b, c, size, k, size, k).mean(axis=(3, 5))


def test_attention_transfer_matches_numpy_with_unequal_lists_and_sizes():
    g = torch.Generator().manual_seed(1)
    student = [torch.randn(3, 4, 16, 16, generator=g, dtype=torch.float64),
               torch.randn(3, 8, 8, 8, generator=g, dtype=torch.float64),
               torch.randn(3, 16, 4, 4, generator=g, dtype=torch.float64)]
    teacher = [torch.randn(3, 6, 4, 4, generator=g, dtype=torch.float64),  # pairs with student[1] (8x8)
               torch.randn(3, 12, 8, 8, generator=g, dtype=torch.float64)]  # pairs with student[2] (4x4)
    s1, s2 = student[1].numpy(), student[2].numpy()
    t0, t1 = teacher[0].numpy(), np_block_mean(teacher[1].numpy(), 4)
    expected = 0.0
    for fs, ft in ((np_block_mean(s1, 4), t0), (s2, t1)):
        diff = np_at(fs, 2.0) - np_at(ft, 2.0)
        expected += float((diff**2).sum() / diff.size)  # mean over batch and positions (RepDistiller)
    assert attention_transfer(student, teacher).item() == pytest.approx(expected, rel=1e-10)


def test_attention_transfer_zero_for_identical_features_and_rejects_empty():
    f = [torch.randn(2, 3, 4, 4)]
    assert attention_transfer(f, [x.clone() for x in f]).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="at least one"):
        attention_transfer([], f)


# ------------------------------------------------------------------------------------------------ FitNet


def test_fitnet_hint_matches_explicit_computation_and_trains_regressor():
    torch.manual_seed(0)
    hint = FitNetHint(student_channels=3, teacher_channels=5).double()
    with torch.no_grad():  # non-trivial BN statistics so eval-mode BN is checked too
        hint.regressor[1].running_mean.uniform_(-0.5, 0.5)
        hint.regressor[1].running_var.uniform_(0.5, 2.0)
        hint.regressor[1].weight.uniform_(0.5, 1.5)
        hint.regressor[1].bias.uniform_(-0.2, 0.2)
    hint.eval()
    f_s = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    f_t = torch.randn(2, 5, 4, 4, dtype=torch.float64)
    loss = hint(f_s, f_t)
    assert loss.shape == ()

    conv, bn = hint.regressor[0], hint.regressor[1]
    w = conv.weight.detach().numpy()[:, :, 0, 0]
    x = np.einsum("oc,bchw->bohw", w, f_s.numpy()) + conv.bias.detach().numpy()[None, :, None, None]
    shape = (1, -1, 1, 1)
    x = (x - bn.running_mean.numpy().reshape(shape)) / np.sqrt(bn.running_var.numpy().reshape(shape) + bn.eps)
    x = x * bn.weight.detach().numpy().reshape(shape) + bn.bias.detach().numpy().reshape(shape)
    expected = np.mean((np.maximum(x, 0.0) - f_t.numpy()) ** 2)
    assert loss.item() == pytest.approx(expected, rel=1e-10)

    hint.train()
    hint(f_s, f_t).backward()
    for name, param in hint.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_fitnet_hint_shapes_and_spatial_mismatch():
    hint = FitNetHint(8, 16, kernel_size=3)
    assert hint.regressor[0].weight.shape == (16, 8, 3, 3)
    f_s = torch.randn(2, 8, 8, 8)
    f_t = torch.randn(2, 16, 4, 4)
    assert hint(f_s, f_t).shape == ()
    # the larger (regressed student) map is average-pooled 2x2 onto the teacher's 4x4 grid
    hint.eval()
    pooled = torch.from_numpy(np_block_mean(hint.regressor(f_s).detach().numpy().astype(np.float64), 4))
    expected = ((pooled - f_t.double()) ** 2).mean().item()
    assert hint(f_s, f_t).item() == pytest.approx(expected, rel=1e-5)


def test_fitnet_hint_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="student_channels"):
        FitNetHint(0, 4)
    hint = FitNetHint(3, 4)
    with pytest.raises(ValueError, match="7 channels"):
        hint(torch.randn(1, 7, 2, 2), torch.randn(1, 4, 2, 2))


@pytest.mark.parametrize("stem", [True, False])
def test_the_at_term_uses_the_stem_map_only_when_asked(stem):
    """``losses.at.stem=false`` is RepDistiller's ``feat[1:-1]``: the stage outputs without the stem's map;
    ``true`` (kdrepro's first convention, the default) adds the stem's map. Against numpy."""
    from kdrepro.terms import TermContext, StepInputs
    from kdrepro.terms.at import ATParams, AttentionTransfer

    g = torch.Generator().manual_seed(2)
    shapes = [(2, 4, 8, 8), (2, 4, 8, 8), (2, 8, 4, 4), (2, 16, 2, 2)]  # stem, stage 1..3
    student = [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]
    teacher = [torch.randn(s[0], 2 * s[1], *s[2:], generator=g, dtype=torch.float64) for s in shapes]
    term = AttentionTransfer(ATParams(weight=1000.0, stem=stem),
                             TermContext(10, 2, torch.nn.Identity(), None, torch.device("cpu")))
    z = torch.zeros(2, 10, dtype=torch.float64)
    got = term(StepInputs(student_logits=z, targets=torch.zeros(2, dtype=torch.long), indices=torch.arange(2),
                          images=z, epoch=1, curriculum=False, student_features={"stages": student},
                          teacher_features={"stages": teacher}))["at"].item()
    used = range(0 if stem else 1, 4)
    expected = 1000.0 * sum(float(((np_at(student[i].numpy(), 2.0) - np_at(teacher[i].numpy(), 2.0)) ** 2).mean())
                            for i in used)
    assert got == pytest.approx(expected, rel=1e-6)  # the term computes the student side in float32
