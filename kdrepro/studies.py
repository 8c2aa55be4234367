"""What the studies are, apart from how they are planned (:mod:`kdrepro.experiments`) and shown
(:mod:`kdrepro.report`): their names, the roles of their method labels (display names, colours), and which
runs of the ablation study split SLKD's gain over KD into the curriculum and the logit-MSE term."""
from __future__ import annotations

import pandas as pd

STUDIES = ("baselines", "kd_baselines", "main", "ablations", "budgets", "matched")
#: display names of the study roles (a baseline named after a loss term takes the term's ``display``)
ROLE_NAMES = {"teacher": "teacher", "vanilla": "vanilla student", "kd": "KD", "slkd": "SLKD",
              "kd_matched": "KD (SLKD's steps)", "slkd_no_mse": "SLKD without MSE", "kd_mse": "KD with MSE"}
#: a fixed colour per study role in every figure
ROLE_COLOURS = {"vanilla": "tab:gray", "kd": "tab:blue", "slkd": "tab:orange", "kd_matched": "tab:cyan",
                "teacher": "black"}


#: SLKD's gain over KD in two parts (:func:`kdrepro.report.mse_decomposition`): (label, method a, method b) of ``a - b``
MSE_COMPARISONS = (("SLKD without MSE − KD", "slkd_no_mse", "kd"), ("KD with MSE − KD", "kd_mse", "kd"),
                   ("SLKD − KD with MSE", "slkd", "kd_mse"), ("SLKD − SLKD without MSE", "slkd", "slkd_no_mse"),
                   ("SLKD − KD", "slkd", "kd"))


def mse_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The ablation study's runs that :func:`kdrepro.report.mse_decomposition` compares, ``method`` relabelled: ``kd`` (the
    no-curriculum reference), ``slkd`` (the ``mse`` axis' ``on``: the authors' setting), ``slkd_no_mse``
    (``off``) and ``kd_mse`` (the ``pacing`` axis' ``full``: every image in every phase, so KD plus the MSE
    term after the warm-up, :func:`kdrepro.sequencer.full_pacing`)."""
    axis = runs["axis"] if "axis" in runs else pd.Series("", index=runs.index, dtype=object)
    variant = runs["variant"] if "variant" in runs else pd.Series("", index=runs.index, dtype=object)
    return pd.concat([runs[axis == "reference"].assign(method="kd"),
                      runs[(axis == "mse") & (variant == "on")].assign(method="slkd"),
                      runs[(axis == "mse") & (variant == "off")].assign(method="slkd_no_mse"),
                      runs[(axis == "pacing") & (variant == "full")].assign(method="kd_mse")], ignore_index=True)
