"""Tables and figures of the notebooks: mean ± std over seeds, published references, CSV/Markdown, plots.

Conventions, stated in every table's caption:

* accuracies are test top-1 (%) at the **last** epoch and at the **best** epoch, mean ± sample standard
  deviation (n - 1) over seeds; ``seeds`` counts the runs; a single run shows its value alone;
* ``reference`` is a published number for the same data set, teacher, student and method
  (``kdrepro/reference/published.csv``, every row with its source), and ``Δ last - ref`` = our
  last-epoch mean minus that number. The SLKD paper's own numbers were not transcribed: they show as
  "not transcribed", never as a number.

Tables are written as CSV (numbers at full precision) and Markdown (as displayed, two decimals); figures as
PNG and SVG (with fixed SVG ids and no date, so an unchanged figure writes unchanged files).
"""
from __future__ import annotations

import contextlib
import functools
import math
import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .runs import mean_std
from .studies import MSE_COMPARISONS, ROLE_COLOURS, ROLE_NAMES, mse_runs  # noqa: F401  (the notebooks' names)

REFERENCE_FILE = Path(__file__).resolve().parent / "reference" / "published.csv"
NOT_TRANSCRIBED = "not transcribed"
_NUMBER = r"[+-]?\d+(\.\d+)?( ± \d+(\.\d+)?)?|—"  # formatted numbers: right-aligned in Markdown
_REFERENCE_COLUMNS = ("dataset", "teacher", "student", "method", "top1", "source", "url", "note")
def _carries_missing(fn):
    """Decorator: the result keeps ``attrs["missing"]`` (runs of the study not in the store) of the first
    argument, so that a table computed from an incomplete study says so when shown and written."""
    @functools.wraps(fn)
    def wrapper(first, *args, **kwargs):
        out = fn(first, *args, **kwargs)
        missing = getattr(first, "attrs", {}).get("missing")
        if missing and isinstance(out, pd.DataFrame):
            out.attrs["missing"] = list(missing)
        return out
    return wrapper


def missing_note(table: pd.DataFrame) -> str:
    """"**Incomplete**: n runs missing ..." for a table of an incomplete study, else ``""``."""
    missing = table.attrs.get("missing") or []
    if not missing:
        return ""
    shown = "; ".join(missing[:30]) + (f"; and {len(missing) - 30} more" if len(missing) > 30 else "")
    return (f"**Incomplete: {len(missing)} run(s) of this study are not in the run store yet**, so these numbers "
            f"are not final: {shown}.")


class _MethodNames:
    """Display names of the studies' method labels: the study roles (teacher, vanilla student, KD, SLKD,
    KD at SLKD's steps), a registered loss term's ``display`` for a baseline named after it (``fitnet`` ->
    FitNets, ``dkd`` -> DKD), else the label itself. Nothing here names a particular loss term."""

    ROLES = ROLE_NAMES

    def get(self, label: str, default: str | None = None) -> str:
        if label in self.ROLES:
            return self.ROLES[label]
        from .terms import TERMS

        if isinstance(label, str) and label in TERMS:
            return TERMS.get(label).display
        return default if default is not None else label

    def __iter__(self):
        from .terms import TERMS

        return iter(["teacher", "vanilla", "kd", *(n for n in TERMS if n not in self.ROLES), "slkd", "kd_matched"])


class _MethodColours:
    """A fixed colour per study role, and one from a colour-blind-safe palette for any other label, in the
    order labels are first asked for (stable within a figure)."""

    ROLES = ROLE_COLOURS
    PALETTE = ("tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:red")

    def __init__(self):
        self._given: dict[str, str] = {}

    def get(self, label: str, default: str | None = None) -> str:
        if label in self.ROLES:
            return self.ROLES[label]
        if label not in self._given:
            self._given[label] = self.PALETTE[len(self._given) % len(self.PALETTE)]
        return self._given[label]


#: display names of the methods (study labels)
METHOD_NAMES = _MethodNames()
METHOD_COLOURS = _MethodColours()


# ------------------------------------------------------------------------------------------- references


def load_references(path: str | Path | None = None) -> pd.DataFrame:
    """The published reference numbers: one row per (data set, teacher, student, method, source).

    ``teacher``/``student`` ``*`` match any pair. ``top1`` is empty exactly when ``note`` says
    "not transcribed". Raises ValueError naming the file and row for a malformed file.
    """
    path = Path(path) if path is not None else REFERENCE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"reference file {path} does not exist")
    refs = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in _REFERENCE_COLUMNS if c not in refs.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {', '.join(_REFERENCE_COLUMNS)}")
    for i, row in refs.iterrows():
        where = f"{path}, row {i + 2}"
        if not row["source"].strip():
            raise ValueError(f"{where}: every reference needs a source")
        if (row["top1"] == "") != (row["note"] == NOT_TRANSCRIBED):
            raise ValueError(f"{where}: top1 must be empty exactly when note is {NOT_TRANSCRIBED!r}")
    refs["top1"] = pd.to_numeric(refs["top1"].replace("", np.nan))
    return refs


@_carries_missing
def add_references(summary: pd.DataFrame, references: pd.DataFrame | None = None) -> pd.DataFrame:
    """``summary`` plus ``reference``, ``ref_source``, ``ref_note`` and ``diff`` (= ``last_mean`` - reference).

    A row matches the first reference (in file order) with the same data set and method whose teacher
    and student are equal or ``*``; unmatched rows get NaN and an empty source.
    """
    refs = load_references() if references is None else references
    out = summary.copy()
    values, sources, notes = [], [], []
    for row in out.to_dict("records"):
        match = refs[(refs["dataset"] == row["dataset"]) & (refs["method"] == row["method"])
                     & refs["teacher"].isin([row["teacher"], "*"]) & refs["student"].isin([row["student"], "*"])]
        first = match.iloc[0] if len(match) else None
        values.append(first["top1"] if first is not None else math.nan)
        sources.append(first["source"] if first is not None else "")
        notes.append(first["note"] if first is not None else "")
    out["reference"] = values
    out["ref_source"] = sources
    out["ref_note"] = notes
    out["diff"] = out["last_mean"] - out["reference"]
    return out


# ------------------------------------------------------------------------------------------- summaries


