"""kdrepro.stats against independent computations: published t-table values, Student's t density integrated
numerically (tests/_tdist.py), and hand-worked paired, Welch and Holm examples."""
from __future__ import annotations

import math

import pytest

from kdrepro import stats
import _tdist  # tests/_tdist.py

# two-sided 5 % critical values of Student's t, as printed in every statistics table (three decimals)
T_TABLE_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 20: 2.086, 30: 2.042}


@pytest.mark.parametrize("df,expected", sorted(T_TABLE_975.items()))
def test_t_quantile_matches_the_printed_t_table(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)


@pytest.mark.parametrize("t,df", [(0.3, 1), (2.0, 10), (2.776, 4), (-1.7, 3), (4.2, 5.7), (0.05, 17.3), (9.0, 2)])
def test_two_sided_p_matches_the_integrated_t_density(t, df):
    assert stats.t_sf_two_sided(t, df) == pytest.approx(_tdist.p_two_sided(t, df), abs=1e-9)


def test_quantile_inverts_the_integrated_density_at_fractional_df():
    for df in (4.37, 7.9):
        assert stats.t_quantile(0.975, df) == pytest.approx(_tdist.q975(df), abs=1e-6)


def test_paired_t_by_hand():
    # differences 1, 2, 3, 4, 5.5: mean 15.5/5 = 3.1; squared deviations 4.41 + 1.21 + 0.01 + 0.81 + 5.76 = 12.2,
    # s² = 12.2/4 = 3.05, se = √(3.05/5) = √0.61; t = 3.1/√0.61 on 4 df
    r = stats.paired_t([1, 2, 3, 4, 5.5])
    se = math.sqrt(0.61)
    assert (r.n, r.df) == (5, 4)
    assert r.estimate == pytest.approx(3.1, abs=1e-12)
    assert r.se == pytest.approx(se, abs=1e-12)
    assert r.t == pytest.approx(3.1 / se, abs=1e-12)
    assert r.p == pytest.approx(_tdist.p_two_sided(3.1 / se, 4), abs=1e-9)
    assert (r.low, r.high) == (pytest.approx(3.1 - 2.7764451 * se, abs=1e-6), pytest.approx(3.1 + 2.7764451 * se, abs=1e-6))


def test_paired_t_of_one_difference_has_no_interval():
    r = stats.paired_t([0.7])
    assert r.estimate == 0.7 and math.isnan(r.t) and math.isnan(r.p) and math.isnan(r.low)


def test_welch_by_hand():
    # a = 1, 2, 3: mean 2, s² = 1; b = 4, 5, 7, 9: mean 6.25, s² = (5.0625 + 1.5625 + 0.5625 + 7.5625)/3 = 14.75/3
    va, vb = 1 / 3, 14.75 / 3 / 4
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    r = stats.welch_t([1, 2, 3], [4, 5, 7, 9])
    assert r.estimate == pytest.approx(-4.25, abs=1e-12)
    assert r.se == pytest.approx(se, abs=1e-12) and se == pytest.approx(1.25, abs=1e-12)
    assert r.df == pytest.approx(df, abs=1e-12)
    assert r.p == pytest.approx(_tdist.p_two_sided(-4.25 / se, df), abs=1e-9)
    half = _tdist.q975(df) * se
    assert (r.low, r.high) == (pytest.approx(-4.25 - half, abs=1e-5), pytest.approx(-4.25 + half, abs=1e-5))


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4·0.005 = 0.02, 3·0.01 = 0.03, 2·0.03 = 0.06, max(0.06, 1·0.04) = 0.06
    assert stats.holm([0.01, 0.04, 0.03, float("nan"), 0.005]) == pytest.approx([0.03, 0.06, 0.06, float("nan"), 0.02],
                                                                                 nan_ok=True)
    assert stats.holm([0.5, 0.6]) == [1.0, 1.0]


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="q must lie"):
        stats.t_quantile(0.3, 4)
    with pytest.raises(ValueError, match="at least one"):
        stats.paired_t([])
