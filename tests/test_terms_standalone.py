"""Loss terms outside the engine: built without a context where they read none, called with only the inputs
they read; every loss function importable from kdrepro.functional."""
from __future__ import annotations

import importlib
import inspect

import pytest
import torch

from kdrepro import functional
from kdrepro.terms import TERMS, StepInputs, TermContext
from kdrepro.terms.dkd import DecoupledKD, DKDParams
from kdrepro.terms.fitnet import FitNet
from kdrepro.terms.kd import KnowledgeDistillation


def _kd64(z, t, T):
    """Hinton's KD in float64 by hand: T^2 * mean_i sum_c p_t (log p_t - log p_s)."""
    z, t = z.double() / T, t.double() / T
    log_ps = z - torch.logsumexp(z, 1, keepdim=True)
    log_pt = t - torch.logsumexp(t, 1, keepdim=True)
    return (T * T) * (log_pt.exp() * (log_pt - log_ps)).sum(1).mean()


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g), torch.tensor([0, 1, 2, 3, 4, 0])


def test_logit_terms_need_no_context_and_no_dummy_inputs():
    z, t, y = _batch()
    kd = KnowledgeDistillation(weight=2.0, T=3.0)  # keyword overrides of the defaults
    got = kd(student_logits=z, teacher_logits=t)["kd"]
    assert torch.allclose(got.double(), 2.0 * _kd64(z, t, 3.0), rtol=1e-5)
    # DKD's defaults, no context, no indices or images (dkd_loss itself is checked in tests/test_term_dkd.py)
    dkd = DecoupledKD()
    assert dkd.params == DKDParams()
    parts = dkd(student_logits=z, teacher_logits=t, targets=y)  # no epoch: no warm-up ramp
    want = functional.dkd_loss(z, t, y, 1.0, 8.0, 4.0)
    assert torch.equal(parts["dkd"], want)
    ramped = dkd(StepInputs(student_logits=z, teacher_logits=t, targets=y, epoch=5))["dkd"]  # the engine's way
    assert torch.allclose(ramped, want * 5 / 20)


def test_params_as_object_dict_or_keywords_agree_and_are_validated():
    a = DecoupledKD(DKDParams(beta=2.0)).params
    assert a == DecoupledKD({"beta": 2.0}).params == DecoupledKD(beta=2.0).params
    with pytest.raises(ValueError, match="beta"):
        DecoupledKD(beta=-1.0)
    with pytest.raises(ValueError, match="T"):
        DecoupledKD(DKDParams(), T=0.0)


def test_a_term_that_reads_its_context_says_so():
    with pytest.raises(ValueError, match=r"'fitnet' reads its context.*ctx=TermContext"):
        FitNet()
    from kdrepro.models import create_model

    s, t = create_model("resnet8", 10), create_model("resnet14", 10)
    term = FitNet(ctx=TermContext(student=s, teacher=t), stage=1)
    x = torch.randn(2, 3, 32, 32)
    _, fs = s(x, return_features=True)
    _, ft = t(x, return_features=True)
    loss = term(student_features=fs, teacher_features=ft, student_logits=torch.zeros(2, 10))["fitnet"]
    assert loss.ndim == 0 and loss > 0


@pytest.mark.parametrize("name", list(TERMS))
def test_every_registered_term_builds_from_defaults_or_names_its_context(name):
    cls = TERMS.get(name)
    try:
        term = cls()
    except ValueError as err:
        assert "ctx=TermContext" in str(err)
        return
    assert term.params == cls.Params()


def test_every_loss_function_of_the_terms_is_in_kdrepro_functional():
    import kdrepro.losses as losses

    expected = {n for n in losses.__all__}
    for name in TERMS:
        module = importlib.import_module(TERMS.get(name).__module__)
        expected |= {n for n in getattr(module, "__all__", []) if n.endswith("_loss")}
    assert expected <= set(functional.__all__), sorted(expected - set(functional.__all__))
    for n in functional.__all__:
        assert callable(getattr(functional, n)) and (inspect.isfunction(getattr(functional, n))
                                                     or inspect.isclass(getattr(functional, n)))