@_carries_missing
def summarize(runs: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Group a tidy run table by ``by`` (in order of first appearance) and summarise over seeds:
    ``last_mean, last_std, best_mean, best_std, seeds, epochs, iterations`` (mean over the group)."""
    missing = [c for c in list(by) + ["last_top1", "best_top1"] if c not in runs.columns]
    if missing:
        raise KeyError(f"runs table has no column(s) {missing}; it has {', '.join(runs.columns)}")
    rows = []
    for keys, group in runs.groupby(list(by), sort=False, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        diverged = _diverged_rows(group)
        finished = group[~diverged]
        last = mean_std(finished["last_top1"])
        best = mean_std(finished["best_top1"])
        row = dict(zip(by, keys))
        row.update(last_mean=last[0], last_std=last[1], best_mean=best[0], best_std=best[1], seeds=last[2])
        if "epochs" in group:
            row["epochs"] = int(group["epochs"].iloc[0]) if group["epochs"].nunique() == 1 else "mixed"
        if "iterations" in group:
            row["iterations"] = float(group["iterations"].mean())
        if "flags" in finished and (finished["flags"].fillna("") != "").any():
            row["flagged"] = int((finished["flags"].fillna("") != "").sum())
        if diverged.any():
            row["diverged"] = int(diverged.sum())
            row["diverged_in"] = diverged_text(group[diverged])
        rows.append(row)
    out = pd.DataFrame(rows, columns=None if rows else [*by, "last_mean", "last_std", "best_mean", "best_std",
                                                          "seeds"])
    if "flagged" in out:
        out["flagged"] = out["flagged"].fillna(0).astype(int)
    if "diverged" in out:
        out["diverged"] = out["diverged"].fillna(0).astype(int)
        out["diverged_in"] = out["diverged_in"].fillna("")
    return out


def _diverged_rows(runs: pd.DataFrame) -> pd.Series:
    """Which runs of a tidy table diverged (a ``diverged`` entry; :func:`kdrepro.experiments.run_row`)."""
    if "diverged" not in runs:
        return pd.Series(False, index=runs.index)
    return runs["diverged"].notna() & (runs["diverged"].astype(str) != "")


def diverged_text(runs: pd.DataFrame) -> str:
    """Where the diverged runs of a group diverged, by place: ``"epoch 12 (seeds 0, 1)"``."""
    where: dict[str, list[str]] = {}
    for place, seed in zip(runs["diverged"], runs["seed"] if "seed" in runs else [None] * len(runs)):
        where.setdefault(str(place), []).append(str(seed))
    return "; ".join(f"{place} (seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)})"
                     for place, seeds in where.items())


@_carries_missing
def paired_difference(runs: pd.DataFrame, a: str, b: str, by: Sequence[str] = ("dataset", "teacher", "student"),
                      metric: str = "last_top1") -> pd.DataFrame:
    """Per group, ``method a - method b`` paired by seed: mean ± sample std of the differences, how many
    seeds ``a`` wins, and the iterations ratio ``a / b``. With a ``device`` column, ``crossing`` counts the
    seeds whose two runs trained on different device kinds (such a pair is in effect unpaired)."""
    rows = []
    for keys, group in runs.groupby(list(by), sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        ga = group[group["method"] == a].set_index("seed")
        gb = group[group["method"] == b].set_index("seed")
        # a diverged run has no accuracy: its seed is left out of the pairs (the "seeds" column counts them)
        seeds = [s for s in ga.index if s in gb.index and pd.notna(ga.at[s, metric]) and pd.notna(gb.at[s, metric])]
        if not seeds:
            continue
        diffs = [float(ga.at[s, metric]) - float(gb.at[s, metric]) for s in seeds]
        m, sd, n = mean_std(diffs)
        rows.append({**dict(zip(by, keys)), f"{a}_mean": float(ga.loc[seeds, metric].mean()),
                     f"{b}_mean": float(gb.loc[seeds, metric].mean()), "diff_mean": m, "diff_std": sd,
                     "wins": sum(d > 0 for d in diffs), "seeds": n,
                     "crossing": int(sum(ga.at[s, "device"] != gb.at[s, "device"] for s in seeds))
                     if "device" in group else 0,
                     "iterations_ratio": float(ga.loc[seeds, "iterations"].mean() / gb.loc[seeds, "iterations"].mean())})
    return pd.DataFrame(rows)


@_carries_missing
def paired_variants(runs: pd.DataFrame, axis: str, baseline: str, metric: str = "last_top1") -> pd.DataFrame:
    """Each variant of one ablation ``axis`` minus the ``baseline`` variant, paired by seed (same seed =
    same initialisation): mean ± std of the differences, wins, seeds and the iterations ratio."""
    sub = runs[runs["axis"] == axis].assign(method=lambda d: d["variant"])
    frames = [paired_difference(sub, v, baseline, metric=metric).rename(columns={f"{v}_mean": "variant_mean",
                                                                                  f"{baseline}_mean": "baseline_mean"})
              .assign(variant=v, baseline=baseline)
              for v in dict.fromkeys(sub["variant"]) if v != baseline]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@_carries_missing
def paired_by_budget(runs: pd.DataFrame, comparisons: Sequence[tuple[str, str]] = (("slkd", "kd"), ("slkd", "vanilla"),
                                                                                  ("kd", "vanilla")),
                     metric: str = "last_top1") -> pd.DataFrame:
    """The budget study's methods against each other at every epoch budget, paired by seed: one row per
    (budget, ``a``, ``b``) with both methods present, as :func:`paired_difference` computes it."""
    frames = []
    for a, b in comparisons:
        if not {a, b} <= set(runs["method"]):
            continue
        p = paired_difference(runs, a, b, by=("epochs",), metric=metric)
        frames.append(p.rename(columns={f"{a}_mean": "a_mean", f"{b}_mean": "b_mean"}).assign(a=a, b=b))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True).sort_values(["epochs"], kind="stable", ignore_index=True)


@_carries_missing
def format_paired_by_budget(paired: pd.DataFrame) -> pd.DataFrame:
    """Display form of :func:`paired_by_budget`: "first" is method ``a`` of each row, "second" method ``b``."""
    return format_paired_comparisons(paired, keys=("epochs",))


@_carries_missing
def format_paired_comparisons(paired: pd.DataFrame, keys: Sequence[str] = ()) -> pd.DataFrame:
    """Display form of a table of paired comparisons with columns ``a``, ``b``, ``a_mean``, ``b_mean`` (and
    ``keys`` first): "first" is method ``a`` of each row, "second" method ``b``."""
    if paired.empty:
        return pd.DataFrame()
    return pd.DataFrame({
        **{k: paired[k] for k in keys},
        "comparison": [f"{METHOD_NAMES.get(a, a)} − {METHOD_NAMES.get(b, b)}" for a, b in zip(paired["a"], paired["b"])],
        **_paired_columns(paired, "a_mean", "b_mean", "first", "second")})


@_carries_missing
def mse_decomposition(runs: pd.DataFrame, metric: str = "last_top1") -> pd.DataFrame:
    """SLKD's gain over KD split in two, paired by seed, from the ablation study: SLKD differs from KD by its
    curriculum (which also takes fewer steps) and by the 0.05·MSE on logits of its curriculum phases (the
    authors' code). SLKD without MSE minus KD is the curriculum alone, KD with MSE minus KD the term alone,
    SLKD minus KD with MSE the curriculum given the term, SLKD minus SLKD without MSE the term given the
    curriculum, SLKD minus KD both (:data:`MSE_COMPARISONS`). One row per comparison with a seed that has
    both runs, as :func:`paired_difference` computes it."""
    frame = mse_runs(runs)
    frames = []
    for _, a, b in MSE_COMPARISONS:
        p = paired_difference(frame, a, b, metric=metric)
        if not p.empty:
            frames.append(p.rename(columns={f"{a}_mean": "a_mean", f"{b}_mean": "b_mean"}).assign(a=a, b=b))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@_carries_missing
def format_paired_variants(paired: pd.DataFrame) -> pd.DataFrame:
    """Display form of :func:`paired_variants`."""
    if paired.empty:
        return pd.DataFrame()
    return pd.DataFrame({"variant": paired["variant"], "baseline": paired["baseline"],
                         **_paired_columns(paired, "variant_mean", "baseline_mean", "variant", "baseline")})


# ------------------------------------------------------------------------------------------- hypotheses


def _fmt_ci(estimate: float, low: float, high: float) -> str:
    """``"+1.63 [-0.19, +3.45]"``; without an interval the estimate alone; nothing: ``"—"``."""
    if estimate is None or math.isnan(estimate):
        return "—"
    if math.isnan(low) or math.isnan(high):
        return f"{estimate:+.2f}"
    return f"{estimate:+.2f} [{low:+.2f}, {high:+.2f}]"


def _fmt_p(p: float) -> str:
    return "—" if p is None or math.isnan(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")


@_carries_missing
def format_hypotheses(tests: pd.DataFrame) -> pd.DataFrame:
    """Display form of :func:`kdrepro.hypotheses.evaluate_hypotheses`: the primary test (paired by seed on one
    device kind, or Welch's where fewer than five such pairs exist) with its 95 % interval, raw and
    Holm-adjusted p, Welch's test on every seed, the pairs left out because they cross device kinds, the
    plan's verdict, and the verdict the same rules give Welch's test, with whether it agrees."""
    if tests.empty:
        return pd.DataFrame()
    paired_seeds = [", ".join(map(str, s)) or "none" for s in tests["paired_seeds"]]
    one_kind = ["none" if not s else f"seed{'s' if len(s) > 1 else ''} {', '.join(map(str, s))}"
                for s in tests["paired_seeds"]]
    return pd.DataFrame({
        "hypothesis": tests["hypothesis"] + ": " + tests["claim"],
        "primary test": [f"paired, n = {n} (seeds {s})" if p == "paired" else
                         f"Welch, {a} + {b} seeds (pairs on one device kind: {k})"
                         for p, n, s, k, a, b in zip(tests["primary"], tests["paired_n"], paired_seeds, one_kind,
                                                     tests["seeds_first"], tests["seeds_second"])],
        "difference [95 % CI]": [_fmt_ci(e, lo, hi) for e, lo, hi in zip(tests["estimate"], tests["low"], tests["high"])],
        "t (df)": ["—" if math.isnan(t) else f"{t:.2f} ({df:.1f})" for t, df in
                   zip(tests["paired_t"].where(tests["primary"] == "paired", tests["welch_t"]),
                       tests["paired_df"].where(tests["primary"] == "paired", tests["welch_df"]))],
        "p": [_fmt_p(p) for p in tests["p"]],
        "Holm p": [_fmt_p(p) for p in tests["p_holm"]],
        "Welch, every seed [95 % CI]": [f"{_fmt_ci(e, lo, hi)}, p {_fmt_p(p)}" for e, lo, hi, p in
                                        zip(tests["welch_mean"], tests["welch_low"], tests["welch_high"],
                                            tests["welch_p"])],
        "pairs across devices": [", ".join(f"seed {s}" for s in c) or "none" for c in tests["crossing_seeds"]],
        "verdict": tests["verdict"],
        "Welch's verdict": [w if w == v and (w.startswith("withheld") or w.startswith("exploratory"))
                            else f"{w} ({'agrees' if w == v else 'disagrees'})"
                            for v, w in zip(tests["verdict"], tests["welch_verdict"])],
    })


@_carries_missing
def format_crossover(crossover: pd.DataFrame, first: str = "SLKD", second: str = "KD") -> pd.DataFrame:
    """Display form of :func:`kdrepro.hypotheses.budget_crossover`."""
    if crossover.empty:
        return pd.DataFrame()
    return pd.DataFrame({
        "epochs": crossover["epochs"], "seeds": crossover["seeds"],
        f"{first} last (%)": [f"{v:.2f}" for v in crossover["first_mean"]],
        f"{second} last (%)": [f"{v:.2f}" for v in crossover["second_mean"]],
        f"{first} − {second} [95 % CI]": [_fmt_ci(e, lo, hi) for e, lo, hi in
                                          zip(crossover["mean"], crossover["low"], crossover["high"])],
        f"seeds {first} wins": [f"{w}/{n}" for w, n in zip(crossover["wins"], crossover["seeds"])],
        "device": ["; ".join(d) for d in crossover["devices"]],
        "sign changed": ["yes" if c else "" for c in crossover["sign_change"]],
    })


def plot_hypotheses(tests: pd.DataFrame, smallest_effect: float = 0.5):
    """The plan's hypotheses as intervals: each hypothesis's primary test (filled, 95 % interval) and Welch's
    test on every seed (hollow), lines at zero and at the smallest effect of interest."""
    import matplotlib.pyplot as plt

    if tests.empty:
        fig, ax = plt.subplots(figsize=(4.0, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no hypothesis of the plan has both arms yet", ha="center", va="center")
        _incomplete(fig, tests)
        return fig
    fig, ax = plt.subplots(figsize=(7.0, 0.8 * len(tests) + 1.4))
    ys = list(range(len(tests)))[::-1]
    for y, row in zip(ys, tests.to_dict("records")):
        for offset, est, lo, hi, filled, label in (
                (0.12, row["estimate"], row["low"], row["high"], True, "primary test"),
                (-0.12, row["welch_mean"], row["welch_low"], row["welch_high"], False, "Welch, every seed")):
            if math.isnan(est):
                continue
            if not (math.isnan(lo) or math.isnan(hi)):
                ax.plot([lo, hi], [y + offset] * 2, color="tab:blue" if filled else "tab:gray", lw=2)
            ax.plot([est], [y + offset], "o", color="tab:blue" if filled else "tab:gray",
                    markerfacecolor=None if filled else "white", label=label if y == ys[0] else None)
    ax.axvline(0, color="k", lw=0.8)
    ax.axvline(smallest_effect, color="k", lw=0.8, ls="--", label=f"smallest effect of interest (+{smallest_effect})")
    primary = [f"paired, n = {n}" if p == "paired" else "Welch" for p, n in zip(tests["primary"], tests["paired_n"])]
    ax.set_yticks(ys, [f"{h}: {c}\n(primary: {p}; {v})" for h, c, p, v in
                       zip(tests["hypothesis"], tests["claim"], primary, tests["verdict"])], fontsize="small")
    ax.set_xlabel("first − second, test top-1 of the last epoch (points), 95 % interval")
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    _incomplete(fig, tests)
    return fig


# ------------------------------------------------------------------------------------------- formatting


def fmt_mean_std(mean: float, std: float, n: int, digits: int = 2) -> str:
    """``"92.37 ± 0.12"``; a single run shows its value alone; no runs show ``"—"``."""
    if n == 0 or mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if round(mean, digits) == 0:
        mean = 0.0  # no "-0.00" for a difference that rounds to zero
    return f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _fmt_reference(value: float, note: str) -> str:
    if note == NOT_TRANSCRIBED:
        return NOT_TRANSCRIBED
    return "—" if value is None or math.isnan(value) else f"{value:.2f}"


@_carries_missing
def format_summary(summary: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The display table: ``keys`` (``"pair"`` shows ``teacher -> student``), top-1 last and best
    (mean ± std), seeds, epochs and, when :func:`add_references` was applied, the reference,
    Δ last - ref and its source."""
    out = pd.DataFrame({k: (summary["teacher"] + " -> " + summary["student"]) if k == "pair" else summary[k]
                        for k in keys})
    if "method" in out:
        out["method"] = [METHOD_NAMES.get(m, m) for m in out["method"]]
    out["top-1 last (%)"] = [fmt_mean_std(r.last_mean, r.last_std, r.seeds) for r in summary.itertuples()]
    out["top-1 best (%)"] = [fmt_mean_std(r.best_mean, r.best_std, r.seeds) for r in summary.itertuples()]
    out["seeds"] = summary["seeds"].astype(int)
    _flag_column(out, summary)
    if "epochs" in summary:
        out["epochs"] = summary["epochs"]
    if "reference" in summary:
        out["reference"] = [_fmt_reference(r.reference, r.ref_note) for r in summary.itertuples()]
        out["Δ last − ref"] = ["—" if math.isnan(d) else f"{d:+.2f}" for d in summary["diff"]]
        out["source"] = summary["ref_source"].replace("", "—")
    return out


def _flag_column(out: pd.DataFrame, summary: pd.DataFrame) -> None:
    """A "flagged runs" column, only when some finished run of the table is flagged
    (``kdrepro.engine.health_flags``: chance-level accuracy or an exploded loss): such a mean includes a
    failed run. A "diverged" column, only when some run diverged: how many of the row's runs, and where;
    they have no accuracy and are not in the mean (``seeds`` counts the runs that are)."""
    if "flagged" in summary and summary["flagged"].sum() > 0:
        out["flagged runs"] = [f"{int(n)} ⚠" if n else "" for n in summary["flagged"]]
    if "diverged" in summary and summary["diverged"].sum() > 0:
        out["diverged"] = [f"{int(n)} of {int(n) + int(k)}: {where}" if n else ""
                           for n, k, where in zip(summary["diverged"], summary["seeds"], summary["diverged_in"])]


def _paired_columns(paired: pd.DataFrame, a_mean: str, b_mean: str, a: str, b: str) -> dict[str, list[str]]:
    """The display columns shared by every paired comparison: both means, the paired difference, wins and
    the iterations ratio, headed with the two names ``a`` and ``b``."""
    return {
        f"{a} last (%)": [f"{v:.2f}" for v in paired[a_mean]],
        f"{b} last (%)": [f"{v:.2f}" for v in paired[b_mean]],
        f"{a} − {b} (paired)": [fmt_mean_std(m, sd, n) for m, sd, n in
                                zip(paired["diff_mean"], paired["diff_std"], paired["seeds"])],
        f"seeds {a} wins": [f"{w}/{n}" for w, n in zip(paired["wins"], paired["seeds"])],
        f"iterations {a}/{b}": [f"{v:.2f}" for v in paired["iterations_ratio"]],
        **({"pairs across devices": [f"{c}/{n}" for c, n in zip(paired["crossing"], paired["seeds"])]}
           if "crossing" in paired and paired["crossing"].sum() > 0 else {}),
    }


@_carries_missing
def format_paired(paired: pd.DataFrame, a: str = "slkd", b: str = "kd") -> pd.DataFrame:
    """Display form of :func:`paired_difference`."""
    if paired.empty:
        return pd.DataFrame()
    return pd.DataFrame({"dataset": paired["dataset"], "pair": paired["teacher"] + " -> " + paired["student"],
                         **_paired_columns(paired, f"{a}_mean", f"{b}_mean", METHOD_NAMES.get(a, a),
                                           METHOD_NAMES.get(b, b))})


@_carries_missing
def format_ablations(summary: pd.DataFrame) -> pd.DataFrame:
    """Display form of an ablation summary (by ``axis, variant, default``): Δ is each variant's
    last-epoch mean minus that of the authors' setting (the ``default`` row of the same axis)."""
    defaults = summary[summary["default"].astype(bool)]
    by_axis = dict(zip(defaults["axis"], defaults["last_mean"]))  # an axis's seeds may differ from another's
    fallback = defaults["last_mean"].iloc[0] if len(defaults) else math.nan
    reference = [by_axis.get(axis, fallback) for axis in summary["axis"]]
    out = pd.DataFrame({
        "axis": summary["axis"], "variant": summary["variant"],
        "authors' setting": ["yes" if d else "" for d in summary["default"]],
        "top-1 last (%)": [fmt_mean_std(r.last_mean, r.last_std, r.seeds) for r in summary.itertuples()],
        "top-1 best (%)": [fmt_mean_std(r.best_mean, r.best_std, r.seeds) for r in summary.itertuples()],
        "seeds": summary["seeds"].astype(int),
        "Δ last vs authors'": ["—" if d or math.isnan(r) or math.isnan(v) else f"{v - r:+.2f}"
                               for v, d, r in zip(summary["last_mean"], summary["default"], reference)],
    })
    _flag_column(out, summary)
    return out


@_carries_missing
def format_budgets(summary: pd.DataFrame) -> pd.DataFrame:
    """Display form of a budget summary (by ``method, variant, epochs``) with each run's iterations
    relative to KD's at the same budget; empty for a profile without budgets."""
    if summary.empty:
        return pd.DataFrame()
    kd = summary[summary["method"] == "kd"].set_index("epochs")["iterations"]
    out = pd.DataFrame({
        "method": [METHOD_NAMES.get(m, m) for m in summary["method"]], "epochs": summary["epochs"],
        "iterations": [f"{v:.0f}" for v in summary["iterations"]],
        "iterations / KD's": [f"{v / kd[e]:.2f}" if e in kd.index else "—"
                              for v, e in zip(summary["iterations"], summary["epochs"])],
        "top-1 last (%)": [fmt_mean_std(r.last_mean, r.last_std, r.seeds) for r in summary.itertuples()],
        "top-1 best (%)": [fmt_mean_std(r.best_mean, r.best_std, r.seeds) for r in summary.itertuples()],
        "seeds": summary["seeds"].astype(int),
    })
    _flag_column(out, summary)
    return out


@_carries_missing
def matched_comparisons(runs: pd.DataFrame) -> pd.DataFrame:
    """The matched-step study paired by seed, per SLKD budget: SLKD − KD at the same epochs, and SLKD − KD
    trained for SLKD's number of optimizer steps (``kd_matched``), as :func:`paired_difference` computes
    them."""
    frames = []
    for a, b in (("slkd", "kd"), ("slkd", "kd_matched")):
        p = paired_difference(runs, a, b, by=("budget",))
        if len(p):
            frames.append(p.rename(columns={f"{a}_mean": "a_mean", f"{b}_mean": "b_mean"}).assign(a=a, b=b))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@_carries_missing
def format_matched(paired: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Display form of :func:`matched_comparisons`, with each side's epochs and mean optimizer steps."""
    if paired.empty:
        return pd.DataFrame()
    def side(method, budget, key):
        r = runs[(runs["method"] == method) & (runs["budget"] == budget)]
        return f"{r[key].mean():.0f}"

    return pd.DataFrame({
        "SLKD epochs": paired["budget"],
        "comparison": [f"{METHOD_NAMES.get(a, a)} − {METHOD_NAMES.get(b, b)}" for a, b in zip(paired["a"], paired["b"])],
        "epochs (second)": [side(b, e, "epochs") for b, e in zip(paired["b"], paired["budget"])],
        "steps (first)": [side(a, e, "iterations") for a, e in zip(paired["a"], paired["budget"])],
        "steps (second)": [side(b, e, "iterations") for b, e in zip(paired["b"], paired["budget"])],
        **_paired_columns(paired, "a_mean", "b_mean", "first", "second")})


def _with_pair(runs: pd.DataFrame, by: list[str]) -> list[str]:
    """``by`` plus ``teacher, student`` (after ``dataset``) when a group of ``by`` would otherwise mix the
    runs of different teacher-student pairs (a profile with two pairs per data set)."""
    pair = [c for c in ("teacher", "student") if c in runs.columns and c not in by]
    if not pair or runs.empty or not by:
        return by
    mixed = (runs.groupby(by, sort=False, dropna=False)[pair].nunique(dropna=False) > 1).any().any()
    if not mixed:
        return by
    at = by.index("dataset") + 1 if "dataset" in by else 0
    return by[:at] + pair + by[at:]


def timing_table(runs: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Mean wall and training seconds and iterations per group and device (a mean never mixes runs trained
    on different devices; timings vary between machines and runs: notebooks show this table in a cell
    whose output nbval does not compare)."""
    groups = _with_pair(runs, list(by))
    by = groups + (["device"] if "device" in runs.columns and "device" not in groups else [])
    g = runs.groupby(by, sort=False)
    out = g[["wall_seconds", "train_seconds", "iterations"]].mean().reset_index()
    out["runs"] = g.size().values
    if groups and len(by) > len(groups):  # each group's devices next to each other, groups in order of appearance
        first = {key: i for i, key in reversed(list(enumerate(runs[groups].itertuples(index=False, name=None))))}
        order = [first[key] for key in out[groups].itertuples(index=False, name=None)]
        out = out.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)
    out["seconds / 1k iterations"] = 1000 * out["train_seconds"] / out["iterations"]
    return round_table(out, 1)


@_carries_missing
def compute_by_device(runs: pd.DataFrame) -> pd.DataFrame:
    """The compute a set of runs took, per device kind (the ``device`` column,
    :func:`kdrepro.experiments.run_device`), in order of first appearance, and in all: runs, epochs trained
    and summed run time (each summary's ``wall_seconds``: the epochs' own time, resumptions counted once;
    not the teacher-logit caches, nor time lost to an interrupted epoch)."""
    if runs.empty:
        return pd.DataFrame(columns=["device", "runs", "epochs", "run_hours"])
    g = runs.groupby("device", sort=False)
    out = pd.DataFrame({"device": list(g.groups), "runs": g.size().values, "epochs": g["epochs"].sum().values,
                        "run_hours": g["wall_seconds"].sum().values / 3600})
    total = pd.DataFrame({"device": ["all"], "runs": [len(runs)], "epochs": [int(runs["epochs"].sum())],
                          "run_hours": [runs["wall_seconds"].sum() / 3600]})
    return pd.concat([out, total], ignore_index=True)


@_carries_missing
def format_compute(compute: pd.DataFrame) -> pd.DataFrame:
    """Display form of :func:`compute_by_device`: the total in bold, hours to one decimal."""
    if compute.empty:
        return pd.DataFrame()
    bold = [d == "all" for d in compute["device"]]
    cell = lambda v, b: f"**{v}**" if b else str(v)  # noqa: E731
    return pd.DataFrame({
        "device": [cell("all devices", b) if b else d for d, b in zip(compute["device"], bold)],
        "runs": [cell(int(v), b) for v, b in zip(compute["runs"], bold)],
        "epochs trained": [cell(f"{int(v):,}", b) for v, b in zip(compute["epochs"], bold)],
        "run time (hours, summed)": [cell(f"{v:.1f}", b) for v, b in zip(compute["run_hours"], bold)],
    })


def round_table(table: pd.DataFrame, digits: int | dict[str, int] = 2) -> pd.DataFrame:
    """Floats as fixed-decimal strings (``digits`` for all, or per column), NaN as ``"—"``."""
    out = table.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            d = digits.get(col, 2) if isinstance(digits, dict) else digits
            out[col] = ["—" if math.isnan(v) else f"{v:.{d}f}" for v in out[col]]
    return out


def dataset_table(datasets: dict[str, tuple[Any, Any]]) -> pd.DataFrame:
    """One row per data set and split: images, classes, image shape, smallest and largest class."""
    rows = []
    for name, splits in datasets.items():
        for split, ds in zip(("train", "test"), splits):
            counts = np.bincount(ds.targets.numpy(), minlength=ds.num_classes)
            rows.append({"dataset": name, "split": split, "images": len(ds), "classes": ds.num_classes,
                         "image shape": "x".join(map(str, ds.image_shape)), "smallest class": int(counts.min()),
                         "largest class": int(counts.max())})
    return pd.DataFrame(rows)


def class_counts(datasets: dict[str, tuple[Any, Any]], max_classes: int = 20) -> pd.DataFrame:
    """Images per class and split, one column per data set and split (data sets of at most
    ``max_classes`` classes; larger ones are summarised by :func:`dataset_table`)."""
    columns = {}
    for name, (train, test) in datasets.items():
        if train.num_classes > max_classes:
            continue
        for split, ds in (("train", train), ("test", test)):
            counts = np.bincount(ds.targets.numpy(), minlength=ds.num_classes)
            columns[f"{name} {split}"] = pd.Series(counts, index=ds.classes)
    out = pd.DataFrame(columns)
    out.index.name = "class"
    return out.reset_index()


def format_zoo(zoo: pd.DataFrame) -> pd.DataFrame:
    """Display form of :func:`kdrepro.experiments.model_zoo`."""
    out = pd.DataFrame({"model": zoo["model"], "params (M)": [f"{v:.3f}" for v in zoo["params_m"]],
                        "MACs (M)": [f"{v:.1f}" for v in zoo["macs_m"]]})
    if "he2016_params_m" in zoo:
        out["params (M), option-A shortcuts"] = ["" if math.isnan(v) else f"{v:.3f}" for v in zoo["params_m_option_a"]]
        out["He et al. 2016 (M)"] = ["" if math.isnan(v) else f"{v:.2f}" for v in zoo["he2016_params_m"]]
    return out


def caption(what: str, references: bool = True) -> str:
    """The standard caption: what the numbers are, last vs best epoch, seeds, and the Δ convention."""
    text = (f"{what}. Test top-1 (%) at the last and at the best epoch, mean ± sample std over the seeds "
            "counted in 'seeds' (one run: its value).")
    if references:
        text += (" 'reference': the published number for the same data set, teacher, student and method "
                 "(source given); Δ = our last-epoch mean − reference; '—': none published for this setting.")
    return text


def show(table: pd.DataFrame, title: str | None = None) -> None:
    """Display a title (Markdown) and a table in a notebook; print them elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover - IPython is a dependency of the notebooks
        get_ipython = None
    note = missing_note(table)
    if note:
        title = f"{title}\n\n{note}" if title else note
    if get_ipython is not None and get_ipython() is not None:
        if title:
            display(Markdown(title))
        display(table)
    else:
        if title:
            print(title)
        print(table.to_string(index=False))


def to_markdown(table: pd.DataFrame, title: str | None = None) -> str:
    """A pipe table (GitHub Markdown); numbers right-aligned, text left-aligned; ``title`` above it."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "—" if math.isnan(v) else f"{v:.2f}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    if table.empty:  # a study with none of its runs (or pairs) finished yet: say so, not an empty grid
        text = "_No rows yet: none of the runs this table needs are finished._\n"
        return f"{title}\n\n{text}" if title else text
    header = [str(c) for c in table.columns]
    def is_numeric(column: pd.Series) -> bool:
        text = column.astype(str)
        return pd.api.types.is_numeric_dtype(column) or (text.str.fullmatch(_NUMBER).all() and (text != "—").any())

    numeric = [is_numeric(table[c]) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if num else ":---" for num in numeric) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    text = "\n".join(lines) + "\n"
    return f"{title}\n\n{text}" if title else text


def write_table(table: pd.DataFrame, name: str, tables_dir: str | Path, data: pd.DataFrame | None = None,
                title: str | None = None) -> None:
    """Write ``<name>.md`` (``table`` as displayed, with ``title``) and ``<name>.csv`` (``data``: the
    numbers at full precision, default ``table``) into ``tables_dir``. Returns nothing, so that a
    notebook cell ending with it shows no output."""
    out = Path(tables_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv = out / f"{name}.md", out / f"{name}.csv"
    note = missing_note(table)
    md.write_text(to_markdown(table, title) + (f"\n{note}\n" if note else ""))
    (table if data is None else data).to_csv(csv, index=False)


# ---------------------------------------------------------------------------------------------- figures


def save_figure(fig, name: str, figures_dir: str | Path) -> None:
    """Save ``fig`` as ``<name>.png`` (150 dpi) and ``<name>.svg`` into ``figures_dir``. The figure stays
    open, so a notebook still displays it; nothing is returned, so the cell shows only the figure."""
    import matplotlib

    out = Path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    with matplotlib.rc_context({"svg.hashsalt": "kdrepro"}):
        fig.savefig(paths[0], dpi=150, bbox_inches="tight")
        fig.savefig(paths[1], bbox_inches="tight", metadata={"Date": None})


def _image(dataset, index: int) -> np.ndarray:
    x = dataset.images[int(index)].numpy()
    return x[0] if x.shape[0] == 1 else np.transpose(x, (1, 2, 0))


def _image_grid(ax, dataset, rows: Sequence[Sequence[int]], row_labels: Sequence[str]) -> None:
    """Tile ``rows`` of image indices into one axes, one row per label."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    c, h, w = dataset.image_shape
    background = 0 if c == 1 else 255  # white: greyscale is drawn with gray_r (0 = white)
    canvas = np.full((n_rows * (h + 1), n_cols * (w + 1)) + (() if c == 1 else (c,)), background, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, idx in enumerate(row):
            canvas[i * (h + 1):i * (h + 1) + h, j * (w + 1):j * (w + 1) + w] = _image(dataset, idx)
    ax.imshow(canvas, cmap="gray_r" if c == 1 else None, interpolation="nearest")
    ax.set_yticks([i * (h + 1) + h / 2 for i in range(n_rows)], list(row_labels))
    ax.set_xticks([])
    for side in ax.spines.values():
        side.set_visible(False)


def plot_samples(dataset, per_class: int = 8, max_classes: int = 10, seed: int = 0):
    """A grid of ``per_class`` random training images for each of the first ``max_classes`` classes."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    targets = dataset.targets.numpy()
    classes = list(range(min(dataset.num_classes, max_classes)))
    rows = [rng.choice(np.flatnonzero(targets == c), size=min(per_class, int((targets == c).sum())), replace=False)
            for c in classes]
    fig, ax = plt.subplots(figsize=(0.5 * per_class + 1.5, 0.5 * len(classes) + 0.5))
    _image_grid(ax, dataset, rows, [dataset.classes[c] for c in classes])
    ax.set_title(f"{dataset.name}: {per_class} training images per class")
    return fig


# ------------------------------------------------------------------------------------------------ figures
#
# Every figure says what it shows: error bars are "mean ± std over n seeds" (named in the legend or title),
# a value from one seed is drawn hollow and labelled "1 seed", per-seed values are drawn as small points
# (seaborn strip plots), runs flagged by the health check are red crosses, value axes span at least
# MIN_SPAN points so that small gaps do not look large, and lines between measured budgets are dashed and
# labelled as interpolation.

#: the smallest span (percentage points) of an accuracy axis
MIN_SPAN = 10.0


def _spread_label(n: int) -> str:
    return "1 seed" if n == 1 else f"mean ± std, {n} seeds"


def _span_at_least(ax, axis: str = "y", span: float = MIN_SPAN, lo: float = 0.0, hi: float = 100.0) -> None:
    """Widen an accuracy axis to at least ``span`` points, centred on the data, within [lo, hi]."""
    get, set_ = (ax.get_ylim, ax.set_ylim) if axis == "y" else (ax.get_xlim, ax.set_xlim)
    a, b = get()
    if b - a < span:
        mid = (a + b) / 2
        a, b = mid - span / 2, mid + span / 2
        if a < lo:
            a, b = lo, lo + span
        if b > hi:
            a, b = hi - span, hi
        set_(a, b)


@contextlib.contextmanager
def _fixed_jitter(seed: int = 0):
    """seaborn's strip plot jitters with NumPy's global generator: seed it for the plot (and restore it), so
    that the same runs always give the same figure, byte for byte."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _seed_points(ax, xs, ys, flags, color, horizontal: bool = False) -> None:
    """Per-seed values at ``(xs, ys)`` as small points (seaborn's strip plot; with ``horizontal`` the rows
    ``ys`` are categories and get a small fixed offset per point); flagged runs as red crosses."""
    import seaborn as sns

    frame = pd.DataFrame({"pos": list(xs), "value": list(ys), "flag": [bool(f) for f in flags]})
    ok = frame[~frame["flag"]]
    if len(ok) and horizontal:  # categorical rows: a small deterministic offset per point
        offsets = np.linspace(-0.12, 0.12, len(ok)) if len(ok) > 1 else [0.0]
        ax.plot(ok["pos"], ok["value"] + offsets, "o", ms=3.5, alpha=0.55, color=color, zorder=3)
    elif len(ok):
        with _fixed_jitter():
            sns.stripplot(data=ok, x="pos", y="value", native_scale=True, jitter=0.02, size=3.5, alpha=0.55,
                          color=color, ax=ax, legend=False)
    bad = frame[frame["flag"]]
    for _, r in bad.iterrows():
        ax.plot(r["pos"], r["value"], "x", color="red", ms=7, mew=2, zorder=5)


def _diverged_note(ax, pos: float, row, vertical: bool = False) -> None:
    """Write on the panel, at a method's (``vertical``: x = ``pos``) or a variant's (y = ``pos``) place, how
    many of its runs diverged and where: they have no accuracy and are not among its points or its mean."""
    import matplotlib.transforms as mtransforms

    text = f"{int(row['diverged'])} diverged: {row['diverged_in']}"
    if vertical:
        ax.text(pos, 0.03, text, transform=mtransforms.blended_transform_factory(ax.transData, ax.transAxes),
                rotation=90, ha="center", va="bottom", fontsize="x-small", color="red", zorder=6)
    else:  # one line per place, on a white ground, inside the panel
        text = f"{int(row['diverged'])} diverged:\n" + str(row["diverged_in"]).replace("; ", "\n")
        ax.text(0.02, pos + (0.3 if row["seeds"] else 0.0), text,
                transform=mtransforms.blended_transform_factory(ax.transAxes, ax.transData), ha="left",
                va="center", fontsize="x-small", color="red", zorder=6,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1})


def _incomplete(fig, *frames) -> None:
    """Say on the figure when its study is incomplete (runs missing from the store)."""
    missing = next((f.attrs.get("missing") for f in frames if f is not None and f.attrs.get("missing")), None)
    if missing:
        fig.text(0.5, 0.005, f"INCOMPLETE: {len(missing)} run(s) missing from the store", ha="center", va="bottom",
                 color="red", fontsize="small")


def _flagged_note(ax, runs: pd.DataFrame | None) -> None:
    if runs is not None and "flags" in runs and (runs["flags"].fillna("") != "").any():
        ax.plot([], [], "x", color="red", ms=7, mew=2, label="flagged run (chance level or exploded loss)")


#: a method whose mean is this many points below the median of the methods' means is drawn on its own scale
OUTLIER_POINTS = 10.0


def outlier_methods(summary: pd.DataFrame) -> list[str]:
    """Methods whose last-epoch mean is more than :data:`OUTLIER_POINTS` below the median of all methods'
    means in some group: on a shared axis they would squash every other method into a thin band."""
    out = []
    for _, sub in summary.groupby(["dataset", "teacher", "student"], sort=False):
        median = sub["last_mean"].median()
        out += [m for m, v in zip(sub["method"], sub["last_mean"]) if median - v > OUTLIER_POINTS]
    return list(dict.fromkeys(out))


def _method_markers(ax, summary, runs, methods, groups, write_values: bool = False):
    """Mean ± std (diamond; hollow circle for one seed) and per-seed points of ``methods`` per group."""
    width = 0.7 / max(1, len(methods))
    for k, method in enumerate(methods):
        sub = summary[summary["method"] == method].set_index(["dataset", "teacher", "student"])
        offset = (k - (len(methods) - 1) / 2) * width
        colour = METHOD_COLOURS.get(method)
        for i, g in enumerate(groups):
            if g not in sub.index:
                continue
            n = int(sub.loc[g, "seeds"])
            ax.errorbar(i + offset, sub.loc[g, "last_mean"], yerr=sub.loc[g, "last_std"] if n > 1 else None,
                        fmt="D" if n > 1 else "o", mfc=colour if n > 1 else "white", color=colour, capsize=3, ms=6,
                        zorder=4)
            if runs is not None and n > 1:
                r = runs[(runs["method"] == method) & (runs["dataset"] == g[0]) & (runs["teacher"] == g[1])
                         & (runs["student"] == g[2])]
                _seed_points(ax, [i + offset] * len(r), r["last_top1"], r.get("flags", [""] * len(r)), colour)
            if sub.loc[g].get("diverged", 0):  # not in the mean: say so where the method's marker is
                _diverged_note(ax, i + offset, sub.loc[g], vertical=True)
            if write_values:  # an outlier panel: write the value
                ax.annotate(fmt_mean_std(sub.loc[g, "last_mean"], sub.loc[g, "last_std"], n),
                            (i + offset, sub.loc[g, "last_mean"]), xytext=(8, 0), textcoords="offset points",
                            va="center", fontsize="small", color=colour)


def plot_methods(summary: pd.DataFrame, runs: pd.DataFrame | None = None, methods: Sequence[str] | None = None):
    """Last-epoch top-1 per method, one group per data set and pair: mean ± std over seeds (diamonds; a
    hollow circle where there is one seed, e.g. the teacher), and every seed's value (small points) when
    the tidy ``runs`` table is given. A method far below the others (:func:`outlier_methods`) gets a panel
    of its own scale, with its value written beside it. The legend sits outside the panels. Where one group
    holds more methods than the palette has colours (so colours would repeat), each method is named on the
    x axis instead, and the legend only explains the markers."""
    import matplotlib.pyplot as plt

    methods = list(methods or METHOD_NAMES)
    groups = list(dict.fromkeys(zip(summary["dataset"], summary["teacher"], summary["student"])))
    present = [m for m in methods if m in set(summary["method"])] + \
              [m for m in dict.fromkeys(summary["method"]) if m not in methods]
    outliers = [m for m in present if m in outlier_methods(summary)]
    main = [m for m in present if m not in outliers]
    named = len(groups) == 1 and len([m for m in present if m not in METHOD_COLOURS.ROLES]) > len(METHOD_COLOURS.PALETTE)
    width = max(6.4, 0.5 * len(main) + 2.5) if named else max(6.4, 1.7 * len(groups) + 4.5)
    if outliers:
        fig, (ax, side) = plt.subplots(1, 2, figsize=(width + 1.8, 3.8 if named else 3.4),
                                       gridspec_kw={"width_ratios": [max(3, len(main)), 1.4]})
    else:
        fig, ax = plt.subplots(figsize=(width, 3.8 if named else 3.4))
    _method_markers(ax, summary, runs, main, groups)
    if named:
        _name_methods(ax, main, groups[0])
        ax.plot([], [], "D", color="gray", label="mean ± std over seeds (small points: seeds)")
        ax.plot([], [], "o", mfc="white", color="gray", label="one seed")
    handles = []
    for method in [] if named else present:
        seeds = [int(n) for n in summary.loc[summary["method"] == method, "seeds"]]
        colour = METHOD_COLOURS.get(method)
        spread = _spread_label(seeds[0]) if len(set(seeds)) == 1 else f"mean ± std, {min(seeds)}–{max(seeds)} seeds"
        own = ", own scale" if method in outliers else ""
        handles.append(ax.errorbar([], [], yerr=[] if max(seeds) > 1 else None, fmt="D" if max(seeds) > 1 else "o",
                                   mfc=colour if max(seeds) > 1 else "white", color=colour,
                                   label=f"{METHOD_NAMES.get(method, method)} ({spread}{own})"))
    _flagged_note(ax, runs)
    labels = [f"{d}\n{t} -> {s}" for d, t, s in groups]
    if not named:
        ax.set_xticks(range(len(groups)), labels)
        ax.set_xlim(-0.5, len(groups) - 0.5)
        ax.set_xlabel("")
    ax.set_ylabel("test top-1 (%), last epoch")
    _span_at_least(ax)
    ax.grid(axis="y", alpha=0.3)
    if outliers:
        _method_markers(side, summary, runs, outliers, groups, write_values=True)
        if named:
            _name_methods(side, outliers, groups[0])
            side.set_xlim(side.get_xlim()[0], side.get_xlim()[1] + 0.6)
            side.set_xlabel("")
            side.set_ylabel("")
        else:
            side.set_xticks(range(len(groups)), labels)
            side.set_xlim(-0.5, len(groups) - 0.5 + 0.6)
            side.set_xlabel("")
        side.set_title("own scale", fontsize="small")
        side.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.legend(*ax.get_legend_handles_labels(), fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5),
               frameon=False)
    _incomplete(fig, summary, runs)
    return fig


def _name_methods(ax, methods: Sequence[str], group: tuple) -> None:
    """One group's methods named under their markers (:func:`_method_markers`' offsets), the group below."""
    width = 0.7 / max(1, len(methods))
    offsets = [(k - (len(methods) - 1) / 2) * width for k in range(len(methods))]
    ax.set_xticks(offsets, [METHOD_NAMES.get(m, m) for m in methods], rotation=45, ha="right")
    ax.set_xlim(offsets[0] - width, offsets[-1] + width)
    ax.set_xlabel(f"{group[0]}, {group[1]} -> {group[2]}")


def plot_ablations(summary: pd.DataFrame, runs: pd.DataFrame | None = None):
    """One panel per ablation axis: last-epoch top-1 of each variant, mean ± std over its seeds (a hollow
    circle where a variant has one seed), per-seed values when ``runs`` is given; the authors' setting in
    orange, KD without curriculum as a dashed line. Each panel spans at least MIN_SPAN points."""
    import matplotlib.pyplot as plt

    axes_names = [a for a in dict.fromkeys(summary["axis"]) if a != "reference"] if len(summary) else []
    if not axes_names:  # a profile without ablations (the key is optional): say so
        fig, ax = plt.subplots(figsize=(4.0, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no ablation axis in this profile", ha="center", va="center")
        _incomplete(fig, summary, runs)
        return fig
    kd = summary[summary["axis"] == "reference"]
    fig, axes = plt.subplots(1, len(axes_names), figsize=(3.4 * len(axes_names), 3.0), squeeze=False)
    for ax, axis in zip(axes[0], axes_names):
        sub = summary[summary["axis"] == axis].reset_index(drop=True)
        for i, row in sub.iterrows():
            colour = "tab:orange" if row["default"] else "tab:blue"
            n = int(row["seeds"])
            ax.errorbar(row["last_mean"], i, xerr=row["last_std"] if n > 1 else None, fmt="D" if n > 1 else "o",
                        mfc=colour if n > 1 else "white", color=colour, capsize=3, zorder=4)
            if runs is not None and n > 1:
                r = runs[(runs["axis"] == axis) & (runs["variant"] == row["variant"])]
                _seed_points(ax, r["last_top1"], [i] * len(r), r.get("flags", [""] * len(r)), colour, horizontal=True)
            if row.get("diverged", 0):
                _diverged_note(ax, i, row)
        seeds = sorted(set(int(n) for n in sub["seeds"]))
        ax.set_yticks(range(len(sub)), list(sub["variant"]))
        ax.set_ylim(len(sub) - 0.5, -0.5)
        ax.set_ylabel("")
        if len(kd):
            ax.axvline(kd["last_mean"].iloc[0], color="k", ls="--", lw=1,
                       label=f"KD ({_spread_label(int(kd['seeds'].iloc[0])).replace('mean ± std, ', 'mean of ')})")
        counts = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
        ax.set_title(f"{axis} ({counts} seed{'s' if seeds[-1] > 1 else ''})", fontsize="medium")
        ax.set_xlabel("top-1 (%), last epoch")
        _span_at_least(ax, "x")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("SLKD ablations (orange: the authors' setting; diamond: mean ± std over seeds; hollow: one seed)",
                 fontsize="medium")
    fig.tight_layout()
    if len(kd):  # below the panels, where it covers no point
        fig.legend(*axes[0][0].get_legend_handles_labels(), fontsize="small", loc="upper center",
                   bbox_to_anchor=(0.5, 0.0), frameon=False)
    _incomplete(fig, summary, runs)
    return fig


def _mean_curve(group: pd.DataFrame, x: str) -> pd.DataFrame:
    """Per epoch over a group's runs: mean of ``x`` and of test top-1, and the lowest and highest top-1."""
    g = group.groupby("epoch")
    return pd.DataFrame({"x": g[x].mean(), "mean": g["test_top1"].mean(), "lo": g["test_top1"].min(),
                         "hi": g["test_top1"].max(), "runs": g.size()}).reset_index()


def plot_efficiency(curves: pd.DataFrame):
    """Test top-1 after every epoch against training iterations, and against wall time with one panel per
    device (wall times of different devices are not comparable): for each method and budget the mean over
    its seeds (method by colour, budget by line style), a band from the lowest to the highest seed, and
    each seed as a thin line. The legend sits outside the panels."""
    import matplotlib.pyplot as plt

    devices = list(dict.fromkeys(curves["device"])) if "device" in curves else [None]
    fig, axes = plt.subplots(1, 1 + len(devices), figsize=(4.2 * (1 + len(devices)) + 2.6, 4.0), sharey=True,
                             squeeze=False)
    axes = axes[0]
    styles = ["-", "--", ":", "-.", (0, (5, 1)), (0, (1, 3))]
    budgets = list(dict.fromkeys(curves["variant"]))
    handles = []
    for (method, variant), group in curves.groupby(["method", "variant"], sort=False):
        colour, ls = METHOD_COLOURS.get(method), styles[budgets.index(variant) % len(styles)]
        n = group["seed"].nunique()
        panels = [(axes[0], group, "iterations")]
        for k, device in enumerate(devices):
            sub = group if device is None else group[group["device"] == device]
            if len(sub):
                panels.append((axes[1 + k], sub, "wall_seconds"))
        for ax, sub, x in panels:
            for _, run in sub.groupby("seed", sort=False):
                ax.plot(run[x], run["test_top1"], color=colour, lw=0.4, alpha=0.25)
            mean = _mean_curve(sub, x)
            if n > 1:
                ax.fill_between(mean["x"], mean["lo"], mean["hi"], color=colour, alpha=0.12, lw=0)
            line, = ax.plot(mean["x"], mean["mean"], color=colour, ls=ls, lw=1.6)
        what = f"mean of {n} seeds" if n > 1 else "1 seed"
        line.set_label(f"{METHOD_NAMES.get(method, method)}, {variant} ({what})")
        handles.append(line)
    axes[0].set_xlabel("training iterations (optimizer steps)")
    axes[0].set_ylabel("test top-1 (%), every epoch")
    for k, device in enumerate(devices):
        axes[1 + k].set_xlabel("wall time (s)" + (f" on {device}" if device else ""))
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.legend(handles=handles, fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle("Mean over seeds (line), lowest to highest seed (band), each seed (thin)", fontsize="medium")
    fig.tight_layout()
    return fig


def plot_budgets(summary: pd.DataFrame, runs: pd.DataFrame | None = None, matched: pd.DataFrame | None = None):
    """Accuracy against optimizer steps at every epoch budget: mean ± std over seeds (diamonds, labelled
    with the epochs), per-seed values when ``runs`` is given, and, from the matched-step study
    (``matched``, :func:`summarize` by method and variant), KD trained for SLKD's number of steps (a star).
    Only the markers are measured: the dashed lines between budgets are interpolation."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for method in dict.fromkeys(summary["method"]):
        sub = summary[summary["method"] == method].sort_values("iterations")
        colour = METHOD_COLOURS.get(method)
        seeds = sorted(set(int(n) for n in sub["seeds"]))
        spread = _spread_label(seeds[0]) if len(seeds) == 1 else f"mean ± std, {seeds[0]}–{seeds[-1]} seeds"
        ax.plot(sub["iterations"], sub["last_mean"], ls="--", lw=1, color=colour, alpha=0.6)
        ax.errorbar(sub["iterations"], sub["last_mean"], yerr=sub["last_std"].where(sub["seeds"] > 1), fmt="D",
                    capsize=3, color=colour, zorder=4, label=f"{METHOD_NAMES.get(method, method)} ({spread})")
        for x, y, e in zip(sub["iterations"], sub["last_mean"], sub["epochs"]):
            ax.annotate(f"{e} ep", (x, y), textcoords="offset points", xytext=(5, -12), fontsize="x-small",
                        color=colour)
        if runs is not None:
            r = runs[runs["method"] == method]
            _seed_points(ax, r["iterations"], r["last_top1"], r.get("flags", [""] * len(r)), colour)
    if matched is not None and len(matched):
        m = matched[matched["method"] == "kd_matched"]
        for _, row in m.iterrows():
            ax.errorbar(row["iterations"], row["last_mean"], yerr=row["last_std"] if row["seeds"] > 1 else None,
                        fmt="*", ms=11, capsize=3, color=METHOD_COLOURS.get("kd_matched"), zorder=5,
                        label=f"KD at SLKD's steps, {row['epochs']} ep ({_spread_label(int(row['seeds']))})")
    ax.plot([], [], ls="--", lw=1, color="gray", label="interpolation between measured budgets (not measured)")
    _flagged_note(ax, runs)
    ax.set_xlabel("training iterations (optimizer steps)")
    ax.set_ylabel("test top-1 (%), last epoch")
    ax.set_title("Accuracy against budget (markers measured)", fontsize="medium")
    ax.margins(x=0.1, y=0.15)  # room for the epoch labels beside the outermost markers
    _span_at_least(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", loc="lower right")
    fig.tight_layout()
    _incomplete(fig, summary, runs, matched)
    return fig


@_carries_missing
def paired_long(runs: pd.DataFrame, comparisons: Sequence[tuple[str, str, str]], metric: str = "last_top1",
                by: str | None = None) -> pd.DataFrame:
    """Per-seed differences for figures: one row per (comparison label, group ``by``, seed) with
    ``diff = a - b`` of ``metric``, for each ``(label, a, b)`` in ``comparisons`` (methods of ``runs``).
    Where a group holds several teacher-student pairs (two pairs per data set), each pair is its own group,
    labelled ``"<group>: <teacher> → <student>"``; a seed twice in one group and method is an error.
    ``crosses`` is True where the two runs of a pair were trained on different device kinds (the ``device``
    column, where ``runs`` has one): figures mark those pairs, which read as unpaired."""
    rows = []
    keys = [by] if by else []
    split = _with_pair(runs, keys) if keys else keys
    groups = runs.groupby(split, sort=False) if split else [(None, runs)]
    for key, group in groups:
        if len(split) > len(keys):  # pairs separated: name the pair in the label
            parts = dict(zip(split, key))
            key = f"{parts[by]}: {parts['teacher']} → {parts['student']}"
        elif isinstance(key, tuple):
            key = key[0]
        for label, a, b in comparisons:
            ga = group[group["method"] == a]
            gb = group[group["method"] == b]
            for side in (ga, gb):
                if side["seed"].duplicated().any():
                    raise ValueError(f"paired_long: seed(s) {sorted(set(side['seed'][side['seed'].duplicated()]))} "
                                     f"appear twice for one method in group {key!r}; group by more columns")
            ga, gb = ga.set_index("seed"), gb.set_index("seed")
            for seed in ga.index:
                if seed in gb.index and pd.notna(ga.at[seed, metric]) and pd.notna(gb.at[seed, metric]):
                    crosses = "device" in ga.columns and ga.at[seed, "device"] != gb.at[seed, "device"]
                    rows.append({"comparison": label, "group": key, "seed": seed,
                                 "diff": float(ga.at[seed, metric]) - float(gb.at[seed, metric]),
                                 "crosses": bool(crosses)})
    return pd.DataFrame(rows, columns=["comparison", "group", "seed", "diff", "crosses"])


def plot_paired(long: pd.DataFrame, title: str = "Paired by seed", xlabel: str = ""):
    """Paired differences (points): every seed's difference (seaborn strip plot) and their mean ± std
    (seaborn point plot), one column per comparison (hue: the group, e.g. the budget), a line at zero. A pair
    whose two runs trained on different device kinds (``crosses``, :func:`paired_long`) is drawn as a cross."""
    if long.empty:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.0, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{title}: no seed has both runs yet", ha="center", va="center")
        _incomplete(fig, long)
        return fig
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * long["comparison"].nunique() + 2.4), 3.4))
    hue = "group" if long["group"].notna().any() and long["group"].nunique() > 1 else None
    data = long.assign(group=long["group"].astype(str)) if hue else long
    if not hue and long["group"].notna().any():  # one group (e.g. one budget so far): name it on the axis
        data = long.assign(comparison=long["comparison"] + f" ({long['group'].iloc[0]})")
    order = list(dict.fromkeys(data["comparison"]))
    hue_order = list(dict.fromkeys(data["group"])) if hue else None
    crosses = data["crosses"].astype(bool) if "crosses" in data else pd.Series(False, index=data.index)
    with _fixed_jitter():
        for part, marker in ((data[~crosses], "o"), (data[crosses], "X")):
            if len(part):
                sns.stripplot(data=part, x="comparison", y="diff", hue=hue, order=order, hue_order=hue_order,
                              dodge=bool(hue), jitter=0.08, size=4 if marker == "o" else 5, alpha=0.6, marker=marker,
                              ax=ax, legend=False, palette="deep" if hue else None, color=None if hue else "tab:blue")
    sns.pointplot(data=data, x="comparison", y="diff", hue=hue, order=order, hue_order=hue_order,
                  dodge=0.4 if hue else False, errorbar="sd", capsize=0.1, markers="D", linestyle="none", ax=ax,
                  palette="deep" if hue else None, color=None if hue else "black")
    ax.axhline(0, color="k", lw=0.8)
    n = data.groupby(["comparison"] + (["group"] if hue else []))["seed"].nunique()
    seeds = sorted(set(int(v) for v in n))
    ax.set_title(f"{title}: points = seeds; diamond = mean ± std ({', '.join(map(str, seeds))} "
                 f"seed{'' if seeds == [1] else 's'})" + ("\n× = a pair trained on two device kinds (read as unpaired)"
                                                          if crosses.any() else ""),
                 fontsize="medium")
    ax.set_ylabel("difference in test top-1 (points)")
    ax.set_xlabel(xlabel)
    lo, hi = ax.get_ylim()
    if hi - lo < 4:
        mid = (hi + lo) / 2
        ax.set_ylim(mid - 2, mid + 2)
    if hue:  # beside the panel, where it covers no point
        ax.legend(title=None, fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xticks(ax.get_xticks(), [textwrap.fill(t.get_text(), 18) for t in ax.get_xticklabels()])
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _incomplete(fig, long)
    return fig


def plot_extremes(anatomy, per_class: int = 4, phase_index: int = 0, max_classes: int = 10):
    """The easiest and the hardest images of each class as one curriculum phase's snapshot ranked them."""
    import matplotlib.pyplot as plt

    ext = anatomy.extremes(phase_index, per_class)
    ds = anatomy.dataset
    classes = list(range(min(ds.num_classes, max_classes)))
    fig, axes = plt.subplots(1, 2, figsize=(2 * (0.5 * per_class + 1.2), 0.5 * len(classes) + 0.8))
    for ax, key in zip(axes, ("easiest", "hardest")):
        _image_grid(ax, ds, [ext[key][c].tolist() for c in classes], [ds.classes[c] for c in classes])
        ax.set_title(f"{key} (phase {ext['phase']} snapshot)")
    fig.tight_layout()
    return fig


def plot_score_distributions(anatomy, bins: int = 30):
    """Per curriculum phase: the histogram of snapshot scores, the selected pool stacked on the rest."""
    import matplotlib.pyplot as plt

    scores = anatomy.scores()
    phases = list(dict.fromkeys(scores["phase"]))
    fig, axes = plt.subplots(1, len(phases), figsize=(2.6 * len(phases), 2.6), squeeze=False)
    for ax, phase in zip(axes[0], phases):
        sub = scores[scores["phase"] == phase]
        edges = np.histogram_bin_edges(sub["score"], bins=bins)
        ax.hist([sub.loc[sub["in_pool"], "score"], sub.loc[~sub["in_pool"], "score"]], bins=edges, stacked=True,
                color=["tab:orange", "tab:gray"], label=["in pool", "left out"])
        ax.set_title(f"phase {phase}")
        ax.set_xlabel(f"snapshot score ({anatomy.records[0]['score']})")
    axes[0][0].set_ylabel("training images")
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_teacher_agreement(anatomy):
    """Snapshot score against teacher score for every training image, first and last curriculum phase."""
    import matplotlib.pyplot as plt

    picks = [anatomy.records[0], anatomy.records[-1]] if len(anatomy.records) > 1 else anatomy.records
    fig, axes = plt.subplots(1, len(picks), figsize=(3.6 * len(picks), 3.2), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, r in zip(axes[0], picks):
        targets = r["targets"].numpy()
        ax.scatter(anatomy.teacher_scores, r["scores"].numpy(), s=3, alpha=0.4, c=cmap(targets % 10))
        ax.set_title(f"phase {r['phase']}")
        ax.set_xlabel(f"teacher score ({anatomy.teacher_score})")
        ax.set_ylabel(f"snapshot score ({r['score']})")
    classes = list(getattr(anatomy.dataset, "classes", None) or [])
    present = sorted(set(int(c) for c in picks[0]["targets"].numpy()))
    handles = [plt.Line2D([], [], ls="", marker="o", ms=5, color=cmap(c % 10),
                          label=str(classes[c]) if c < len(classes) else f"class {c}") for c in present[:10]]
    fig.tight_layout()
    fig.legend(handles=handles, title="class" + ("" if len(present) <= 10 else " (first 10)"), fontsize="small",
               loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return fig
