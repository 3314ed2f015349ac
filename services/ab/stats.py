"""The statistics of the A/B harness, on summary statistics and numpy arrays (vectorised).

Every function broadcasts over numpy arrays, so a test can run thousands of
simulated experiments at once. Conventions: ``n`` users, ``mean`` and ``var``
(sample variance, ``ddof=1``) of a per-user metric; differences are
treatment - control.

* :func:`mean_ci`            t interval of one arm's mean.
* :func:`welch`              difference of means, Welch-Satterthwaite df, CI and two-sided p-value.
* :func:`srm_test`           sample-ratio mismatch: chi-square of users per arm against the weights.
* :func:`cuped_theta`,       CUPED: ``y - theta (x - mean x)`` with ``theta = cov(y, x) / var(x)``
  :func:`cuped_adjust`       pooled over all arms (so it does not depend on the assignment).
* :func:`msprt_p_values`     always-valid p-values of the normal-mixture mSPRT over a sequence of looks.
* :func:`team_draft`         team-draft interleaving of two rankings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

ArrayLike = float | np.ndarray


@dataclass(frozen=True)
class Difference:
    """Treatment - control: estimate, standard error, Welch df, ``1 - alpha`` interval, two-sided p."""

    diff: ArrayLike
    se: ArrayLike
    df: ArrayLike
    ci_low: ArrayLike
    ci_high: ArrayLike
    p_value: ArrayLike


def mean_ci(mean: ArrayLike, var: ArrayLike, n: ArrayLike, alpha: float = 0.05) -> tuple[ArrayLike, ArrayLike]:
    """Student-t ``1 - alpha`` interval of a mean from ``n`` iid values (NaN for n < 2)."""
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(np.asarray(var, dtype=float) / n)
        half = stats.t.ppf(1 - alpha / 2, np.where(n > 1, n - 1, np.nan)) * se
    return mean - half, mean + half


def welch(mean_t: ArrayLike, var_t: ArrayLike, n_t: ArrayLike, mean_c: ArrayLike, var_c: ArrayLike,
          n_c: ArrayLike, alpha: float = 0.05) -> Difference:
    """Welch's unequal-variance t-test and interval for ``mean_t - mean_c``.

    With both variances 0 the difference is exact: se 0, p 1 if equal else 0.
    Matches ``scipy.stats.ttest_ind(equal_var=False)``.
    """
    n_t, n_c = np.asarray(n_t, dtype=float), np.asarray(n_c, dtype=float)
    a = np.asarray(var_t, dtype=float) / n_t
    b = np.asarray(var_c, dtype=float) / n_c
    diff = np.asarray(mean_t, dtype=float) - np.asarray(mean_c, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(a + b)
        df = (a + b) ** 2 / (a**2 / (n_t - 1) + b**2 / (n_c - 1))
        df = np.where(se > 0, df, np.inf)
        t = np.where(se > 0, diff / se, np.where(diff == 0, 0.0, np.inf))
        p = 2 * stats.t.sf(np.abs(t), df)
        half = stats.t.ppf(1 - alpha / 2, df) * se
    return Difference(_scalar(diff), _scalar(se), _scalar(df), _scalar(diff - half), _scalar(diff + half),
                      _scalar(p))


def srm_test(observed: Sequence[int] | np.ndarray, weights: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Chi-square goodness of fit of users per arm to the configured weights: ``(chi2, p)``.

    Weights are normalised over the arms given. An arm with weight 0 and no
    users is left out; one with weight 0 and users is a certain mismatch (p 0).
    """
    obs = np.asarray(observed, dtype=float)
    w = np.asarray(weights, dtype=float)
    if obs.shape != w.shape or obs.ndim != 1:
        raise ValueError(f"observed and weights must be 1-d of one length, got {obs.shape} and {w.shape}")
    if np.any((w == 0) & (obs > 0)):
        return float("inf"), 0.0
    keep = w > 0
    obs, w = obs[keep], w[keep]
    if len(obs) < 2 or obs.sum() == 0:
        return 0.0, 1.0
    expected = obs.sum() * w / w.sum()
    chi2, p = stats.chisquare(obs, expected)
    return float(chi2), float(p)


def cuped_theta(y: np.ndarray, x: np.ndarray) -> float:
    """``cov(y, x) / var(x)`` over all users given (0 when ``x`` is constant)."""
    y = np.asarray(y, dtype=float)
    x = np.asarray(x, dtype=float)
    var_x = x.var(ddof=1) if len(x) > 1 else 0.0
    if not var_x > 0:
        return 0.0
    return float(np.cov(y, x, ddof=1)[0, 1] / var_x)


def cuped_adjust(y: np.ndarray, x: np.ndarray, theta: float) -> np.ndarray:
    """CUPED-adjusted outcome ``y - theta (x - mean x)``: same mean, less variance when x predicts y."""
    x = np.asarray(x, dtype=float)
    return np.asarray(y, dtype=float) - theta * (x - x.mean())


def msprt_p_values(diff: np.ndarray, var_diff: np.ndarray, tau: ArrayLike) -> np.ndarray:
    """Always-valid p-values of a two-sided normal-mixture mSPRT (Johari et al., 2017), one per look.

    At each look the estimate ``diff ~ N(theta, var_diff)`` (cumulative data);
    the mixture likelihood ratio of theta ~ N(0, tau^2) against theta = 0 is
    ``sqrt(V / (V + tau^2)) exp(tau^2 diff^2 / (2 V (V + tau^2)))`` and the
    p-value ``min(1, min over looks so far of 1 / ratio)``. Rejecting when it
    drops below alpha keeps the false-positive rate <= alpha however often and
    whenever one looks (exact for Gaussian data, asymptotic with estimated
    variances). Looks run along the last axis; a look with ``var_diff`` 0 or
    NaN (too little data) gives p 1.
    """
    d = np.asarray(diff, dtype=float)
    v = np.asarray(var_diff, dtype=float)
    tau2 = np.asarray(tau, dtype=float) ** 2
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_ratio = 0.5 * np.log(v / (v + tau2)) + tau2 * d**2 / (2 * v * (v + tau2))
        p = np.minimum(1.0, np.exp(-log_ratio))
    p = np.where(np.isfinite(p) & (v > 0), p, 1.0)
    return np.minimum.accumulate(p, axis=-1)


def team_draft(ranking_a: Sequence[str], ranking_b: Sequence[str], k: int,
               rng: np.random.Generator) -> tuple[list[str], list[int]]:
    """Team-draft interleaving (Radlinski et al., 2008) of two rankings into ``k`` items.

    Each round a coin decides which team picks first; each team adds its
    highest-ranked item not yet in the list. Returns ``(items, teams)`` with
    team 0 = A, 1 = B. Stops early when both rankings are used up.
    """
    items: list[str] = []
    teams: list[int] = []
    taken: set[str] = set()
    pos = [0, 0]
    rankings = (list(ranking_a), list(ranking_b))

    def pick(team: int) -> bool:
        ranking = rankings[team]
        while pos[team] < len(ranking) and ranking[pos[team]] in taken:
            pos[team] += 1
        if pos[team] >= len(ranking):
            return False
        item = ranking[pos[team]]
        taken.add(item)
        items.append(item)
        teams.append(team)
        return True

    while len(items) < k:
        first = int(rng.random() < 0.5)
        got_first = pick(first)
        got_second = len(items) < k and pick(1 - first)
        if not (got_first or got_second):
            break
    return items, teams


def _scalar(x: np.ndarray) -> ArrayLike:
    arr = np.asarray(x)
    return float(arr) if arr.ndim == 0 else arr
