"""Analyse an experiment: per-variant metrics, effects against control, SRM, CUPED, sequential test.

:func:`analyze` takes validated frames (``services.ab.inputs``) and returns an
:class:`Analysis` whose :meth:`Analysis.to_dict` is what ``tlrec ab analyze --json``
prints. Per metric (``services.ab.outcomes.METRICS``) and treatment variant:

* Welch t-test of the per-user metric, treatment - control, with its
  ``1 - alpha`` interval (``alpha`` from the experiment, default 0.05) and
  relative difference (diff / control mean).
* With a pre-period (or a predicted covariate, ``services.ab.covariate``): CUPED with
  ``theta = cov(Y, X) / var(X)`` pooled over all users of the experiment; the effect
  row then carries the adjusted figures and the unadjusted ones under ``unadjusted``.
* A normal-mixture mSPRT over ``looks`` equally spaced looks in time (each look
  uses only the exposures and outcomes up to it): the always-valid p-value,
  which may be watched as often as wanted. The mixture sd is
  ``sequential_tau`` x the metric's pooled sd at the last look.
* Sample-ratio mismatch: chi-square of users per variant against the weights,
  alert when p < ``srm_alpha`` (0.001).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl
from tlrec.services.ab.outcomes import EXPOSURES, FIRST, METRICS, pre, user_metrics
from tlrec.services.ab.stats import (
    cuped_adjust,
    cuped_theta,
    mean_ci,
    msprt_p_values,
    srm_test,
    welch,
)
from tlrec.serving.experiments import VARIANT, Experiment
from tlrec.tables import Columns, DataError

from tlrec.errors import UsageError

DEFAULT_LOOKS = 20


@dataclass
class MetricSummary:
    """One variant's mean of a per-user metric and its t interval."""

    mean: float
    ci_low: float
    ci_high: float


@dataclass
class VariantSummary:
    variant: str
    users: int
    exposures: int
    weight: float
    share: float
    metrics: dict[str, MetricSummary]


@dataclass
class Effect:
    """Treatment ``variant`` - control on ``metric`` (``method`` "welch" or "welch+cuped")."""

    variant: str
    metric: str
    control_mean: float
    variant_mean: float
    diff: float
    rel_diff: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    significant: bool
    method: str
    sequential_p_value: float
    sequential_significant: bool
    theta: float | None = None
    variance_reduction: float | None = None
    unadjusted: dict[str, float] | None = None


