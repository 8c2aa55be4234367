"""FitNets' regressor option (RepDistiller's ConvReg where the maps differ in size) and AT's pairing option,
against independent computations; both options at their defaults leave a run's id unchanged."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdrepro.config import RunConfig
from kdrepro.models import create_model
from kdrepro.terms import TERMS, StepInputs, TermContext


def _step(s_feats, t_feats):
    return StepInputs(student_logits=torch.zeros(2, 10), targets=torch.zeros(2, dtype=torch.long),
                      indices=torch.arange(2), images=torch.zeros(2, 3, 32, 32), epoch=1, curriculum=False,
                      student_features={"stages": s_feats}, teacher_features={"stages": t_feats})


def test_fitnet_convreg_regresses_a_half_size_map_with_a_transposed_convolution():
    # resnet32x4 -> ShuffleV1, RepDistiller's hint layer 2: the student's map is 8x8, the teacher's 16x16
    torch.manual_seed(0)
    student, teacher = create_model("ShuffleV1", 100), create_model("resnet32x4", 100)
    ctx = TermContext(num_classes=100, num_samples=4, student=student, teacher=teacher, device=torch.device("cpu"))
    term = TERMS.get("fitnet")(TERMS.get("fitnet").Params(regressor="convreg"), ctx)
    conv = term.convreg.conv
    assert isinstance(conv, torch.nn.ConvTranspose2d) and conv.stride == (2, 2) and conv.kernel_size == (4, 4)
    f_s, f_t = torch.randn(2, 480, 8, 8), torch.randn(2, 128, 16, 16)
    # the independent computation: transposed conv (stride 2, pad 1), BN in training mode, ReLU, mean square
    y = F.conv_transpose2d(f_s.double(), conv.weight.double(), conv.bias.double(), stride=2, padding=1)
    mean, var = y.mean((0, 2, 3), keepdim=True), y.var((0, 2, 3), unbiased=False, keepdim=True)
    want = 100.0 * ((F.relu((y - mean) / torch.sqrt(var + 1e-5)) - f_t.double()) ** 2).mean()
    got = term(_step([None, None, f_s], [None, None, f_t]))["fitnet"]
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    # the pool convention on the same maps is another loss (a 1x1 conv, then pooling the teacher's map)
    pool = TERMS.get("fitnet")(TERMS.get("fitnet").Params(), ctx)
    assert pool(_step([None, None, f_s], [None, None, f_t]))["fitnet"].item() != pytest.approx(got.item())


def test_fitnet_convreg_refuses_a_kernel_size():
    fitnet = TERMS.get("fitnet")
    with pytest.raises(ValueError, match="kernel_size"):
        fitnet.check(fitnet.Params(regressor="convreg", kernel_size=3), "resnet8", "resnet14")


def test_at_pairing_first_pairs_the_first_maps():
    at = TERMS.get("at")
    maps = [torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(k)) for k in range(5)]
    student, teacher = maps[:3], maps[2:]  # stems and 2 stages vs stems and 2 stages, shifted

    def q(f):
        a = f.pow(2).mean(1).flatten(1)
        return a / a.norm(dim=1, keepdim=True)

    def pair_loss(pairs):
        return 1000.0 * sum(((q(s) - q(t)) ** 2).mean() for s, t in pairs)

    student4 = [maps[0]] + student  # 4 maps vs 3: unequal counts
    for pairing, pairs in (("first", zip(student4[:3], teacher)), ("last", zip(student4[1:], teacher))):
        term = at(at.Params(pairing=pairing), None)
        got = term(_step(student4, teacher))["at"]
        assert got.item() == pytest.approx(pair_loss(pairs).item(), rel=1e-6)


def test_options_at_their_defaults_keep_run_ids():
    base = dict(method="kd", dataset="digits", model="resnet8", teacher={"model": "resnet14"})
    for term, option, default in (("fitnet", "regressor", "pool"), ("at", "pairing", "last")):
        plain = RunConfig.from_dict({**base, "losses": {term: {"weight": 1.0}}}).resolved()
        explicit = RunConfig.from_dict({**base, "losses": {term: {"weight": 1.0, option: default}}}).resolved()
        other = "convreg" if term == "fitnet" else "first"
        changed = RunConfig.from_dict({**base, "losses": {term: {"weight": 1.0, option: other}}}).resolved()
        assert plain.run_id == explicit.run_id != changed.run_id
