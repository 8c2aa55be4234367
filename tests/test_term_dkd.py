"""DKD (Zhao et al., CVPR 2022) against an independent float64 computation, hand-worked cases, KD's
decomposition (the paper's eq. 1), mdistiller's -1000 masking, the warm-up ramp and the term's params."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

import kdrepro  # noqa: F401  (torchvision guard, kept for uniformity)
import kdrepro.terms.dkd  # noqa: F401  (registration)
from kdrepro.losses import kd_loss
from kdrepro.terms.base import TERMS, StepInputs, TermContext
from kdrepro.terms.dkd import DecoupledKD, DKDParams, dkd_loss


# ---------------------------------------------------------------- independent references

def ref_dkd(s: np.ndarray, t: np.ndarray, y: np.ndarray, alpha: float, beta: float, T: float) -> float:
    """DKD from its definition, float64, plain loops: no masking trick, no logsumexp."""
    B, C = s.shape
    tckd = nckd = 0.0
    for i in range(B):
        es = [math.exp(s[i, c] / T) for c in range(C)]
        et = [math.exp(t[i, c] / T) for c in range(C)]
        ps = [v / sum(es) for v in es]
        pt = [v / sum(et) for v in et]
        others = [c for c in range(C) if c != y[i]]
        bs = [ps[y[i]], sum(ps[c] for c in others)]      # 1 - p_y, summed (no cancellation)
        bt = [pt[y[i]], sum(pt[c] for c in others)]
        tckd += sum(bt[k] * math.log(bt[k] / bs[k]) for k in range(2))
        qs = [es[c] / sum(es[o] for o in others) for c in others]
        qt = [et[c] / sum(et[o] for o in others) for c in others]
        nckd += sum(qt[k] * math.log(qt[k] / qs[k]) for k in range(len(others)))
    return T * T * (alpha * tckd + beta * nckd) / B


def mdistiller_style_parts(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, T) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD) in mdistiller's formulation (masks by multiplying probabilities, log of summed
    probabilities, and a -1000 offset on the target logit for the non-target part), written here for
    comparison."""
    gt = F.one_hot(y, s.shape[1]).to(s.dtype)
    ps, pt = F.softmax(s / T, dim=1), F.softmax(t / T, dim=1)
    bs = torch.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], dim=1)
    bt = torch.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], dim=1)
    tckd = (bt * (bt.log() - bs.log())).sum() * T**2 / s.shape[0]
    log_qs = F.log_softmax(s / T - 1000.0 * gt, dim=1)
    qt = F.softmax(t / T - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_qs, qt, reduction="sum") * T**2 / s.shape[0]
    return tckd, nckd


def mdistiller_style_dkd(s, t, y, alpha, beta, T) -> torch.Tensor:
    tckd, nckd = mdistiller_style_parts(s, t, y, T)
    return alpha * tckd + beta * nckd


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 5, generator=g, dtype=torch.float64) * 3
    t = torch.randn(3, 5, generator=g, dtype=torch.float64) * 4
    y = torch.tensor([0, 4, 2])
    return s, t, y


# ---------------------------------------------------------------- the loss

@pytest.mark.parametrize("alpha,beta,T", [(1.0, 8.0, 4.0), (1.0, 2.0, 1.0), (0.5, 6.0, 2.0), (0.0, 1.0, 3.0),
                                          (1.0, 0.0, 4.0)])
def test_dkd_matches_float64_loops(batch, alpha, beta, T):
    s, t, y = batch
    expected = ref_dkd(s.numpy(), t.numpy(), y.numpy(), alpha, beta, T)
    assert expected > 0 or alpha == beta == 0
    assert dkd_loss(s, t, y, alpha, beta, T).item() == pytest.approx(expected, rel=1e-10, abs=1e-12)
    # float32, as the term computes it
    got32 = dkd_loss(s.float(), t.float(), y, alpha, beta, T).item()
    assert got32 == pytest.approx(expected, rel=2e-5, abs=1e-6)


def test_alpha_and_beta_weight_the_two_parts_linearly(batch):
    s, t, y = batch
    tckd = dkd_loss(s, t, y, 1.0, 0.0, 4.0)
    nckd = dkd_loss(s, t, y, 0.0, 1.0, 4.0)
    assert tckd.item() > 0 and nckd.item() > 0
    assert dkd_loss(s, t, y, 1.0, 8.0, 4.0).item() == pytest.approx((tckd + 8 * nckd).item(), rel=1e-12)


def test_hand_example_two_classes_nckd_is_zero():
    # p_t = (3/4, 1/4), p_s = (1/2, 1/2), T = 1, target 0: TCKD = 3/4 ln(3/2) + 1/4 ln(1/2);
    # one non-target class: its renormalised distribution is (1) for both, NCKD = 0 whatever beta.
    s = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    y = torch.tensor([0])
    tckd = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert dkd_loss(s, t, y, 1.0, 0.0, 1.0).item() == pytest.approx(tckd, rel=1e-14)
    assert dkd_loss(s, t, y, 0.0, 123.0, 1.0).item() == 0.0
    assert dkd_loss(s, t, y, 2.0, 123.0, 1.0).item() == pytest.approx(2 * tckd, rel=1e-14)