@dataclass
class Analysis:
    """Everything ``tlrec ab analyze`` reports (``to_dict`` is the ``--json`` object)."""

    experiment: str
    control: str
    alpha: float
    users: int
    users_multiple_variants: int
    srm_chi2: float
    srm_p_value: float
    srm_alert: bool
    srm_alpha: float
    cuped: bool
    variants: list[VariantSummary]
    effects: list[Effect]
    sequential: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    covariate: str | None = None  # what CUPED adjusted with (None: no CUPED)

    def effect(self, variant: str, metric: str) -> Effect:
        """The effect row of ``variant`` on ``metric``; KeyError if absent."""
        for e in self.effects:
            if e.variant == variant and e.metric == metric:
                return e
        raise KeyError(f"no effect for variant {variant!r} and metric {metric!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN and infinities become None."""
        doc = asdict(self)
        extra = doc.pop("extra")
        for key, section in extra.items():  # Markdown snippets are for the report, not the JSON
            doc[key] = {k: v for k, v in section.items() if k != "markdown"} if isinstance(section, dict) else section
        return _finite(doc)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj


def _moments(values: np.ndarray) -> tuple[float, float, int]:
    n = len(values)
    mean = float(values.mean()) if n else float("nan")
    var = float(values.var(ddof=1)) if n > 1 else float("nan")
    return mean, var, n


def _arm(frame: pl.DataFrame, variant: str, column: str) -> np.ndarray:
    return frame.filter(pl.col(VARIANT) == variant)[column].to_numpy().astype(float)


def analyze(exposures: pl.DataFrame, outcomes: pl.DataFrame, experiment: Experiment,
            pre_period: pl.DataFrame | None = None, looks: int = DEFAULT_LOOKS,
            covariate: tuple[pl.DataFrame, str] | None = None) -> Analysis:
    """Analyse ``experiment`` from exposures and outcomes, with CUPED when given pre-period events
    or a predicted ``covariate`` (``user_id, covariate`` frame and its description; one of the two).

    Raises:
        DataError: no exposed users, or the control variant has none (UsageError: looks < 1, or
        both a pre-period and a covariate).
    """
    if looks < 1:
        raise UsageError(f"looks must be >= 1, got {looks}")
    if pre_period is not None and covariate is not None:
        raise UsageError("CUPED takes one covariate: use a pre-period (--pre-period) or a predicted one "
                         "(--covariate-from), not both")
    um = user_metrics(exposures, outcomes, experiment, pre_period,
                      covariate=covariate[0] if covariate is not None else None)
    cuped = pre_period is not None or covariate is not None
    frame = um.frame
    if frame.height == 0:
        raise DataError(f"experiment {experiment.name!r}: no exposed users to analyse")
    control = experiment.control_variant
    alpha = experiment.alpha

    counts = {v: int((frame[VARIANT] == v).sum()) for v in experiment.variant_names}
    if counts[control] == 0:
        raise DataError(f"experiment {experiment.name!r}: the control variant {control!r} has no exposed users")
    chi2, srm_p = srm_test([counts[v] for v in experiment.variant_names],
                           [experiment.weights[v] for v in experiment.variant_names])
    exposures_per_variant = frame.group_by(VARIANT).agg(pl.col(EXPOSURES).sum())
    n_exposures = dict(zip(exposures_per_variant[VARIANT].to_list(), exposures_per_variant[EXPOSURES].to_list()))

    variants = []
    for v in experiment.variant_names:
        summaries = {}
        for metric in METRICS:
            mean, var, n = _moments(_arm(frame, v, metric))
            low, high = mean_ci(mean, var, n, alpha) if n else (float("nan"), float("nan"))
            summaries[metric] = MetricSummary(mean, float(low), float(high))
        variants.append(VariantSummary(v, counts[v], int(n_exposures.get(v, 0)), experiment.weights[v],
                                       counts[v] / frame.height, summaries))

    sequential = _sequential(exposures, outcomes, experiment, frame, looks)
    effects = []
    for v in experiment.variant_names:
        if v == control:
            continue
        for metric in METRICS:
            effects.append(_effect(frame, experiment, v, metric, cuped, sequential))

    return Analysis(
        experiment=experiment.name, control=control, alpha=alpha, users=frame.height,
        users_multiple_variants=um.users_multiple_variants, srm_chi2=chi2, srm_p_value=srm_p,
        srm_alert=bool(srm_p < experiment.srm_alpha), srm_alpha=experiment.srm_alpha,
        cuped=cuped, variants=variants, effects=effects, sequential=sequential,
        covariate=None if not cuped else covariate[1] if covariate is not None else "pre-period metrics",
    )


def _effect(frame: pl.DataFrame, experiment: Experiment, variant: str, metric: str, cuped: bool,
            sequential: dict[str, Any]) -> Effect:
    control = experiment.control_variant
    alpha = experiment.alpha
    y_t, y_c = _arm(frame, variant, metric), _arm(frame, control, metric)
    mt, vt, nt = _moments(y_t)
    mc, vc, nc = _moments(y_c)
    raw = welch(mt, vt, nt, mc, vc, nc, alpha)
    seq_p = sequential["p_values"][variant][metric][-1]
    common = dict(variant=variant, metric=metric, control_mean=mc, variant_mean=mt,
                  rel_diff=float(raw.diff / mc) if mc else float("nan"),
                  method="welch", sequential_p_value=seq_p, sequential_significant=bool(seq_p < alpha))
    if not cuped:
        return Effect(**common, diff=float(raw.diff), se=float(raw.se), ci_low=float(raw.ci_low),
                      ci_high=float(raw.ci_high), p_value=float(raw.p_value), significant=bool(raw.p_value < alpha))
    # theta pooled over every user in the experiment, so it does not depend on the arms compared
    y_all, x_all = frame[metric].to_numpy().astype(float), frame[pre(metric)].to_numpy().astype(float)
    theta = cuped_theta(y_all, x_all)
    adjusted = frame.with_columns(pl.Series("__adj", cuped_adjust(y_all, x_all, theta)))
    at, vat, _ = _moments(_arm(adjusted, variant, "__adj"))
    ac, vac, _ = _moments(_arm(adjusted, control, "__adj"))
    adj = welch(at, vat, nt, ac, vac, nc, alpha)
    var_y = float(y_all.var(ddof=1)) if len(y_all) > 1 else float("nan")
    var_adj = float(adjusted["__adj"].to_numpy().var(ddof=1)) if len(y_all) > 1 else float("nan")
    common["method"] = "welch+cuped"
    common["rel_diff"] = float(adj.diff / mc) if mc else float("nan")
    return Effect(**common, diff=float(adj.diff), se=float(adj.se), ci_low=float(adj.ci_low),
                  ci_high=float(adj.ci_high), p_value=float(adj.p_value), significant=bool(adj.p_value < alpha),
                  theta=theta, variance_reduction=1 - var_adj / var_y if var_y > 0 else 0.0,
                  unadjusted={"diff": float(raw.diff), "se": float(raw.se), "ci_low": float(raw.ci_low),
                              "ci_high": float(raw.ci_high), "p_value": float(raw.p_value)})


def _sequential(exposures: pl.DataFrame, outcomes: pl.DataFrame, experiment: Experiment,
                final: pl.DataFrame, looks: int) -> dict[str, Any]:
    """Always-valid p-values at ``looks`` equally spaced times (the last one sees all data)."""
    T = Columns.TIMESTAMP
    t0 = int(final[FIRST].min())
    t1 = int(max(exposures[T].max(), outcomes[T].max() if outcomes.height else t0))  # type: ignore[arg-type]
    times = sorted({int(round(t)) for t in np.linspace(t0, t1, looks + 1)[1:]}) if t1 > t0 else [t1]
    control = experiment.control_variant
    treatments = [v for v in experiment.variant_names if v != control]
    diffs = {(v, m): [] for v in treatments for m in METRICS}  # type: dict[tuple[str, str], list[float]]
    var_diffs = {(v, m): [] for v in treatments for m in METRICS}  # type: dict[tuple[str, str], list[float]]
    users_at = []
    for t in times:
        frame = final if t == times[-1] else user_metrics(exposures, outcomes, experiment, until=t).frame
        users_at.append(frame.height)
        for metric in METRICS:
            mc, vc, nc = _moments(_arm(frame, control, metric))
            for v in treatments:
                mt, vt, nt = _moments(_arm(frame, v, metric))
                diffs[(v, metric)].append(mt - mc if nt and nc else float("nan"))
                var_diffs[(v, metric)].append(vt / nt + vc / nc if nt > 1 and nc > 1 else float("nan"))
    p_values: dict[str, dict[str, list[float]]] = {v: {} for v in treatments}
    taus: dict[str, float] = {}
    for metric in METRICS:
        sd = float(final[metric].to_numpy().astype(float).std(ddof=1)) if final.height > 1 else 0.0
        tau = experiment.sequential_tau * sd if sd > 0 else experiment.sequential_tau
        taus[metric] = tau
        for v in treatments:
            p = msprt_p_values(np.array(diffs[(v, metric)]), np.array(var_diffs[(v, metric)]), tau)
            p_values[v][metric] = [float(x) for x in np.atleast_1d(p)]
    return {"looks": times, "users": users_at, "tau": taus, "p_values": p_values,
            "diff": {v: {m: diffs[(v, m)] for m in METRICS} for v in treatments}}
