"""The statistics of the analysis plans (``docs/analysis-plan-cpu300.md``): Student's paired t test, Welch's
unpaired t test, their 95 % confidence intervals, and the Holm–Bonferroni correction.

Standard library only (no SciPy dependency). Student's t distribution comes from the regularised incomplete
beta function, evaluated by its continued fraction (modified Lentz), and its quantiles by bisection on that
distribution function. ``tests/test_stats.py`` checks both against a numerical integration of the t density
and against hand-worked examples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = ["TTest", "mean", "sample_sd", "t_sf_two_sided", "t_quantile", "paired_t", "welch_t", "holm"]


def mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs)


def sample_sd(xs: Sequence[float]) -> float:
    """Standard deviation with the n − 1 denominator (0.0 for a single value)."""
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function, by the modified Lentz method."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, for 0 ≤ x ≤ 1 and a, b > 0."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], not {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_sf_two_sided(t: float, df: float) -> float:
    """P(|T| ≥ |t|) for Student's t with ``df`` degrees of freedom (the two-sided p value of ``t``):
    I_{df/(df+t²)}(df/2, 1/2)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, not {df}")
    if math.isinf(t):
        return 0.0
    return regularized_beta(df / (df + t * t), df / 2.0, 0.5)


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t (0.5 < q < 1), e.g. ``t_quantile(0.975, 4)`` ≈ 2.776, by bisection
    on :func:`t_sf_two_sided` (which falls monotonically in |t|)."""
    if not 0.5 < q < 1.0:
        raise ValueError(f"q must lie in (0.5, 1), not {q}")
    target = 2.0 * (1.0 - q)
    lo, hi = 0.0, 1.0
    while t_sf_two_sided(hi, df) > target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf_two_sided(mid, df) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class TTest:
    """One t test of a difference: the estimate (mean difference), its standard error, t, the degrees of
    freedom, the two-sided p value and the ``level`` confidence interval ``[low, high]``. With fewer than two
    values (or no spread) t, p and the interval are NaN."""

    n: int
    estimate: float
    se: float
    t: float
    df: float
    p: float
    low: float
    high: float
    level: float = 0.95


def _ttest(n: int, estimate: float, se: float, df: float, level: float) -> TTest:
    if df <= 0 or not se > 0:
        nan = float("nan")
        return TTest(n, estimate, se, nan, df if df > 0 else nan, nan, nan, nan, level)
    t = estimate / se
    half = t_quantile(0.5 + level / 2.0, df) * se
    return TTest(n, estimate, se, t, df, t_sf_two_sided(t, df), estimate - half, estimate + half, level)


def paired_t(differences: Sequence[float], level: float = 0.95) -> TTest:
    """Student's paired t test of the mean of ``differences`` (one per pair): t = d̄ / (s_d / √n) on n − 1
    degrees of freedom; the interval is d̄ ± t_{(1+level)/2, n−1} · s_d / √n."""
    n = len(differences)
    if n == 0:
        raise ValueError("a paired t test needs at least one difference")
    return _ttest(n, mean(differences), sample_sd(differences) / math.sqrt(n), n - 1, level)


def welch_t(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> TTest:
    """Welch's unpaired t test of mean(a) − mean(b): se = √(s_a²/n_a + s_b²/n_b), degrees of freedom by the
    Welch–Satterthwaite formula. ``n`` of the result is n_a + n_b."""
    if len(a) < 2 or len(b) < 2:
        nan = float("nan")
        est = mean(a) - mean(b) if a and b else nan
        return TTest(len(a) + len(b), est, nan, nan, nan, nan, nan, nan, level)
    va, vb = sample_sd(a) ** 2 / len(a), sample_sd(b) ** 2 / len(b)
    se = math.sqrt(va + vb)
    denominator = va * va / (len(a) - 1) + vb * vb / (len(b) - 1)
    df = (va + vb) ** 2 / denominator if denominator > 0 else float("nan")
    return _ttest(len(a) + len(b), mean(a) - mean(b), se, df, level)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p values, in the order given: with the m finite p values sorted ascending,
    p̃₍ₖ₎ = max_{j ≤ k} min(1, (m − j + 1) · p₍ⱼ₎). NaN stays NaN and does not count towards m."""
    finite = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m = len(finite)
    out = [float("nan")] * len(pvalues)
    running = 0.0
    for j, (p, i) in enumerate(finite, start=1):
        running = max(running, min(1.0, (m - j + 1) * p))
        out[i] = running
    return out