def test_hand_example_nckd_three_classes():
    # target 0 with the same probability on both sides (logit 0 vs two non-target logits equal in sum):
    # student non-target (0, 0) -> q_s = (1/2, 1/2); teacher non-target (ln 3, 0) -> q_t = (3/4, 1/4).
    # T = 2 halves the logits, so write them doubled. TCKD: b_s = (1/3, 2/3); b_t = (1/5, 4/5).
    s = torch.tensor([[0.0, 0.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 2 * math.log(3.0), 0.0]], dtype=torch.float64)
    y = torch.tensor([0])
    nckd = 4 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    tckd = 4 * (0.2 * math.log(0.2 / (1 / 3)) + 0.8 * math.log(0.8 / (2 / 3)))
    assert dkd_loss(s, t, y, 0.0, 1.0, 2.0).item() == pytest.approx(nckd, rel=1e-13)
    assert dkd_loss(s, t, y, 1.0, 0.0, 2.0).item() == pytest.approx(tckd, rel=1e-13)


def test_teacher_equal_to_student_gives_zero(batch):
    s, _, y = batch
    assert dkd_loss(s, s.clone(), y, 1.0, 8.0, 4.0).item() == pytest.approx(0.0, abs=1e-14)
    assert dkd_loss(s.float(), s.float(), y, 1.0, 8.0, 4.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_decomposes_into_tckd_plus_weighted_nckd(batch):
    # the paper's eq. (1): KD = TCKD + (1 - p_t^T) * NCKD, per sample (p_t^T: the teacher's target prob.)
    s, t, y = batch
    T = 3.0
    for i in range(s.shape[0]):
        si, ti, yi = s[i:i + 1], t[i:i + 1], y[i:i + 1]
        pt = F.softmax(ti / T, dim=1)[0, yi].item()
        assert dkd_loss(si, ti, yi, 1.0, 1.0 - pt, T).item() == pytest.approx(kd_loss(si, ti, T).item(), rel=1e-12)


def test_gradient_matches_finite_differences_and_float64(batch):
    s, t, y = batch
    s = s.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: dkd_loss(z, t, y, 1.0, 8.0, 4.0), (s,), eps=1e-6, atol=1e-8)
    (g64,) = torch.autograd.grad(dkd_loss(s, t, y, 1.0, 8.0, 4.0), s)
    s32 = s.detach().float().requires_grad_(True)
    t32 = t.float().requires_grad_(True)
    dkd_loss(s32, t32, y, 1.0, 8.0, 4.0).backward()
    assert torch.allclose(s32.grad.double(), g64, rtol=1e-4, atol=1e-6)
    assert t32.grad is None                      # the teacher is detached
    assert g64.sum(dim=1).abs().max().item() < 1e-12   # shift invariance of every softmax: rows sum to 0


def test_agrees_with_mdistiller_masking_on_ordinary_logits():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(16, 100, generator=g) * 5
    t = torch.randn(16, 100, generator=g) * 8
    y = torch.randint(0, 100, (16,), generator=g)
    for alpha, beta, T in [(1.0, 8.0, 4.0), (1.0, 2.0, 1.0)]:
        ours = dkd_loss(s, t, y, alpha, beta, T)
        theirs = mdistiller_style_dkd(s, t, y, alpha, beta, T)
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
        exact = ref_dkd(s.double().numpy(), t.double().numpy(), y.numpy(), alpha, beta, T)
        assert ours.item() == pytest.approx(exact, rel=1e-5)


def test_stays_finite_where_mdistiller_masking_breaks():
    # the student is certain of the target at T = 1: its non-target probabilities underflow in float32,
    # so log(sum of probabilities) is -inf and mdistiller's TCKD is infinite; in log space it is finite.
    s = torch.tensor([[200.0, 0.0, 1.0]])
    t = torch.tensor([[2.0, 0.0, 1.0]])
    y = torch.tensor([0])
    assert not torch.isfinite(mdistiller_style_dkd(s, t, y, 1.0, 8.0, 1.0))
    ours = dkd_loss(s, t, y, 1.0, 8.0, 1.0)
    exact = ref_dkd(s.double().numpy(), t.double().numpy(), y.numpy(), 1.0, 8.0, 1.0)
    assert math.isfinite(ours.item()) and ours.item() == pytest.approx(exact, rel=1e-5)
    # logits spanning more than the 1000 offset: the offset no longer removes the target class
    s = torch.tensor([[3000.0, 0.0, 1.0]])
    t = torch.tensor([[3000.0, 1.0, 0.0]])
    # NCKD compares the non-target logits only, (0, 1) against (1, 0): q_s = (1, e)/(1 + e), q_t reversed;
    # after the offset the target still dominates both softmaxes and mdistiller's NCKD comes out 0
    q_s = np.array([1.0, math.e]) / (1 + math.e)
    q_t = q_s[::-1]
    nckd = float(np.sum(q_t * np.log(q_t / q_s)))
    assert nckd > 0.4
    assert dkd_loss(s, t, y, 0.0, 1.0, 1.0).item() == pytest.approx(nckd, rel=1e-5)
    assert mdistiller_style_parts(s, t, y, 1.0)[1].item() == pytest.approx(0.0, abs=1e-6)
    assert dkd_loss(s, t, y, 1.0, 0.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)   # equal binary splits


