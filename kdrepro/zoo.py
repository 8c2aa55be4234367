"""The model zoo's costs: parameters and multiply-accumulates of each network at a data set's shape."""
from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

#: He et al. (2016), "Deep Residual Learning for Image Recognition", Table 6 (CIFAR-10, option-A
#: shortcuts): parameters in millions as published (two significant digits).
HE2016_PARAMS_M = {"resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85, "resnet110": 1.7}


def count_macs(model, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass on one ``input_shape`` image: convolutions
    (output elements x input channels per group x kernel area) and linear layers (in x out). Batch
    norm, activations, pooling and additions are not counted (the usual convention of the CIFAR
    distillation literature)."""
    import torch
    from torch import nn

    total = 0

    def conv_hook(module, _inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += output[0].numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module, _inputs, output):
        nonlocal total
        total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total


def model_cost(name: str, input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10,
               **options: Any) -> dict[str, Any]:
    """``{"params_m", "macs_m"}`` of model ``name`` (millions) for ``input_shape`` and ``num_classes``."""
    from .models import count_parameters, create_model

    model = create_model(name, num_classes, in_channels=int(input_shape[0]), **options)
    return {"params_m": count_parameters(model) / 1e6, "macs_m": count_macs(model, input_shape) / 1e6}


def model_zoo(names: Sequence[str] | None = None, input_shape: Sequence[int] = (3, 32, 32),
              num_classes: int = 10) -> pd.DataFrame:
    """Every model (default: the whole zoo) at CIFAR-10's shape, with He et al.'s published parameter
    counts beside the ResNets built as they were (option-A shortcuts, ``shortcut="pad"``)."""
    from .models import list_models

    rows = []
    for name in names or list_models():
        row = {"model": name, **model_cost(name, input_shape, num_classes)}
        if name in HE2016_PARAMS_M:
            row["params_m_option_a"] = model_cost(name, input_shape, num_classes, shortcut="pad")["params_m"]
            row["he2016_params_m"] = HE2016_PARAMS_M[name]
        rows.append(row)
    return pd.DataFrame(rows)
