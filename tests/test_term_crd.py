"""The CRD term against an independent float64 computation (numpy) of RepDistiller's CRDLoss, a hand-worked
memory update, the negatives' sampling rule, the normalisation constants and the checkpointed state."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

import kdrepro.terms.crd  # noqa: F401  (registration)
from kdrepro.terms.base import TERMS, StepInputs, TermContext
from kdrepro.terms.crd import CRD, CRDParams, contrast_loss, pooled_dim

S_DIM, T_DIM = 5, 7
TARGETS = torch.tensor([0, 1, 2, 0, 1, 2])   # 6 training images of 3 classes, 2 each, interleaved


class Tiny(nn.Module):
    """A stand-in network: pooled = Linear(channel means); logits = a linear head on it."""

    def __init__(self, dim: int, in_channels: int = 3, num_classes: int = 3):
        super().__init__()
        self.in_channels = in_channels
        self.body = nn.Linear(in_channels, dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x, return_features=False):
        pooled = self.body(x.mean(dim=(2, 3)))
        logits = self.fc(pooled)
        return (logits, {"stages": [], "pooled": pooled}) if return_features else logits


def make_term(targets=TARGETS, seed=0, **params) -> CRD:
    params = {"feat_dim": 4, "negatives": 3, **params}
    ctx = TermContext(num_classes=int(targets.max()) + 1, num_samples=len(targets), student=Tiny(S_DIM),
                      teacher=Tiny(T_DIM), device=torch.device("cpu"), seed=seed, targets=targets)
    term = CRD(CRDParams(**params), ctx)
    d = term.params.feat_dim
    with torch.no_grad():  # fixed embedding weights, independent of torch's global RNG
        term.embed_s.linear.weight.copy_(torch.linspace(-2, 3, d * S_DIM).sin().reshape(d, S_DIM))
        term.embed_s.linear.bias.copy_(torch.linspace(-0.5, 0.5, d))
        term.embed_t.linear.weight.copy_(torch.linspace(-3, 2, d * T_DIM).cos().reshape(d, T_DIM))
        term.embed_t.linear.bias.copy_(torch.linspace(0.3, -0.2, d))
    return term


def features(seed: int, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, S_DIM, generator=g), torch.randn(batch, T_DIM, generator=g)


def make_step(f_s, f_t, idx) -> StepInputs:
    idx = torch.as_tensor(idx)
    n = len(idx)
    return StepInputs(student_logits=torch.zeros(n, 3), targets=TARGETS[idx], indices=idx,
                      images=torch.zeros(n, 3, 4, 4), epoch=1, curriculum=False,
                      student_features={"stages": [], "pooled": f_s}, teacher_features={"stages": [], "pooled": f_t})


# ---------------------------------------------------------------- the independent float64 computation
def np_embed(f, w, b):
    z = f @ w.T + b
    return z / np.sqrt((z ** 2).sum(axis=1, keepdims=True))


def np_nce(p, n_data):
    """RepDistiller's ContrastLoss, with explicit loops."""
    bsz, m = p.shape[0], p.shape[1] - 1
    pn, eps = 1.0 / n_data, 1e-7
    total = 0.0
    for i in range(bsz):
        total += np.log(p[i, 0] / (p[i, 0] + m * pn + eps))
        for j in range(1, m + 1):
            total += np.log(m * pn / (p[i, j] + m * pn + eps))
    return -total / bsz


def np_crd(term, f_s, f_t, idx, negatives, mem_s, mem_t, z=None):
    """(weight * (loss_s + loss_t), (Z_s, Z_t), new mem_s, new mem_t), all in float64."""
    a = lambda t: t.detach().double().numpy()  # noqa: E731
    prm = term.params
    e_s = np_embed(a(f_s), a(term.embed_s.linear.weight), a(term.embed_s.linear.bias))
    e_t = np_embed(a(f_t), a(term.embed_t.linear.weight), a(term.embed_t.linear.bias))
    contrast = np.concatenate([np.asarray(idx)[:, None], negatives], axis=1)
    n = mem_s.shape[0]
    raw_s = np.exp(np.einsum("bkd,bd->bk", mem_t[contrast], e_s) / prm.temperature)
    raw_t = np.exp(np.einsum("bkd,bd->bk", mem_s[contrast], e_t) / prm.temperature)
    z_s, z_t = z if z is not None else (raw_s.mean() * n, raw_t.mean() * n)
    loss = prm.weight * (np_nce(raw_s / z_s, n) + np_nce(raw_t / z_t, n))
    new_s, new_t = mem_s.copy(), mem_t.copy()
    for row, i in enumerate(idx):
        for new, old, e in ((new_s, mem_s, e_s), (new_t, mem_t, e_t)):
            v = prm.momentum * old[i] + (1 - prm.momentum) * e[row]
            new[i] = v / np.linalg.norm(v)
    return loss, (z_s, z_t), new_s, new_t