@pytest.mark.parametrize("bad,match", [
    (dict(student_logits=torch.zeros(3)), "student_logits"),
    (dict(teacher_logits=torch.zeros(3, 4)), "teacher_logits"),
    (dict(targets=torch.tensor([0, 1])), "targets"),
    (dict(targets=torch.tensor([0.0, 1.0, 2.0])), "targets"),
    (dict(targets=torch.tensor([0, 5, 1])), "targets"),
    (dict(targets=torch.tensor([-1, 0, 1])), "targets"),
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-1.0), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(student_logits=torch.zeros(3, 1), teacher_logits=torch.zeros(3, 1), targets=torch.zeros(3, dtype=torch.long)),
     "at least 2"),
])
def test_bad_inputs_are_rejected_naming_the_argument(bad, match):
    args = dict(student_logits=torch.zeros(3, 5), teacher_logits=torch.zeros(3, 5), targets=torch.tensor([0, 1, 4]),
                alpha=1.0, beta=8.0, temperature=4.0)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        dkd_loss(**args)


# ---------------------------------------------------------------- the term

def _term(**params) -> DecoupledKD:
    ctx = TermContext(num_classes=5, num_samples=10, student=nn.Linear(2, 5), teacher=None,
                      device=torch.device("cpu"))
    return DecoupledKD(DKDParams(**params), ctx)


def _step(batch, epoch: int) -> StepInputs:
    s, t, y = batch
    return StepInputs(student_logits=s.float(), targets=y, indices=torch.arange(len(y)),
                      images=torch.zeros(len(y), 3, 4, 4), epoch=epoch, curriculum=False, teacher_logits=t.float())


def test_term_is_registered():
    cls = TERMS.get("dkd")
    assert cls is DecoupledKD
    assert cls.name == "dkd" and cls.display == "DKD"
    assert cls.needs == frozenset({"teacher_logits"})
    assert cls.requirements(DKDParams()) == frozenset({"teacher_logits"})
    assert cls.Params is DKDParams
    assert _term().applies(False) and _term().applies(True)


def test_defaults_are_mdistillers_cifar_ones():
    p = DKDParams()
    assert (p.weight, p.alpha, p.beta, p.T, p.warmup) == (1.0, 1.0, 8.0, 4.0, 20)


@pytest.mark.parametrize("epoch,factor", [(1, 1 / 20), (10, 0.5), (20, 1.0), (40, 1.0)])
def test_warmup_ramp_through_the_term(batch, epoch, factor):
    s, t, y = batch
    full = ref_dkd(s.float().double().numpy(), t.float().double().numpy(), y.numpy(), 1.0, 8.0, 4.0)
    out = _term(weight=0.5)(_step(batch, epoch))
    assert set(out) == {"dkd"}
    assert out["dkd"].dtype == torch.float32
    assert out["dkd"].item() == pytest.approx(0.5 * factor * full, rel=1e-5)


def test_warmup_zero_means_no_ramp(batch):
    s, t, y = batch
    full = dkd_loss(s.float(), t.float(), y, 2.0, 3.0, 2.0).item()
    assert _term(warmup=0, alpha=2.0, beta=3.0, T=2.0)(_step(batch, 1))["dkd"].item() == pytest.approx(full, rel=1e-6)


def test_term_gradient_reaches_the_student_only(batch):
    step = _step(batch, 20)
    step.student_logits.requires_grad_(True)
    step.teacher_logits.requires_grad_(True)
    _term()(step)["dkd"].backward()
    assert step.student_logits.grad is not None and step.student_logits.grad.abs().sum() > 0
    assert step.teacher_logits.grad is None


@pytest.mark.parametrize("bad", [dict(alpha="abc"), dict(T=0), dict(T=-1.0), dict(weight=True), dict(beta=-1.0),
                                 dict(warmup=1.5), dict(warmup=-1), dict(warmup=True), dict(gamma=1.0)])
def test_bad_params_are_rejected(bad):
    with pytest.raises(ValidationError):
        DKDParams(**bad)


def test_params_coerce_like_the_other_terms():
    p = DKDParams(alpha="0.5", beta=6, T="2", warmup="10")
    assert (p.alpha, p.beta, p.T, p.warmup) == (0.5, 6.0, 2.0, 10)
