"""The hypotheses of the analysis plan (``docs/analysis-plan-cpu300.md``) and their tests, from the ablation
study's runs.

Each hypothesis is a difference of two arms, "first minus second", in the direction the paper's account
predicts. An arm is a set of runs of the ablation study, one per seed, named by its ``axis`` and
``variant``. The primary test pairs the two arms by seed, using only the seeds whose two runs trained on the
same device kind (:func:`kdrepro.experiments.run_device`: a GPU's name, or a CPU's name and model). It is a
paired t test when at least ``min_pairs`` such pairs exist, otherwise Welch's unpaired test on every seed of
the two arms. Welch's test is reported for every hypothesis. The Holm–Bonferroni correction runs over the
primary p values of the hypotheses present. :mod:`kdrepro.stats` computes each statistic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from . import stats

__all__ = ["Arm", "Hypothesis", "ARMS", "HYPOTHESES", "evaluate_hypotheses", "verdict", "budget_crossover"]


@dataclass(frozen=True)
class Arm:
    """Runs of the ablation study: those of ``axis`` whose ``variant`` is ``variant`` (any variant when None)."""

    label: str
    axis: str
    variant: str | None = None

    def select(self, runs: pd.DataFrame) -> pd.DataFrame:
        rows = runs[runs["axis"] == self.axis] if "axis" in runs else runs.iloc[:0]
        return rows if self.variant is None else rows[rows["variant"] == self.variant]


@dataclass(frozen=True)
class Hypothesis:
    """``first`` > ``second``: the difference first − second is positive."""

    key: str
    claim: str
    first: str
    second: str
    isolates: str


#: the arms of the plan, by name (the ``reference`` axis holds KD without a curriculum)
ARMS = {"slkd": Arm("SLKD", "order", "easy_first"), "kd": Arm("KD", "reference"),
        "hard_first": Arm("hard first", "order", "hard_first"), "random": Arm("random", "order", "random"),
        "slkd_no_mse": Arm("SLKD without MSE", "mse", "off"), "kd_mse": Arm("KD with MSE", "pacing", "full")}

#: H1–H5 of the analysis plan
HYPOTHESES = (
    Hypothesis("H1", "SLKD > KD", "slkd", "kd", "the whole method"),
    Hypothesis("H2", "easy first > hard first", "slkd", "hard_first", "the direction of the sequence"),
    Hypothesis("H3", "easy first > random", "slkd", "random", "whether any snapshot order matters"),
    Hypothesis("H4", "SLKD > SLKD without MSE", "slkd", "slkd_no_mse", "the logit-MSE term, given the curriculum"),
    Hypothesis("H5", "SLKD > KD with MSE", "slkd", "kd_mse", "the curriculum, given the MSE term"),
)


def verdict(difference: float, high: float, p_holm: float, alpha: float = 0.05, smallest_effect: float = 0.5) -> str:
    """The plan's reading of one primary test: **support** when the Holm-adjusted p is below ``alpha`` and the
    difference is positive; **refutation** when it is below ``alpha`` and negative, or when the interval's
    upper end is below ``smallest_effect``; else **no answer**. Support is checked first (the plan lists it
    first), so a significant advantage smaller than ``smallest_effect`` counts as support."""
    if any(math.isnan(v) for v in (difference, high, p_holm)):
        return "no answer"
    if p_holm < alpha and difference > 0:
        return "support"
    if (p_holm < alpha and difference < 0) or high < smallest_effect:
        return "refutation"
    return "no answer"


def _split_by_device(a: pd.DataFrame, b: pd.DataFrame) -> tuple[list, list]:
    """The seeds two arms (indexed by seed, with a ``device`` column) share, split into those whose two runs
    trained on one device kind (paired) and those whose pair crosses device kinds."""
    common = [s for s in a.index if s in b.index]
    same = [s for s in common if a.at[s, "device"] == b.at[s, "device"]]
    return same, [s for s in common if s not in same]


def _arm_values(runs: pd.DataFrame, arm: Arm, metric: str) -> pd.DataFrame:
    """An arm's ``metric`` and device by seed; a diverged run (no accuracy, docs/run-store.md) is left out."""
    rows = arm.select(runs)
    return rows[rows[metric].notna()].drop_duplicates("seed").set_index("seed")[[metric, "device"]]


