"""Student's t distribution from its formulas, with the standard library only, independently of
``kdrepro.stats`` (which uses the incomplete beta function): the density integrated by Simpson's rule, and
quantiles by bisection on that integral. Slow but plain; for the tests only."""
from __future__ import annotations

import math


def density(t: float, df: float) -> float:
    """f(t) = Γ((ν+1)/2) / (√(νπ) Γ(ν/2)) · (1 + t²/ν)^(−(ν+1)/2)."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(t * t / df))


def p_two_sided(t: float, df: float, steps: int = 20_000) -> float:
    """P(|T| ≥ |t|) = 1 − 2 ∫₀^|t| f, Simpson's rule on ``steps`` intervals."""
    x = abs(t)
    if x == 0:
        return 1.0
    h = x / steps
    s = density(0.0, df) + density(x, df)
    s += 4 * math.fsum(density((2 * k - 1) * h, df) for k in range(1, steps // 2 + 1))
    s += 2 * math.fsum(density(2 * k * h, df) for k in range(1, steps // 2))
    return 1.0 - 2.0 * s * h / 3.0


def q975(df: float) -> float:
    """t₀.₉₇₅ with ``df`` degrees of freedom: bisection on :func:`p_two_sided` = 0.05."""
    lo, hi = 0.0, 20.0
    while p_two_sided(hi, df, 4000) > 0.05:
        hi *= 2
    for _ in range(45):
        mid = (lo + hi) / 2
        if p_two_sided(mid, df, 4000) > 0.05:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
