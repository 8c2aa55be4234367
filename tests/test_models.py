"""Tests for kdrepro.models: names, RepDistiller compatibility, parameter counts, shapes, errors.

The fixtures in tests/data/ were produced by running RepDistiller's own networks
(tests/data/make_repdistiller_fixtures.py): their state-dict keys and shapes, and their logits and feature
statistics with weights and inputs given by a formula that this file recomputes independently.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kdrepro  # noqa: F401  (import guard before anything touches torchvision)
from kdrepro.models import (
    CheckpointMismatchError,
    count_parameters,
    create_model,
    list_models,
    load_weights,
)
from kdrepro.models.resnet import PadShortcut

DATA = Path(__file__).parent / "data"
STATE_DICTS = json.loads((DATA / "repdistiller_state_dicts.json").read_text())
LOGITS = json.loads((DATA / "repdistiller_logits.json").read_text())

NAMES = [
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4",
    "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg11", "vgg13",
    "MobileNetV2", "ShuffleV1", "ShuffleV2",
]
RESNETS = {  # depth, widths (stem, stage 1..3), from He et al. 2016 and RepDistiller's x4 variants
    "resnet8": (8, (16, 16, 32, 64)), "resnet14": (14, (16, 16, 32, 64)), "resnet20": (20, (16, 16, 32, 64)),
    "resnet32": (32, (16, 16, 32, 64)), "resnet44": (44, (16, 16, 32, 64)), "resnet56": (56, (16, 16, 32, 64)),
    "resnet110": (110, (16, 16, 32, 64)), "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is fastest and keeps shared CI cores free; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- helpers
def their_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """RepDistiller's state-dict keys -> shapes, in their order, decoded from the fixture."""
    shapes = {}
    for module, spec in STATE_DICTS["models"][name].items():
        for item in spec.split():
            leaf, _, dims = item.partition(":")
            shapes[f"{module}.{leaf}" if module else leaf] = tuple(int(d) for d in dims.split("x")) if dims else ()
    return shapes


def formula_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The weights of LOGITS["formula"], built from RepDistiller's key list (not from our model)."""
    state = {}
    for k, (key, shape) in enumerate(their_shapes(name).items()):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros(shape, dtype=torch.int64)
            continue
        numel = math.prod(shape)
        v = torch.sin(0.1 * torch.arange(numel, dtype=torch.float64) + k).reshape(shape)
        if key.endswith("running_var"):
            t = 1 + 0.25 * (1 + v)
        elif key.endswith(("running_mean", "bias")):
            t = 0.1 * v
        elif len(shape) == 1:
            t = 1 + 0.25 * v
        else:
            t = 2 * v / math.sqrt(numel / shape[0])
        state[key] = t.float()
    return state


def formula_input(height: int) -> torch.Tensor:
    i = torch.arange(LOGITS["batch"] * 3 * height * height, dtype=torch.float64)
    return (0.5 * torch.sin(0.02 * i) + 0.5 * torch.cos(0.11 * i)).reshape(LOGITS["batch"], 3, height, height)


def resnet_param_count(name: str, num_classes: int, shortcut: str, in_channels: int = 3) -> int:
    """Parameters of a CIFAR ResNet counted by hand: convolutions (no bias), BN (weight + bias), fc."""
    depth, widths = RESNETS[name]
    n = (depth - 2) // 6
    total = 9 * in_channels * widths[0] + 2 * widths[0]
    prev = widths[0]
    for stage, width in enumerate(widths[1:]):
        for block in range(n):
            total += 9 * prev * width + 2 * width + 9 * width * width + 2 * width
            changes_shape = block == 0 and (stage > 0 or prev != width)
            if changes_shape and shortcut == "conv":
                total += prev * width + 2 * width
            prev = width
    return total + widths[3] * num_classes + num_classes


# ----------------------------------------------------------------------------- registry
def test_list_models_has_exactly_the_repdistiller_names():
    assert sorted(list_models()) == sorted(NAMES)
    assert sorted(STATE_DICTS["models"]) == sorted(NAMES)


def test_unknown_name_error_names_it_and_lists_valid_ones():
    with pytest.raises(ValueError) as err:
        create_model("resnet21", 10)
    message = str(err.value)
    assert "'resnet21'" in message
    assert all(name in message for name in NAMES)