def evaluate_hypotheses(runs: pd.DataFrame, hypotheses=HYPOTHESES, arms: dict[str, Arm] | None = None,
                    metric: str = "last_top1", min_pairs: int = 5, alpha: float = 0.05,
                    smallest_effect: float = 0.5, plan: str | None = None) -> pd.DataFrame:
    """One row per hypothesis whose two arms both have runs in ``runs`` (the ablation study's tidy table,
    with its ``device`` column): the paired test on the same-device seeds, Welch's test on all seeds, the
    primary test's Holm-adjusted p value, and the verdict; ``welch_verdict`` applies the same rules to Welch's
    test (Holm over the Welch p values), so that a table can say where the secondary test disagrees with the
    primary one, as the plan's results page must. A verdict needs an analysis plan written before
    the runs were read (``plan``, a profile's ``analysis_plan``): without one the column says
    "exploratory (no analysis plan)". It is withheld ("withheld: study incomplete") while
    ``runs.attrs["missing"]`` names runs not yet in the store."""
    arms = ARMS if arms is None else arms
    rows = []
    for h in hypotheses:
        a, b = _arm_values(runs, arms[h.first], metric), _arm_values(runs, arms[h.second], metric)
        if a.empty or b.empty:
            continue
        same, crossing = _split_by_device(a, b)
        paired = stats.paired_t([float(a.at[s, metric]) - float(b.at[s, metric]) for s in same]) if same else None
        welch = stats.welch_t([float(v) for v in a[metric]], [float(v) for v in b[metric]])
        primary = "paired" if paired is not None and paired.n >= min_pairs else "Welch"
        chosen = paired if primary == "paired" else welch
        nan = float("nan")
        rows.append({
            "hypothesis": h.key, "claim": h.claim, "first": arms[h.first].label, "second": arms[h.second].label,
            "seeds_first": len(a), "seeds_second": len(b), "paired_seeds": same, "crossing_seeds": crossing,
            "devices": sorted(set(a["device"]) | set(b["device"])),
            "paired_n": len(same), "paired_mean": paired.estimate if paired else nan,
            "paired_low": paired.low if paired else nan, "paired_high": paired.high if paired else nan,
            "paired_t": paired.t if paired else nan, "paired_df": paired.df if paired else nan,
            "paired_p": paired.p if paired else nan,
            "welch_mean": welch.estimate, "welch_low": welch.low, "welch_high": welch.high, "welch_t": welch.t,
            "welch_df": welch.df, "welch_p": welch.p,
            "primary": primary, "estimate": chosen.estimate, "low": chosen.low, "high": chosen.high, "p": chosen.p})
    out = pd.DataFrame(rows)
    if runs.attrs.get("missing"):
        out.attrs["missing"] = list(runs.attrs["missing"])
    if out.empty:
        return out
    out["p_holm"] = stats.holm(list(out["p"]))
    out["welch_p_holm"] = stats.holm(list(out["welch_p"]))
    incomplete = bool(runs.attrs.get("missing"))
    for column, (est, high, p_holm) in (("verdict", ("estimate", "high", "p_holm")),
                                        ("welch_verdict", ("welch_mean", "welch_high", "welch_p_holm"))):
        out[column] = ["exploratory (no analysis plan)" if not plan else
                       "withheld: study incomplete" if incomplete else
                       verdict(e, hi, ph, alpha, smallest_effect)
                       for e, hi, ph in zip(out[est], out[high], out[p_holm])]
    return out


def budget_crossover(runs: pd.DataFrame, first: str = "slkd", second: str = "kd",
                     metric: str = "last_top1") -> pd.DataFrame:
    """The plan's descriptive budget part: at every epoch budget of the budget study's tidy table, ``first``
    − ``second`` paired by seed over the seeds whose two runs share a device kind, with the paired t
    interval, the seeds ``first`` wins, and the seeds left out because their pair crosses device kinds.
    ``sign_change`` marks a budget whose paired mean has the other sign than the budget before it."""
    rows = []
    for epochs, group in runs.groupby("epochs", sort=True):
        group = group[group[metric].notna()]  # a diverged run has no accuracy (docs/run-store.md)
        a = group[group["method"] == first].drop_duplicates("seed").set_index("seed")
        b = group[group["method"] == second].drop_duplicates("seed").set_index("seed")
        same, crossing = _split_by_device(a, b)
        if not same:
            continue
        diffs = [float(a.at[s, metric]) - float(b.at[s, metric]) for s in same]
        t = stats.paired_t(diffs)
        rows.append({"epochs": int(epochs), "seeds": len(same), "first_mean": stats.mean([float(a.at[s, metric]) for s in same]),
                     "second_mean": stats.mean([float(b.at[s, metric]) for s in same]), "mean": t.estimate,
                     "low": t.low, "high": t.high, "wins": sum(d > 0 for d in diffs),
                     "crossing_seeds": crossing,
                     "devices": sorted(set(a.loc[same, "device"]) | set(b.loc[same, "device"]))})
    out = pd.DataFrame(rows)
    if runs.attrs.get("missing"):
        out.attrs["missing"] = list(runs.attrs["missing"])
    if not out.empty:
        signs = [math.copysign(1, m) if m != 0 else 0 for m in out["mean"]]
        out["sign_change"] = [False] + [signs[i] != signs[i - 1] for i in range(1, len(signs))]
    return out
