"""Honest deltas: the Student-t quantile, Welch's interval and seeds-needed against hand values."""

from __future__ import annotations

import math

import pytest

from mdtui.results.stats import (
    ONE_SEED,
    SEPARATED,
    WITHIN_NOISE,
    Delta,
    Summary,
    delta_interval,
    format_delta,
    incomplete_beta,
    pooled_sd,
    seeds_needed,
    summarize,
    t_cdf,
    t_quantile,
    welch_df,
)

# --------------------------------------------------------------------------- the t distribution


@pytest.mark.parametrize(
    "df,expected",
    [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423), (math.inf, 1.95996)],
)
def test_t_quantile_0975_matches_the_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)


def test_t_quantile_tends_to_the_normal_one():
    assert t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-5)
    assert t_quantile(0.975, 1e8) == pytest.approx(1.959964, abs=1e-6)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.95, 0.975, 0.995, 0.9995])
def test_t_quantile_matches_the_closed_forms_for_one_and_two_df(p):
    # df = 1 is the Cauchy distribution: t = tan(pi (p - 1/2)); df = 2: t = (2p - 1) / sqrt(2 p (1 - p))
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)


def test_t_quantile_is_symmetric_and_inverts_the_cdf_at_fractional_df():
    assert t_quantile(0.5, 3) == 0.0
    assert t_quantile(0.025, 4) == pytest.approx(-2.7764, abs=1e-3)
    for df in (0.7, 1.3425, 1.6842, 7.5):
        t = t_quantile(0.975, df)
        assert t_cdf(t, df) == pytest.approx(0.975, abs=1e-10)
    # more degrees of freedom, thinner tails
    assert t_quantile(0.975, 1) > t_quantile(0.975, 98 / 73) > t_quantile(0.975, 2)


def test_t_quantile_refuses_impossible_arguments():
    for p in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError):
            t_quantile(p, 3)
    with pytest.raises(ValueError):
        t_quantile(0.9, 0)


@pytest.mark.parametrize("x", [0.01, 0.3, 0.5, 0.77, 0.999])
def test_incomplete_beta_matches_its_closed_forms(x):
    assert incomplete_beta(x, 1, 1) == pytest.approx(x, rel=1e-12)
    assert incomplete_beta(x, 3, 1) == pytest.approx(x**3, rel=1e-12)
    assert incomplete_beta(x, 1, 4) == pytest.approx(1 - (1 - x) ** 4, rel=1e-12)
    assert incomplete_beta(x, 0.5, 0.5) == pytest.approx(2 / math.pi * math.asin(math.sqrt(x)), rel=1e-12)


# --------------------------------------------------------------------------- Welch


def test_summarize_is_mean_and_sample_sd():
    assert summarize([71.0, 72.0, 73.0]) == Summary(72.0, 1.0, 3)
    assert summarize([70.5, None]) == Summary(70.5, None, 1)
    assert summarize([]) == Summary(None, None, 0)


def test_welch_df_by_hand():
    # a: sd 1, n 3 -> v = 1/3; b: sd 2, n 2 -> v = 2.
    # df = (1/3 + 2)^2 / ((1/3)^2 / 2 + 2^2 / 1) = (49/9) / (73/18) = 98/73
    assert welch_df(1.0, 3, 2.0, 2) == pytest.approx(98 / 73, rel=1e-12)
    # equal spreads and sizes: 2 (n - 1)
    assert welch_df(1.5, 5, 1.5, 5) == pytest.approx(8.0, rel=1e-12)
    # one side without spread: the other side's n - 1
    assert welch_df(0.0, 3, 1.0, 6) == pytest.approx(5.0, rel=1e-12)


def test_interval_within_noise_by_hand():
    # 71, 72, 73 vs 70, 71, 72: Δ = 1; sd 1 each; se = sqrt(1/3 + 1/3) = 0.81650; df = 4;
    # half-width = 2.77645 * 0.81650 = 2.26696: the interval [-1.27, 3.27] spans 0.
    d = delta_interval(summarize([71, 72, 73]), summarize([70, 71, 72]))
    assert d.delta == pytest.approx(1.0)
    assert d.df == pytest.approx(4.0)
    assert d.half_width == pytest.approx(2.26696, abs=1e-4)
    assert (d.low, d.high) == (pytest.approx(-1.26696, abs=1e-4), pytest.approx(3.26696, abs=1e-4))
    assert d.verdict == WITHIN_NOISE
    assert format_delta(d) == "+1.00 ± 2.27 (within noise)"
    assert format_delta(d, seeds=True) == "+1.00 ± 2.27 (within noise; 3 vs 3 seeds)"


def test_interval_that_excludes_zero_is_a_finding():
    d = delta_interval(summarize([74, 75, 76]), summarize([70, 71, 72]))
    assert d.verdict == SEPARATED
    assert format_delta(d) == "+4.00 ± 2.27"


