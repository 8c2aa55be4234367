"""Regenerate ``repdistiller_state_dicts.json`` and ``repdistiller_logits.json`` from the reference code.

Not part of the test suite: it needs checkouts of RepDistiller (github HobbitLong/RepDistiller) and,
optionally, mdistiller (github megvii-research/mdistiller), and runs *their* networks::

    python tests/data/make_repdistiller_fixtures.py --repdistiller /path/to/RepDistiller \
        --mdistiller /path/to/mdistiller --out tests/data

1. ``repdistiller_state_dicts.json``: for every kdrepro model name, the state-dict keys and shapes of
   RepDistiller's network of that name (num_classes=100), grouped by module: ``{"module": "leaf:AxB
   leaf:C ..."}`` (a scalar's shape is empty). With ``--mdistiller`` it also checks that mdistiller's
   networks have exactly the same keys and shapes.
2. ``repdistiller_logits.json``: RepDistiller's networks, with every state-dict entry set by the formula
   in ``FORMULA`` and run in float64 and eval mode on the input in ``INPUT``: the logits (10 significant
   digits) and the shape, mean and root-mean-square of each feature map of ``forward(x, is_feat=True)``.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import torch

# name in kdrepro -> name in RepDistiller's / mdistiller's model_dict (the same everywhere)
NAMES = [
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4",
    "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg11", "vgg13",
    "MobileNetV2", "ShuffleV1", "ShuffleV2",
]
NUM_CLASSES = 100
# (model, input height = width) pairs for the logits fixture: one per family, resnet8x4 for its
# stride-1 widening shortcut, and VGG at 64 px where RepDistiller applies its fourth max-pool.
LOGIT_CASES = [
    ("resnet8", 32), ("resnet8x4", 32), ("wrn_16_1", 32), ("vgg8", 32), ("vgg8", 64),
    ("MobileNetV2", 32), ("ShuffleV1", 32), ("ShuffleV2", 32),
]
BATCH = 2
FORMULA = (
    "k = position of the key in the model's key list (0-based); v = sin(0.1 * arange(numel) + k) in "
    "float64, reshaped to the shape. Key ending in num_batches_tracked: 0 (int64). running_var: "
    "1 + 0.25 * (1 + v). running_mean or bias: 0.1 * v. weight with 1 dim: 1 + 0.25 * v. weight with "
    ">= 2 dims: 2 * v / sqrt(numel / shape[0]). Then cast to float32."
)
INPUT = "x = 0.5 * sin(0.02 * i) + 0.5 * cos(0.11 * i), i = arange(numel) in float64, reshaped to [2, 3, H, H]"


def formula_tensor(key: str, shape: list[int], k: int) -> torch.Tensor:
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
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
    return t.float()


def formula_input(height: int) -> torch.Tensor:
    i = torch.arange(BATCH * 3 * height * height, dtype=torch.float64)
    return (0.5 * torch.sin(0.02 * i) + 0.5 * torch.cos(0.11 * i)).reshape(BATCH, 3, height, height)


def group_by_module(state: dict[str, torch.Tensor]) -> dict[str, str]:
    grouped: dict[str, list[str]] = {}
    for key, tensor in state.items():
        module, _, leaf = key.rpartition(".")
        grouped.setdefault(module, []).append(f"{leaf}:{'x'.join(map(str, tensor.shape))}")
    return {module: " ".join(leaves) for module, leaves in grouped.items()}


def commit_of(path: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repdistiller", type=Path, required=True, help="RepDistiller checkout (has models/)")
    parser.add_argument("--mdistiller", type=Path, help="mdistiller checkout (has mdistiller/models/cifar/)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()

    sys.path.insert(0, str(args.repdistiller))
    from models import model_dict  # RepDistiller's registry

    state_dicts = {name: model_dict[name](num_classes=NUM_CLASSES).state_dict() for name in NAMES}
    source = f"github.com/HobbitLong/RepDistiller@{commit_of(args.repdistiller)} models/, num_classes={NUM_CLASSES}"
    if args.mdistiller is not None:
        sys.path.insert(0, str(args.mdistiller))
        from mdistiller.models.cifar import cifar_model_dict

        for name in NAMES:
            theirs = cifar_model_dict[name][0](num_classes=NUM_CLASSES).state_dict()
            ours = state_dicts[name]
            if [(k, v.shape) for k, v in theirs.items()] != [(k, v.shape) for k, v in ours.items()]:
                raise SystemExit(f"mdistiller's {name} differs from RepDistiller's")
        source += f"; identical in github.com/megvii-research/mdistiller@{commit_of(args.mdistiller)}"

    fixture = {
        "source": source,
        "format": "model -> {module: 'leaf:shape ...'}; key = module + '.' + leaf; shape dims joined by 'x'",
        "models": {name: group_by_module(sd) for name, sd in state_dicts.items()},
    }
    (args.out / "repdistiller_state_dicts.json").write_text(json.dumps(fixture, indent=1) + "\n")

    cases = []
    for name, height in LOGIT_CASES:
        net = model_dict[name](num_classes=NUM_CLASSES)
        keys = list(net.state_dict())
        net.load_state_dict({key: formula_tensor(key, list(t.shape), k)
                             for k, (key, t) in enumerate(net.state_dict().items())})
        net = net.double().eval()
        with torch.no_grad():
            feats, logits = net(formula_input(height), is_feat=True)
        assert len(keys) == len(state_dicts[name])
        cases.append({
            "model": name,
            "height": height,
            "logits": [[float(f"{v:.10g}") for v in row] for row in logits.tolist()],
            "stages": [{"shape": list(f.shape), "mean": float(f"{f.mean().item():.10g}"),
                        "rms": float(f"{f.pow(2).mean().sqrt().item():.10g}")} for f in feats[:-1]],
            "pooled": {"shape": list(feats[-1].shape), "mean": float(f"{feats[-1].mean().item():.10g}")},
        })
    logits_fixture = {"source": source, "num_classes": NUM_CLASSES, "batch": BATCH, "formula": FORMULA,
                      "input": INPUT, "dtype": "float64, eval mode", "cases": cases}
    # one line per case: readable diffs without one line per number
    text = json.dumps({**logits_fixture, "cases": ["@"]}, indent=1).replace(
        '"@"', "\n  ".join(json.dumps(case, separators=(",", ":")) + "," for case in cases).rstrip(",")
    )
    (args.out / "repdistiller_logits.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
