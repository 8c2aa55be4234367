"""The nine RepDistiller baselines (SP, CC, VID, RKD, PKT, AB, FT, FSP, NST) against independent float64
computations written here with NumPy loops from the papers' formulas and RepDistiller's conventions, plus
hand-worked cases; the terms' registration, wiring and teacher detachment."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from kdrepro.models import create_model
from kdrepro.terms import TERMS, StepInputs, TermContext
from kdrepro.terms.ab import ab_loss
from kdrepro.terms.cc import correlation_congruence_loss
from kdrepro.terms.convreg import ConvReg
from kdrepro.terms.fsp import fsp_loss
from kdrepro.terms.ft import factor_loss
from kdrepro.terms.nst import nst_loss
from kdrepro.terms.pkt import pkt_loss
from kdrepro.terms.rkd import rkd_loss
from kdrepro.terms.sp import similarity_preserving_loss
from kdrepro.terms.vid import VIDRegressor, vid_loss

NEW = ["sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst"]


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def block_mean(x: np.ndarray, size: int) -> np.ndarray:
    """[B, C, H, W] -> [B, C, size, size] by averaging equal blocks (adaptive pooling for H divisible by size)."""
    b, c, h, w = x.shape
    return x.reshape(b, c, size, h // size, size, w // size).mean(axis=(3, 5))


def close(ours: torch.Tensor, theirs: float, rel=1e-10):
    assert ours.dtype == torch.float64
    assert ours.item() == pytest.approx(theirs, rel=rel, abs=1e-12)


# ----------------------------------------------------------------------------- SP
def ref_sp(fs, ft):
    b = fs.shape[0]
    fs, ft = fs.reshape(b, -1), ft.reshape(b, -1)
    total = 0.0
    for i in range(b):
        gs = np.array([fs[i] @ fs[j] for j in range(b)])
        gt = np.array([ft[i] @ ft[j] for j in range(b)])
        gs, gt = gs / math.sqrt((gs ** 2).sum()), gt / math.sqrt((gt ** 2).sum())
        total += ((gt - gs) ** 2).sum()
    return total / b ** 2


def test_sp_matches_float64_loops():
    fs, ft = rand(5, 4, 3, 3, seed=1), rand(5, 6, 2, 2, seed=2)  # widths and sizes may differ
    close(similarity_preserving_loss(fs, ft), ref_sp(fs.numpy(), ft.numpy()))


def test_sp_hand_worked():
    # two orthogonal unit samples: both Gram rows are one-hot, identical: loss 0; scaling a sample changes
    # nothing after row normalisation
    fs = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    assert similarity_preserving_loss(fs, torch.eye(2, dtype=torch.float64)).item() == 0.0
    # G_s = [[1, 1], [1, 1]] -> rows [1, 1]/sqrt2; G_t = I: each row differs by (1/sqrt2 - 1)^2 + 1/2
    same = torch.ones(2, 1, dtype=torch.float64)
    expected = 2 * ((1 / math.sqrt(2) - 1) ** 2 + 0.5) / 4
    assert similarity_preserving_loss(same, torch.eye(2, dtype=torch.float64)).item() == pytest.approx(expected)


# ----------------------------------------------------------------------------- CC
def test_cc_matches_float64_loops_and_a_hand_worked_case():
    es, et = rand(6, 5, seed=3), rand(6, 5, seed=4)
    d = np.abs(es.numpy() - et.numpy())
    ref = np.mean([sum(d[i, c] * d[i + 1, c] for c in range(5)) for i in range(5)])
    close(correlation_congruence_loss(es, et), ref)
    # |e_s - e_t| rows [1, 2], [3, 4], [0, 1]: pairs (1*3 + 2*4) = 11 and (3*0 + 4*1) = 4 -> mean 7.5
    es = torch.tensor([[1.0, 2.0], [3.0, -4.0], [0.0, 1.0]], dtype=torch.float64)
    assert correlation_congruence_loss(es, torch.zeros_like(es)).item() == 7.5


# ----------------------------------------------------------------------------- PKT
def ref_pkt(fs, ft, eps=1e-7):
    def dist(f):
        f = f / (np.sqrt((f ** 2).sum(1, keepdims=True)) + eps)
        b = len(f)
        sim = np.array([[(f[i] @ f[j] + 1) / 2 for j in range(b)] for i in range(b)])
        return sim / sim.sum(1, keepdims=True)
    p, q = dist(fs), dist(ft)
    return np.mean(q * np.log((q + eps) / (p + eps)))


def test_pkt_matches_float64_loops():
    fs, ft = rand(7, 5, seed=5), rand(7, 9, seed=6)
    close(pkt_loss(fs, ft), ref_pkt(fs.numpy(), ft.numpy()))
    assert pkt_loss(ft, ft).item() == pytest.approx(0.0, abs=1e-15)


# ----------------------------------------------------------------------------- RKD
def huber(a, b):
    d = np.abs(a - b)
    return np.mean(np.where(d < 1, 0.5 * d ** 2, d - 0.5))


def ref_rkd(s, t, wd=25.0, wa=50.0):
    def distances(e):
        b = len(e)
        d = np.array([[np.linalg.norm(e[i] - e[j]) for j in range(b)] for i in range(b)])
        return d / d[d > 0].mean()

    def angles(e):
        b = len(e)
        out = np.zeros((b, b, b))
        for a, i, k in itertools.product(range(b), repeat=3):
            u, v = e[i] - e[a], e[k] - e[a]
            nu, nv = np.linalg.norm(u), np.linalg.norm(v)
            u = u / max(nu, 1e-12)
            v = v / max(nv, 1e-12)
            out[a, i, k] = u @ v
        return out.reshape(-1)
    return wd * huber(distances(s), distances(t)) + wa * huber(angles(s), angles(t))


def test_rkd_matches_float64_loops():
    fs, ft = rand(5, 4, seed=7), rand(5, 6, seed=8) * 3
    close(rkd_loss(fs, ft), ref_rkd(fs.numpy(), ft.numpy()), rel=1e-9)
    close(rkd_loss(fs, ft, 2.0, 0.0), ref_rkd(fs.numpy(), ft.numpy(), 2.0, 0.0), rel=1e-9)


def test_rkd_hand_worked_is_scale_invariant():
    # distances are divided by their mean and angles ignore scale: a scaled copy of the teacher costs 0
    t = rand(4, 3, seed=9)
    assert rkd_loss(5 * t, t).item() == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------- NST
def ref_nst(fs, ft):
    if fs.shape[2] > ft.shape[2]:
        fs = block_mean(fs, ft.shape[2])
    elif fs.shape[2] < ft.shape[2]:
        ft = block_mean(ft, fs.shape[2])
    b = fs.shape[0]

    def norm(f):
        f = f.reshape(b, f.shape[1], -1)
        return f / np.linalg.norm(f, axis=2, keepdims=True)
    s, t = norm(fs), norm(ft)

    def k(x, y):
        return np.mean([(x[n, i] @ y[n, j]) ** 2 for n in range(b) for i in range(x.shape[1]) for j in range(y.shape[1])])
    return k(t, t) + k(s, s) - 2 * k(s, t)


def test_nst_matches_float64_loops_with_and_without_pooling():
    fs, ft = rand(3, 4, 4, 4, seed=10), rand(3, 5, 4, 4, seed=11)
    close(nst_loss(fs, ft), ref_nst(fs.numpy(), ft.numpy()))
    big = rand(3, 2, 8, 8, seed=12)
    close(nst_loss(big, ft), ref_nst(big.numpy(), ft.numpy()))
    assert nst_loss(ft, ft).item() == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------- VID
def test_vid_matches_float64_formula_and_starts_at_the_initial_variance():
    mean, target, log_scale = rand(2, 3, 2, 2, seed=13), rand(2, 3, 2, 2, seed=14), rand(3, seed=15)
    var = np.log1p(np.exp(log_scale.numpy())) + 1e-5
    m, t = mean.numpy(), target.numpy()
    ref = np.mean([0.5 * ((m[n, c, h, w] - t[n, c, h, w]) ** 2 / var[c] + np.log(var[c]))
                   for n, c, h, w in itertools.product(range(2), range(3), range(2), range(2))])
    close(vid_loss(mean, target, log_scale), ref)
    head = VIDRegressor(4, 6, 6, init_var=5.0, eps=1e-5)
    assert (torch.nn.functional.softplus(head.log_scale) + 1e-5).detach().numpy() == pytest.approx(5.0)
    assert [m.kernel_size for m in head.regressor if isinstance(m, torch.nn.Conv2d)] == [(1, 1)] * 3


# ----------------------------------------------------------------------------- AB
def ref_ab(sources, targets, margin=1.0):
    n, b = len(sources), sources[0].shape[0]
    total = 0.0
    for k, (s, t) in enumerate(zip(sources, targets)):
        part = 0.0
        for sv, tv in zip(s.reshape(-1), t.reshape(-1)):
            if tv <= 0 and sv > -margin:
                part += (sv + margin) ** 2
            elif tv > 0 and sv <= margin:
                part += (sv - margin) ** 2
        total += 2.0 ** (k - n + 1) * part / b * 3 / 1000
    return total


def test_ab_matches_float64_loops():
    sources = [rand(2, 3, 4, 4, seed=16), rand(2, 5, 2, 2, seed=17)]
    targets = [rand(2, 3, 4, 4, seed=18), rand(2, 5, 2, 2, seed=19)]
    close(ab_loss(sources, targets), ref_ab([s.numpy() for s in sources], [t.numpy() for t in targets]))
    close(ab_loss(sources, targets, 0.5), ref_ab([s.numpy() for s in sources], [t.numpy() for t in targets], 0.5))


def test_ab_hand_worked():
    # one map, one element: teacher on (t > 0), student at 0: (0 - 1)^2 = 1, weight 2^0, / B=1 * 3/1000
    one = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    assert ab_loss([one], [one + 1]).item() == pytest.approx(0.003)
    # beyond the margin on the right side: no loss
    assert ab_loss([one + 2], [one + 1]).item() == 0.0 and ab_loss([one - 2], [one - 1]).item() == 0.0


# ----------------------------------------------------------------------------- FSP
def ref_fsp_matrix(low, high):
    if low.shape[2] > high.shape[2]:
        low = block_mean(low, high.shape[2])
    elif low.shape[2] < high.shape[2]:
        high = block_mean(high, low.shape[2])
    b, cl, h, w = low.shape
    ch = high.shape[1]
    return np.array([[[np.mean(high[n, i] * low[n, j]) for j in range(cl)] for i in range(ch)] for n in range(b)])


def test_fsp_matches_float64_loops():
    s = [rand(2, 3, 8, 8, seed=20), rand(2, 3, 8, 8, seed=21), rand(2, 4, 4, 4, seed=22)]
    t = [rand(2, 3, 8, 8, seed=23), rand(2, 3, 8, 8, seed=24), rand(2, 4, 4, 4, seed=25)]
    ref = sum(np.mean((ref_fsp_matrix(s[k].numpy(), s[k + 1].numpy()) - ref_fsp_matrix(t[k].numpy(), t[k + 1].numpy())) ** 2)
              for k in range(2))
    close(fsp_loss(s, t), ref)


# ----------------------------------------------------------------------------- FT
def test_ft_factor_loss_matches_float64_loops():
    fs, ft = rand(3, 4, 4, 4, seed=26), rand(3, 6, 2, 2, seed=27)

    def fac(f):
        a = (f ** 2).mean(1).reshape(f.shape[0], -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)
    ref = np.mean(np.abs(fac(block_mean(fs.numpy(), 2)) - fac(ft.numpy())))
    close(factor_loss(fs, ft), ref)


# ----------------------------------------------------------------------------- ConvReg
@pytest.mark.parametrize("s_hw, t_hw, kind, kernel, stride", [
    (8, 4, torch.nn.Conv2d, (3, 3), (2, 2)),
    (4, 8, torch.nn.ConvTranspose2d, (4, 4), (2, 2)),
    (4, 4, torch.nn.Conv2d, (1, 1), (1, 1)),
    (6, 4, torch.nn.Conv2d, (3, 3), (1, 1)),
])
def test_convreg_picks_repdistillers_convolution(s_hw, t_hw, kind, kernel, stride):
    reg = ConvReg((5, s_hw, s_hw), (7, t_hw, t_hw))
    assert type(reg.conv) is kind and reg.conv.kernel_size == kernel and reg.conv.stride == stride
    assert reg(torch.randn(2, 5, s_hw, s_hw)).shape == (2, 7, t_hw, t_hw)


def test_convreg_refuses_a_student_map_under_half_the_teachers():
    with pytest.raises(ValueError, match="at most half"):
        ConvReg((5, 2, 2), (7, 8, 8))


# ----------------------------------------------------------------------------- the terms as components
def _ctx(student="resnet8", teacher="resnet14"):
    torch.manual_seed(0)
    return TermContext(num_classes=10, num_samples=8, student=create_model(student, 10),
                       teacher=create_model(teacher, 10), device=torch.device("cpu"), image_shape=(3, 16, 16))


@pytest.mark.parametrize("name", NEW)
def test_every_term_is_registered_detaches_the_teacher_and_gives_finite_parts(name):
    ctx = _ctx()
    term = TERMS.get(name)(TERMS.get(name).Params(), ctx)
    x = torch.randn(4, 3, 16, 16)
    s_logits, s_feats = ctx.student(x, return_features=True)
    t_logits, t_feats = ctx.teacher(x, return_features=True)
    step = StepInputs(student_logits=s_logits, targets=torch.tensor([0, 1, 2, 3]), indices=torch.arange(4),
                      images=x, epoch=1, curriculum=False, student_features=s_feats, teacher_logits=t_logits,
                      teacher_features=t_feats)
    parts = dict(term(step))
    if term.init_epochs() > 0:
        parts["init"] = term.init_loss(step)
    assert parts and all(torch.isfinite(v) and v.dim() == 0 for v in parts.values())
    sum(parts.values()).backward()
    assert all(p.grad is None for p in ctx.teacher.parameters())
    if term.init_reads_student:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ctx.student.parameters())


def test_fsp_refuses_pairs_with_other_channel_counts():
    fsp = TERMS.get("fsp")
    fsp.check(fsp.Params(), "resnet8", "resnet14")
    with pytest.raises(ValueError, match=r"losses\.fsp.*channels"):
        fsp.check(fsp.Params(), "resnet8", "wrn_16_2")
    fsp.check(fsp.Params(connector="conv"), "resnet8", "wrn_16_2")


def test_fsp_connector_maps_the_student_to_the_teachers_channels():
    ctx = _ctx("resnet8", "wrn_16_2")
    term = TERMS.get("fsp")(TERMS.get("fsp").Params(connector="conv"), ctx)
    assert isinstance(term.connectors[0], torch.nn.Identity)  # stems: 16 and 16 channels
    x = torch.randn(2, 3, 16, 16)
    _, s_feats = ctx.student(x, return_features=True)
    _, t_feats = ctx.teacher(x, return_features=True)
    step = StepInputs(student_logits=None, targets=None, indices=None, images=x, epoch=1, curriculum=False,
                      student_features=s_feats, teacher_features=t_feats)
    mapped = [c(m) for c, m in zip(term.connectors, s_feats["stages"])]
    assert [m.shape[1] for m in mapped] == [m.shape[1] for m in t_feats["stages"]]
    assert term.init_loss(step).item() == pytest.approx(fsp_loss(mapped, t_feats["stages"]).item(), rel=1e-6)