def test_unequal_spreads_use_the_welch_df():
    # exp 70, 72, 74 (sd 2), base 69, 69.5 (sd 0.35355): v = 4/3, 0.0625; df = (1.39583)^2 /
    # ((4/3)^2 / 2 + 0.0625^2 / 1) = 1.94835 / 0.89280 = 2.18229; t(2.18230) = 3.97592 (mpmath)
    d = delta_interval(summarize([70, 72, 74]), summarize([69, 69.5]))
    assert d.df == pytest.approx(2.18229, abs=1e-4)
    assert d.half_width == pytest.approx(3.97592 * math.sqrt(4 / 3 + 0.0625), abs=1e-3)


def test_one_seed_on_either_side_says_so():
    d = delta_interval(summarize([70.4]), summarize([70.0, 70.5, 69.5]))
    assert d.verdict == ONE_SEED and d.half_width is None
    assert format_delta(d) == "+0.4 (1 seed)"
    assert delta_interval(summarize([71, 72]), summarize([70])).verdict == ONE_SEED
    assert delta_interval(summarize([]), summarize([70])) is None


def test_no_spread_at_all_gives_a_zero_width_interval():
    d = delta_interval(summarize([71, 71]), summarize([70, 70]))
    assert d.half_width == 0.0 and d.verdict == SEPARATED
    assert delta_interval(summarize([70, 70]), summarize([70, 70])).verdict == WITHIN_NOISE


def test_delta_direction_is_experiment_minus_baseline():
    d = delta_interval(summarize([60]), summarize([70]))
    assert d == Delta(-10.0, None, None, 1, 1) and format_delta(d) == "-10.0 (1 seed)"


# --------------------------------------------------------------------------- seeds needed


def test_seeds_needed_by_hand():
    # s = 1, |Δ| = 1: half-width t(2n - 2) * sqrt(2 / n).
    # n = 8: t(14) = 2.1448 * 0.5 = 1.0724 >= 1; n = 9: t(16) = 2.1199 * 0.47140 = 0.99932 < 1.
    a, b = Summary(71.0, 1.0, 3), Summary(70.0, 1.0, 3)
    answer = seeds_needed(a, b)
    assert answer.seeds == 9 and answer.pooled_sd == pytest.approx(1.0)
    assert answer.text() == "9 per experiment"


def test_seeds_needed_uses_the_pooled_spread():
    # pooled sd of (sd 1, n 3) and (sd 2, n 2): sqrt((2 * 1 + 1 * 4) / 3) = sqrt(2)
    a, b = Summary(72.0, 1.0, 3), Summary(70.0, 2.0, 2)
    assert pooled_sd(a, b) == pytest.approx(math.sqrt(2))
    # s = sqrt 2, |Δ| = 2: n = 4: t(6) = 2.4469 * sqrt(2) * sqrt(1/2) = 2.4469 >= 2;
    # n = 5: t(8) = 2.3060 * sqrt(2) * sqrt(2/5) = 2.0626 >= 2; n = 6: t(10) = 2.2281 * 0.81650 *
    # sqrt(2) = 1.9245 < 2
    assert seeds_needed(a, b).seeds == 6
    # one side with one seed: the spread comes from the other side alone
    assert pooled_sd(Summary(72.0, None, 1), Summary(70.0, 1.0, 3)) == pytest.approx(1.0)


def test_seeds_needed_says_when_nothing_would_separate():
    assert seeds_needed(Summary(70.0, 1.0, 3), Summary(70.0, 2.0, 3)).text() == (
        "cannot separate: the means are equal"
    )
    assert seeds_needed(Summary(70.0, 0.0, 2), Summary(70.0, 0.0, 2)).seeds is None
    assert seeds_needed(Summary(71.0, 0.0, 2), Summary(70.0, 0.0, 2)).seeds == 2
    one = seeds_needed(Summary(71.0, None, 1), Summary(70.0, None, 1))
    assert one.seeds is None and "2 seeds" in one.text()
    tiny = seeds_needed(Summary(70.01, 1.0, 3), Summary(70.0, 1.0, 3))
    assert tiny.seeds is None and tiny.text() == "more than 1000"
    # just under the cap is still found (the normal bound only skips impossible n)
    near = seeds_needed(Summary(70.125, 1.0, 3), Summary(70.0, 1.0, 3))
    assert near.seeds is not None and 490 < near.seeds <= 1000
    assert t_quantile(0.975, 2 * near.seeds - 2) * math.sqrt(2 / near.seeds) < 0.125
    assert t_quantile(0.975, 2 * near.seeds - 4) * math.sqrt(2 / (near.seeds - 1)) >= 0.125