def test_bad_options_and_sizes_are_rejected_with_the_bad_value():
    with pytest.raises(ValueError, match="shortcut"):
        create_model("vgg8", 10, shortcut="pad")
    with pytest.raises(ValueError, match="'zeros'"):
        create_model("resnet8", 10, shortcut="zeros")
    with pytest.raises(ValueError, match="num_classes.*0"):
        create_model("resnet8", 0)
    with pytest.raises(ValueError, match="in_channels"):
        create_model("resnet8", 10, in_channels=-1)
    model = create_model("resnet8", 10, in_channels=1)
    with pytest.raises(ValueError, match=r"\[batch, 1, height, width\]"):
        model(torch.zeros(2, 3, 8, 8))


# ----------------------------------------------------------------------------- RepDistiller compatibility
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_keys_and_shapes_match_repdistiller(name):
    ours = {k: tuple(v.shape) for k, v in create_model(name, 100).state_dict().items()}
    theirs = their_shapes(name)
    assert sorted(set(ours) - set(theirs)) == [] and sorted(set(theirs) - set(ours)) == []
    assert ours == theirs


@pytest.mark.parametrize("case", LOGITS["cases"], ids=lambda c: f"{c['model']}@{c['height']}")
def test_repdistiller_weights_give_repdistiller_logits_and_features(case, tmp_path):
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"epoch": 240, "model": formula_state_dict(case["model"]), "best_acc": torch.tensor(77.0)}, path)
    model = create_model(case["model"], LOGITS["num_classes"], weights=path).double().eval()
    with torch.no_grad():
        logits, feats = model(formula_input(case["height"]), return_features=True)
    expected = torch.tensor(case["logits"], dtype=torch.float64)
    scale = expected.abs().max().item()
    assert scale > 0.1  # the fixture is not degenerate
    torch.testing.assert_close(logits, expected, rtol=1e-6, atol=1e-7 * scale)
    assert len(feats["stages"]) == len(case["stages"])
    for ours, theirs in zip(feats["stages"], case["stages"]):
        assert list(ours.shape) == theirs["shape"]
        assert ours.mean().item() == pytest.approx(theirs["mean"], rel=1e-6, abs=1e-9)
        assert ours.pow(2).mean().sqrt().item() == pytest.approx(theirs["rms"], rel=1e-6)
    assert list(feats["pooled"].shape) == case["pooled"]["shape"]
    assert feats["pooled"].mean().item() == pytest.approx(case["pooled"]["mean"], rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("layout", ["bare", "state_dict", "net", "module_prefix", "no_num_batches_tracked"])
def test_checkpoint_layouts_load(layout, tmp_path):
    state = formula_state_dict("resnet8")
    if layout == "bare":
        obj = state
    elif layout in ("state_dict", "net"):
        obj = {layout: state, "epoch": 3}
    elif layout == "module_prefix":
        obj = {"model": {f"module.{k}": v for k, v in state.items()}}
    else:
        obj = {"model": {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}}
    path = tmp_path / "weights.pt"
    torch.save(obj, path)
    model = create_model("resnet8", 100, weights=path)
    loaded = model.state_dict()
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(loaded[key], value), key


def test_checkpoint_of_other_class_count_is_refused_with_details(tmp_path):
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"model": formula_state_dict("resnet8")}, path)  # 100 classes
    with pytest.raises(CheckpointMismatchError) as err:
        create_model("resnet8", 10, weights=path)
    message = str(err.value)
    assert "'resnet8'" in message and str(path) in message
    assert "fc.weight: file [100, 64] vs model [10, 64]" in message
    assert "fc.bias: file [100] vs model [10]" in message


def test_checkpoint_of_other_architecture_is_refused_with_details(tmp_path):
    path = tmp_path / "resnet8.pth"
    torch.save({"model": formula_state_dict("resnet8")}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        create_model("resnet14", 100, weights=path)
    message = str(err.value)
    assert "'resnet14'" in message and str(path) in message
    assert "layer1.1.conv1.weight" in message and "missing" in message
    with pytest.raises(CheckpointMismatchError, match="does not have.*downsample"):
        create_model("resnet8", 100, weights=path, shortcut="pad")


def test_unreadable_checkpoints_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_weights(create_model("resnet8", 10), tmp_path / "nowhere.pth")
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 240, "best_acc": 1.0}, path)
    with pytest.raises(ValueError, match=r"meta\.pth.*no state dict.*best_acc"):
        create_model("resnet8", 10, weights=path)