def run_and_replay(term, f_s, f_t, idx):
    """Run the term; return its output, the banks before, and the negatives it drew (replayed from the
    generator's state before the step)."""
    mem_s, mem_t = term.memory_s.double().numpy().copy(), term.memory_t.double().numpy().copy()
    state = term.get_extra_state().clone()
    out = term(make_step(f_s, f_t, idx))
    after = term.get_extra_state().clone()
    term.set_extra_state(state)
    negatives = term.sample_negatives(TARGETS[torch.as_tensor(idx)]).numpy()
    assert torch.equal(term.get_extra_state(), after)  # the forward drew exactly these, nothing else
    return out, mem_s, mem_t, negatives


# ---------------------------------------------------------------- tests
def test_registered_with_repdistillers_defaults():
    assert TERMS.get("crd") is CRD
    assert CRD.name == "crd" and CRD.display == "CRD"
    assert CRD.needs == frozenset({"student_features", "teacher_features"})
    p = CRDParams()
    assert (p.weight, p.feat_dim, p.negatives, p.temperature, p.momentum) == (0.8, 128, 16384, 0.07, 0.5)


@pytest.mark.parametrize("bad", [{"negatives": 0}, {"temperature": -1}, {"feat_dim": True}, {"momentum": 1.0},
                                 {"momentum": -0.1}, {"weight": -1}, {"negatives": 2.5}, {"nce_k": 5}])
def test_bad_params_rejected(bad):
    with pytest.raises(ValidationError):
        CRDParams(**bad)


def test_loss_matches_float64_recomputation_over_two_steps():
    term = make_term()
    f_s, f_t = features(1)
    out, mem_s, mem_t, neg = run_and_replay(term, f_s, f_t, [4, 0])
    assert set(out) == {"crd"} and out["crd"].dtype == torch.float32
    want, z, new_s, new_t = np_crd(term, f_s, f_t, [4, 0], neg, mem_s, mem_t)
    assert out["crd"].item() == pytest.approx(want, rel=1e-5)
    assert (term.z_s.item(), term.z_t.item()) == pytest.approx(z, rel=1e-5)
    np.testing.assert_allclose(term.memory_s.numpy(), new_s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(term.memory_t.numpy(), new_t, rtol=1e-5, atol=1e-6)

    # second step: the updated banks, the first step's Z
    f_s, f_t = features(2)
    out, mem_s, mem_t, neg = run_and_replay(term, f_s, f_t, [1, 5])
    want, z2, _, _ = np_crd(term, f_s, f_t, [1, 5], neg, mem_s, mem_t, z=z)
    assert out["crd"].item() == pytest.approx(want, rel=1e-5)
    assert z2 == z
    # and it is not what a recomputed Z would give (the test can tell)
    fresh, _, _, _ = np_crd(term, f_s, f_t, [1, 5], neg, mem_s, mem_t)
    assert fresh != pytest.approx(want, rel=1e-3)


def test_memory_update_by_hand():
    term = make_term(momentum=0.25)
    with torch.no_grad():
        term.memory_s.zero_()
        term.memory_t.zero_()
        term.memory_s[3] = torch.tensor([1.0, 0.0, 0.0, 0.0])
        term.memory_t[3] = torch.tensor([0.0, 0.0, 2.0, 0.0])
        # embeddings: normalize(W f + b) = e_1 for the student and e_2 for the teacher
        term.embed_s.linear.weight.zero_()
        term.embed_s.linear.bias.copy_(torch.tensor([0.0, 3.0, 0.0, 0.0]))
        term.embed_t.linear.weight.zero_()
        term.embed_t.linear.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.5]))
    f_s, f_t = features(3, batch=1)
    before_s, before_t = term.memory_s.clone(), term.memory_t.clone()
    term(make_step(f_s, f_t, [3]))
    # student: 0.25 * (1,0,0,0) + 0.75 * (0,1,0,0), normalised; teacher: 0.25 * (0,0,2,0) + 0.75 * (0,0,0,1)
    s = torch.tensor([0.25, 0.75, 0.0, 0.0]) / (0.25 ** 2 + 0.75 ** 2) ** 0.5
    t = torch.tensor([0.0, 0.0, 0.5, 0.75]) / (0.5 ** 2 + 0.75 ** 2) ** 0.5
    assert torch.allclose(term.memory_s[3], s, rtol=1e-6, atol=1e-7), term.memory_s[3]
    assert torch.allclose(term.memory_t[3], t, rtol=1e-6, atol=1e-7), term.memory_t[3]
    others = [0, 1, 2, 4, 5]
    assert torch.equal(term.memory_s[others], before_s[others])
    assert torch.equal(term.memory_t[others], before_t[others])


