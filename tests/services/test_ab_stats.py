"""The A/B statistics on simulated data with a known truth (numpy-vectorised, a few seconds in all)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats

from tlrec.serving.experiments import assign_many, parse_experiment
from tlrec.services.ab.analysis import analyze
from tlrec.services.ab.stats import cuped_adjust, cuped_theta, msprt_p_values, srm_test, team_draft, welch

DAY = 86_400
T0 = 1_800_000_000


def _experiment(**changes):
    doc = {"name": "ranker-v2", "salt": "2026-11",
           "variants": [{"name": "control", "artifact": "v1", "weight": 0.5},
                        {"name": "treatment", "artifact": "v2", "weight": 0.5}]}
    doc.update(changes)
    return parse_experiment(doc)


def simulate(n_users: int, seed: int, conversion: tuple[float, float] = (0.05, 0.05),
             value_lift: float = 0.0, drop_treatment: float = 0.0, pre_corr: bool = False):
    """Exposures and outcomes of ``n_users`` hashed into control/treatment with planted effects.

    Each user: one exposure over 14 days; clicks ~ Poisson(0.3); converts with a persistent
    propensity ``q ~ Beta(0.5 p, 0.5 (1 - p))`` (mean p = the control's conversion rate; a
    few heavy buyers), in treatment ``q + lift (1 - q) / (1 - p)`` (mean exactly p + lift);
    value = lognormal(3, 0.5) x (1 + value_lift in treatment). With ``pre_corr`` the
    pre-period has four earlier periods of purchases from the same propensity: a good
    CUPED covariate.
    """
    rng = np.random.default_rng(seed)
    users = np.array([f"u{i:07d}" for i in range(n_users)])
    arm = np.array(assign_many(users.tolist(), _experiment()))
    keep = ~((arm == "treatment") & (rng.random(n_users) < drop_treatment))
    users, arm = users[keep], arm[keep]
    n = len(users)
    treated = arm == "treatment"
    exposed_at = T0 + rng.integers(0, 14 * DAY, n)
    p = conversion[0]
    q = rng.beta(0.5 * p, 0.5 * (1 - p), n)
    clicks = rng.poisson(0.3, n)
    converts = rng.random(n) < q + treated * (conversion[1] - p) * (1 - q) / (1 - p)
    value = converts * rng.lognormal(3.0, 0.5, n) * np.where(treated, 1 + value_lift, 1.0)
    exposures = pl.DataFrame({"user_id": users, "experiment": "ranker-v2", "variant": arm, "timestamp": exposed_at})
    click_rows = np.repeat(np.arange(n), clicks)
    conv_rows = np.flatnonzero(converts)
    outcomes = pl.concat([
        pl.DataFrame({"user_id": users[click_rows], "event": "click", "value": 1.0,
                      "timestamp": exposed_at[click_rows] + 60}),
        pl.DataFrame({"user_id": users[conv_rows], "event": "purchase", "value": value[conv_rows],
                      "timestamp": exposed_at[conv_rows] + 3600}),
    ])
    pre = None
    if pre_corr:
        bought = rng.random((4, n)) < q
        rows, cols = np.nonzero(bought)
        pre = pl.DataFrame({"user_id": users[cols], "event": "purchase", "value": rng.lognormal(3.0, 0.5, len(cols)),
                            "timestamp": exposed_at[cols] - (rows + 1) * 14 * DAY})
    return exposures, outcomes, pre


# ------------------------------------------------------------------ A/A, SRM, planted lift, CUPED (whole pipeline)
def test_aa_100k_users_no_srm_and_intervals_cover_zero():
    exposures, outcomes, _ = simulate(100_000, seed=1)
    result = analyze(exposures, outcomes, _experiment())
    assert result.users == 100_000 and not result.srm_alert and result.srm_p_value > 0.01
    for e in result.effects:
        assert e.ci_low <= 0 <= e.ci_high, e
        assert not e.sequential_significant


def test_srm_alert_when_2_percent_of_one_arm_is_lost():
    exposures, outcomes, _ = simulate(200_000, seed=2, drop_treatment=0.02)
    result = analyze(exposures, outcomes, _experiment(), looks=1)
    assert result.srm_alert and result.srm_p_value < 1e-3
    control, treatment = (v.users for v in result.variants)
    assert 0.975 < treatment / control < 0.985


def test_planted_lift_is_detected_and_covered():
    exposures, outcomes, _ = simulate(100_000, seed=3, conversion=(0.05, 0.06))
    result = analyze(exposures, outcomes, _experiment())
    effect = result.effect("treatment", "conversion")
    assert effect.significant and effect.p_value < 1e-4 and effect.sequential_significant
    assert effect.ci_low <= 0.01 <= effect.ci_high
    assert not result.effect("treatment", "ctr").significant  # no planted click effect


def test_cuped_narrows_the_interval_and_keeps_the_truth():
    exposures, outcomes, pre = simulate(100_000, seed=4, value_lift=0.1, pre_corr=True)
    result = analyze(exposures, outcomes, _experiment(), pre_period=pre, looks=2)
    effect = result.effect("treatment", "value_per_user")
    assert effect.method == "welch+cuped" and effect.variance_reduction > 0.2
    raw_width = effect.unadjusted["ci_high"] - effect.unadjusted["ci_low"]
    assert effect.ci_high - effect.ci_low < 0.9 * raw_width
    # truth: 10% of the control mean (conversion x E[lognormal])
    true_diff = 0.1 * 0.05 * np.exp(3.0 + 0.5**2 / 2)
    assert effect.ci_low <= true_diff <= effect.ci_high


def test_only_outcomes_after_first_exposure_count_and_mixed_users_are_dropped():
    exposures = pl.DataFrame({"user_id": ["a", "b", "c", "c"], "experiment": "ranker-v2",
                              "variant": ["control", "treatment", "control", "treatment"],
                              "timestamp": [100, 100, 100, 200]})
    outcomes = pl.DataFrame({"user_id": ["a", "a", "b", "b", "c"], "event": ["purchase", "click", "click", "click", "click"],
                             "value": [5.0, 1.0, 1.0, 1.0, 1.0], "timestamp": [99, 100, 150, 300, 150]})
    result = analyze(exposures, outcomes, _experiment(), looks=1)
    assert result.users == 2 and result.users_multiple_variants == 1
    control, treatment = result.variants
    assert control.metrics["conversion"].mean == 0.0 and control.metrics["ctr"].mean == 1.0  # purchase was before
    assert treatment.metrics["ctr"].mean == 2.0


# ------------------------------------------------------------------ repeated simulations (summary statistics)
def _arm_stats(rng, n, p, sims):
    """Exact per-arm mean and variance of value = Bernoulli(p) x lognormal(3, 0.5), ``sims`` times."""
    k = rng.binomial(n, p)
    draws = rng.lognormal(3.0, 0.5, int(k.sum()))
    starts = np.concatenate([[0], np.cumsum(k)[:-1]])
    total = np.add.reduceat(draws, starts) * (k > 0) if len(draws) else np.zeros(sims)
    total_sq = np.add.reduceat(draws**2, starts) * (k > 0) if len(draws) else np.zeros(sims)
    mean = total / n
    var = (total_sq - n * mean**2) / (n - 1)
    return mean, var


@pytest.mark.parametrize("lift", [0.0, 0.004])
def test_interval_coverage_over_repeated_experiments(lift):
    """1,000 experiments of 100,000 users: the 95% interval covers the true difference ~95% of the time."""
    rng = np.random.default_rng(5)
    sims, n_users = 1000, 100_000
    n_t = rng.binomial(n_users, 0.5, sims)
    n_c = n_users - n_t
    mean_c, var_c = _arm_stats(rng, n_c, 0.05, sims)
    mean_t, var_t = _arm_stats(rng, n_t, 0.05 + lift, sims)
    true = lift * np.exp(3.0 + 0.125)
    value = welch(mean_t, var_t, n_t, mean_c, var_c, n_c)
    coverage = np.mean((value.ci_low <= true) & (true <= value.ci_high))
    assert 0.93 <= coverage <= 0.97, coverage
    conv_c, conv_t = rng.binomial(n_c, 0.05) / n_c, rng.binomial(n_t, 0.05 + lift) / n_t
    conversion = welch(conv_t, conv_t * (1 - conv_t) * n_t / (n_t - 1), n_t,
                       conv_c, conv_c * (1 - conv_c) * n_c / (n_c - 1), n_c)
    coverage = np.mean((conversion.ci_low <= lift) & (lift <= conversion.ci_high))
    assert 0.93 <= coverage <= 0.97, coverage
    srm = np.array([srm_test([a, b], [0.5, 0.5])[1] for a, b in zip(n_c[:200], n_t[:200])])
    assert np.mean(srm < 0.001) <= 0.01


def test_msprt_false_positives_stay_below_alpha_with_20_peeks():
    """A/A watched at 20 looks: the always-valid test keeps <= ~5% false positives; naive t-tests do not."""
    rng = np.random.default_rng(6)
    sims, n, looks = 2000, 2000, 20
    x_t, x_c = rng.normal(0, 1, (sims, n)), rng.normal(0, 1, (sims, n))
    at = np.linspace(n / looks, n, looks).astype(int)
    cs = lambda x: (np.cumsum(x, 1)[:, at - 1], np.cumsum(x**2, 1)[:, at - 1])  # noqa: E731
    (st, sst), (sc, ssc) = cs(x_t), cs(x_c)
    mean_t, mean_c = st / at, sc / at
    var_t, var_c = (sst - at * mean_t**2) / (at - 1), (ssc - at * mean_c**2) / (at - 1)
    p = msprt_p_values(mean_t - mean_c, var_t / at + var_c / at, tau=0.1)
    always_valid_fpr = np.mean(p[:, -1] < 0.05)
    naive_fpr = np.mean((welch(mean_t, var_t, at, mean_c, var_c, at).p_value < 0.05).any(axis=1))
    assert always_valid_fpr <= 0.06, always_valid_fpr
    assert naive_fpr > 0.15, naive_fpr  # peeking at fixed-horizon p-values inflates errors
    assert np.all(np.diff(p, axis=1) <= 0)  # always-valid p never rises
    # and it has power: a 0.15 sd effect is found in most runs
    p_effect = msprt_p_values(mean_t - mean_c + 0.15, var_t / at + var_c / at, tau=0.1)
    assert np.mean(p_effect[:, -1] < 0.05) > 0.8


# ------------------------------------------------------------------ building blocks
def test_welch_matches_scipy():
    rng = np.random.default_rng(7)
    a, b = rng.exponential(2.0, 300), rng.exponential(2.3, 500)
    got = welch(a.mean(), a.var(ddof=1), len(a), b.mean(), b.var(ddof=1), len(b))
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert got.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (got.ci_low, got.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_srm_test():
    assert srm_test([5000, 5000], [0.5, 0.5])[1] == pytest.approx(1.0)
    chi2, p = srm_test([1000, 2200], [1 / 3, 2 / 3])
    assert (chi2, p) == pytest.approx(stats.chisquare([1000, 2200], [3200 / 3, 6400 / 3]))
    assert srm_test([10, 5, 0], [0.5, 0.5, 0.0])[1] > 0.05  # a 0-weight arm with no users is left out
    assert srm_test([10, 5, 1], [0.5, 0.5, 0.0])[1] == 0.0


def test_cuped_theta_and_adjustment():
    rng = np.random.default_rng(8)
    x = rng.normal(0, 1, 10_000)
    y = 2.0 * x + rng.normal(0, 0.5, 10_000)
    theta = cuped_theta(y, x)
    assert theta == pytest.approx(2.0, abs=0.02)
    adjusted = cuped_adjust(y, x, theta)
    assert adjusted.mean() == pytest.approx(y.mean()) and adjusted.var() < 0.1 * y.var()
    assert cuped_theta(y, np.ones_like(y)) == 0.0


def test_team_draft_interleaving():
    a = [f"a{i}" for i in range(10)]
    b = ["a1", "b1", "a0", "b2", "b3", "b4", "b5", "b6", "b7", "b8"]
    for seed in range(20):
        items, teams = team_draft(a, b, 8, np.random.default_rng(seed))
        assert len(items) == len(set(items)) == 8
        assert abs(teams.count(0) - teams.count(1)) <= 1
        for team, ranking in ((0, a), (1, b)):
            mine = [i for i, t in zip(items, teams) if t == team]
            assert mine == sorted(mine, key=ranking.index)  # each team adds in its own order
    items, _ = team_draft(["x"], ["x"], 5, np.random.default_rng(0))
    assert items == ["x"]