def test_checkpoint_with_arbitrary_objects_is_refused_not_unpickled(tmp_path):
    np = pytest.importorskip("numpy")
    path = tmp_path / "pickled.pth"
    torch.save({"model": create_model("resnet8", 10).state_dict(), "acc": np.float64(70.0)}, path)
    with pytest.raises(ValueError, match=r"(?s)pickled\.pth.*weights_only=True.*Re-save"):
        create_model("resnet8", 10, weights=path)


# ----------------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("name", list(RESNETS))
@pytest.mark.parametrize("shortcut", ["conv", "pad"])
def test_resnet_parameter_count_matches_hand_count(name, shortcut):
    for num_classes, in_channels in ((100, 3), (10, 1)):
        model = create_model(name, num_classes, in_channels=in_channels, shortcut=shortcut)
        assert count_parameters(model) == resnet_param_count(name, num_classes, shortcut, in_channels)


@pytest.mark.parametrize(
    "name, num_classes, options, published",
    [
        # He et al. 2016, Table 6 (CIFAR-10, option A shortcuts)
        ("resnet20", 10, {"shortcut": "pad"}, "0.27"),
        ("resnet56", 10, {"shortcut": "pad"}, "0.85"),
        ("resnet110", 10, {"shortcut": "pad"}, "1.7"),
        # Zagoruyko and Komodakis 2017 (attention transfer), Table 1 (CIFAR-10)
        ("wrn_16_1", 10, {}, "0.2"),
        ("wrn_16_2", 10, {}, "0.7"),
        ("wrn_40_1", 10, {}, "0.6"),
        ("wrn_40_2", 10, {}, "2.2"),
    ],
)
def test_parameter_counts_round_to_published_figures(name, num_classes, options, published):
    """The count in millions, rounded to the published precision, is the published figure."""
    model = create_model(name, num_classes, **options)
    half_unit = 0.5 * 10 ** -len(published.split(".")[1])
    assert abs(count_parameters(model) / 1e6 - float(published)) <= half_unit


@pytest.mark.parametrize(
    "name, millions",
    [("resnet20", 0.27), ("resnet56", 0.86), ("resnet110", 1.7), ("resnet8x4", 1.2), ("resnet32x4", 7.4),
     ("wrn_40_2", 2.2), ("wrn_16_2", 0.70)],
)
def test_cifar100_parameter_counts_match_kd_literature(name, millions):
    """Figures quoted for RepDistiller's CIFAR-100 networks (num_classes=100), within 4 %."""
    assert count_parameters(create_model(name, 100)) / 1e6 == pytest.approx(millions, rel=0.04)


def test_count_parameters_skips_frozen_ones():
    model = create_model("resnet8", 10)
    total = count_parameters(model)
    model.fc.weight.requires_grad_(False)
    assert count_parameters(model) == total - 64 * 10


# ----------------------------------------------------------------------------- shapes and features
# expected (channels, height) of each stage for a 32x32 input, per network (hand-derived from the
# architectures' strides; the channels agree with mdistiller's get_stage_channels() where it has one)
STAGES_32 = {
    **{n: [(16, 32), (16, 32), (32, 16), (64, 8)] for n in ["resnet8", "resnet14", "resnet20", "resnet32",
                                                            "resnet44", "resnet56", "resnet110", "wrn_16_1",
                                                            "wrn_40_1"]},
    "resnet8x4": [(32, 32), (64, 32), (128, 16), (256, 8)],
    "resnet32x4": [(32, 32), (64, 32), (128, 16), (256, 8)],
    "wrn_16_2": [(16, 32), (32, 32), (64, 16), (128, 8)],
    "wrn_40_2": [(16, 32), (32, 32), (64, 16), (128, 8)],
    **{n: [(64, 32), (128, 16), (256, 8), (512, 4), (512, 4)] for n in ["vgg8", "vgg11", "vgg13"]},
    "MobileNetV2": [(16, 16), (12, 16), (16, 8), (48, 4), (160, 2)],
    "ShuffleV1": [(24, 32), (240, 16), (480, 8), (960, 4)],
    "ShuffleV2": [(24, 32), (116, 16), (232, 8), (464, 4)],
}
POOLED = {**{n: 64 for n in RESNETS}, "resnet8x4": 256, "resnet32x4": 256, "wrn_16_1": 64, "wrn_40_1": 64,
          "wrn_16_2": 128, "wrn_40_2": 128, "vgg8": 512, "vgg11": 512, "vgg13": 512, "MobileNetV2": 1280,
          "ShuffleV1": 960, "ShuffleV2": 1024}