def test_memory_init_is_repdistillers_uniform_and_seeded():
    a, b, c = make_term(feat_dim=12), make_term(feat_dim=12), make_term(feat_dim=12, seed=1)
    stdv = 1 / (12 / 3) ** 0.5
    assert a.memory_s.shape == a.memory_t.shape == (6, 12)
    assert a.memory_s.abs().max() <= stdv and a.memory_s.abs().max() > 0.5 * stdv
    assert torch.equal(a.memory_s, b.memory_s) and torch.equal(a.memory_t, b.memory_t)
    assert not torch.equal(a.memory_s, a.memory_t) and not torch.equal(a.memory_s, c.memory_s)


def test_subset_draws_exclude_own_class_are_distinct_and_uniform():
    term = make_term(negatives=2)  # 4 images of other classes >= 2: without replacement
    labels = torch.tensor([0, 1, 2]).repeat(1000)
    neg = term.sample_negatives(labels)
    assert neg.shape == (3000, 2)
    assert (TARGETS[neg] != labels[:, None]).all()
    assert (neg[:, 0] != neg[:, 1]).all()
    for c in range(3):
        counts = torch.bincount(neg[labels == c].flatten(), minlength=6).float()
        others = (TARGETS != c)
        assert counts[~others].sum() == 0
        assert ((counts[others] - 500).abs() < 75).all(), counts  # 1000 rows * 2 / 4 each


def test_draws_with_replacement_when_too_few_others_imbalanced_classes():
    targets = torch.tensor([1, 0, 0, 2, 0, 1, 0, 0])   # class 0: 5 images (3 others), 1: 2 (6), 2: 1 (7)
    term = make_term(targets=targets, negatives=5)      # class 0 draws with replacement, 1 and 2 without
    labels = torch.tensor([0, 1, 2, 0]).repeat(200)
    neg = term.sample_negatives(labels)
    assert ((neg >= 0) & (neg < 8)).all()
    assert (targets[neg] != labels[:, None]).all()
    for c in range(3):
        rows = neg[labels == c]
        assert set(rows.flatten().tolist()) == set((targets != c).nonzero().flatten().tolist())
        distinct = torch.tensor([len(set(r.tolist())) for r in rows])
        if c == 0:
            assert (distinct <= 3).all()
        else:
            assert (distinct == 5).all()


def test_negatives_in_forward_come_from_other_classes():
    term = make_term(negatives=4)
    f_s, f_t = features(4, batch=3)
    _, _, _, neg = run_and_replay(term, f_s, f_t, [0, 2, 4])
    assert (TARGETS[torch.as_tensor(neg)] != TARGETS[torch.tensor([0, 2, 4])][:, None]).all()


def test_z_set_once_and_kept_through_state_dict():
    term = make_term()
    assert term.z_s.item() == -1 and term.z_t.item() == -1
    f_s, f_t = features(5)
    term(make_step(f_s, f_t, [0, 1]))
    z = (term.z_s.item(), term.z_t.item())
    assert z[0] > 0 and z[1] > 0
    term(make_step(10 * f_s, -f_t, [2, 3]))
    assert (term.z_s.item(), term.z_t.item()) == z

    buf = io.BytesIO()
    torch.save(term.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)  # as the engine loads checkpoints
    restored = make_term(seed=7)
    restored.load_state_dict(state)
    assert (restored.z_s.item(), restored.z_t.item()) == z
    restored(make_step(f_t[:, :S_DIM], f_s.repeat(1, 2)[:, :T_DIM], [4, 5]))
    assert (restored.z_s.item(), restored.z_t.item()) == z


def test_restored_term_continues_identically():
    term = make_term(negatives=3)
    f_s, f_t = features(6)
    term(make_step(f_s, f_t, [0, 1]))
    state = term.state_dict()
    assert "_extra_state" in state and {"memory_s", "memory_t", "z_s", "z_t"} <= set(state)
    assert not {"sample_targets", "class_order"} & set(state)  # derived from the data, not saved
    other = make_term(seed=3)
    assert not torch.equal(other.memory_s, term.memory_s)
    other.load_state_dict(state)
    labels = torch.tensor([0, 1, 2, 2])
    assert torch.equal(other.sample_negatives(labels), term.sample_negatives(labels))
    f_s, f_t = features(7)
    a, b = term(make_step(f_s, f_t, [2, 3]))["crd"], other(make_step(f_s, f_t, [2, 3]))["crd"]
    assert torch.equal(a, b) and torch.equal(term.memory_t, other.memory_t)