@pytest.mark.parametrize("name", NAMES)
def test_feature_shapes_for_32x32_inputs(name):
    torch.manual_seed(0)
    model = create_model(name, 7).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats = model(x, return_features=True)
        plain = model(x)
    assert set(feats) == {"stages", "pooled"}
    assert [(f.shape[1], f.shape[2]) for f in feats["stages"]] == STAGES_32[name]
    assert all(f.shape[0] == 2 and f.shape[2] == f.shape[3] for f in feats["stages"])
    assert model.stage_channels == [c for c, _ in STAGES_32[name]]
    assert feats["pooled"].shape == (2, POOLED[name])
    assert logits.shape == (2, 7)
    torch.testing.assert_close(plain, logits)
    torch.testing.assert_close(model.head(feats["pooled"]), logits)


@pytest.mark.parametrize("name", ["resnet20", "vgg8", "ShuffleV1"])
def test_pooled_is_the_spatial_mean_of_the_last_stage(name):
    """For these networks the last stage map is the one that is pooled (RepDistiller's f3/f4 -> f4/f5)."""
    model = create_model(name, 5).eval()
    with torch.no_grad():
        _, feats = model(torch.randn(2, 3, 32, 32), return_features=True)
    last = feats["stages"][-1].double()
    torch.testing.assert_close(feats["pooled"].double(), last.mean(dim=(2, 3)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("in_channels, size", [(3, 32), (1, 8)], ids=["rgb32", "gray8"])
def test_forward_and_backward(name, in_channels, size):
    torch.manual_seed(0)
    model = create_model(name, 10, in_channels=in_channels).train()
    x = torch.randn(2, in_channels, size, size)
    logits, feats = model(x, return_features=True)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    assert [f.shape[1] for f in feats["stages"]] == model.stage_channels
    loss = F.cross_entropy(logits, torch.tensor([1, 7])) + feats["stages"][1].pow(2).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.shape[1] == in_channels
    assert first_conv.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- option A shortcut
def test_pad_shortcut_subsamples_and_zero_pads_channels():
    x = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 2, 4, 4)
    out = PadShortcut(2, 5, stride=2)(x)
    assert out.shape == (2, 5, 2, 2)
    # 3 new channels: 1 before, 2 after; input channel c sits at 1 + c, every other pixel
    for b in range(2):
        for c in range(2):
            assert out[b, 1 + c].tolist() == [[x[b, c, 0, 0].item(), x[b, c, 0, 2].item()],
                                              [x[b, c, 2, 0].item(), x[b, c, 2, 2].item()]]
        for c in (0, 3, 4):
            assert out[b, c].abs().sum().item() == 0


@pytest.mark.parametrize("name", ["resnet20", "resnet8x4"])
def test_option_a_shortcut_has_no_parameters_and_trains(name):
    conv, pad = create_model(name, 10), create_model(name, 10, shortcut="pad")
    downsample = sum(p.numel() for k, p in conv.named_parameters() if ".downsample." in k)
    assert downsample > 0
    assert count_parameters(pad) == count_parameters(conv) - downsample
    assert not any(".downsample." in k for k in pad.state_dict())
    logits, feats = pad(torch.randn(2, 3, 32, 32), return_features=True)
    assert logits.shape == (2, 10) and feats["stages"][-1].shape[1] == pad.stage_channels[-1]
    logits.sum().backward()
    assert pad.conv1.weight.grad is not None