def test_extra_state_round_trip():
    term = make_term(negatives=3)
    state = term.get_extra_state()
    assert isinstance(state, torch.Tensor) and state.dtype == torch.uint8
    labels = torch.tensor([0, 1, 2, 0, 1])
    first = term.sample_negatives(labels)
    second = term.sample_negatives(labels)
    assert not torch.equal(first, second)  # the generator advances
    term.set_extra_state(state)
    assert torch.equal(term.sample_negatives(labels), first)
    with pytest.raises(ValueError, match="uint8"):
        term.set_extra_state({"state": state})


def test_gradients_reach_heads_and_student_not_teacher():
    term = make_term()
    assert {n for n, _ in term.named_parameters()} == {"embed_s.linear.weight", "embed_s.linear.bias",
                                                       "embed_t.linear.weight", "embed_t.linear.bias"}
    f_s, f_t = features(8)
    f_s.requires_grad_(True)
    f_t.requires_grad_(True)
    loss = term(make_step(f_s, f_t, [1, 2]))["crd"]
    loss2 = term(make_step(f_s, f_t, [3, 4]))["crd"]   # the banks changed in between: backward still works
    (loss + loss2).backward()
    for p in term.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert f_s.grad is not None and f_s.grad.abs().sum() > 0
    assert f_t.grad is None
    assert not term.memory_s.requires_grad and not term.memory_t.requires_grad


def test_autocast_does_not_change_the_loss():
    f_s, f_t = features(9)
    f_s, f_t = f_s.bfloat16(), f_t.bfloat16()   # bf16 features, as under the engine's autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = make_term()(make_step(f_s, f_t, [0, 5]))["crd"]
    plain = make_term()(make_step(f_s.float(), f_t.float(), [0, 5]))["crd"]
    assert cast.dtype == torch.float32
    assert torch.equal(cast, plain)


def test_contrast_loss_checks_inputs():
    with pytest.raises(ValueError, match="at least one negative"):
        contrast_loss(torch.ones(2, 1), 10)
    with pytest.raises(ValueError, match="num_samples"):
        contrast_loss(torch.ones(2, 3), True)


def test_feature_widths_from_a_forward_pass_of_real_models():
    from kdrepro.models import create_model

    student, teacher = create_model("resnet8", 3), create_model("resnet8x4", 3)
    student.train()
    teacher.eval()
    assert pooled_dim(student) == 64 and pooled_dim(teacher) == 256
    assert student.training and all(m.training for m in student.modules())  # modes restored
    assert not teacher.training
    ctx = TermContext(num_classes=3, num_samples=6, student=student, teacher=teacher,
                      device=torch.device("cpu"), seed=0, targets=TARGETS)
    term = CRD(CRDParams(feat_dim=8, negatives=2), ctx)
    assert term.embed_s.linear.in_features == 64 and term.embed_t.linear.in_features == 256
    x = torch.randn(2, 3, 8, 8)
    _, fs = student(x, return_features=True)
    with torch.no_grad():
        _, ft = teacher(x, return_features=True)
    loss = term(StepInputs(student_logits=torch.zeros(2, 3), targets=TARGETS[:2], indices=torch.tensor([0, 1]),
                           images=x, epoch=1, curriculum=False, student_features=fs, teacher_features=ft))["crd"]
    assert torch.isfinite(loss)


def test_context_errors():
    kw = dict(num_classes=3, num_samples=6, student=Tiny(S_DIM), teacher=Tiny(T_DIM), device=torch.device("cpu"))
    with pytest.raises(ValueError, match="teacher"):
        CRD(CRDParams(), TermContext(**{**kw, "teacher": None}, targets=TARGETS))
    with pytest.raises(ValueError, match="labels"):
        CRD(CRDParams(), TermContext(**kw))
    with pytest.raises(ValueError, match="same class"):
        CRD(CRDParams(), TermContext(**kw, targets=torch.zeros(6, dtype=torch.long)))
    with pytest.raises(ValueError, match="num_samples"):
        CRD(CRDParams(), TermContext(**kw, targets=TARGETS[:5]))
    with pytest.raises(ValueError, match="teacher"):
        CRD.check(CRDParams(), "resnet8", None)
