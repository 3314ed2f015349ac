"""Per-user metrics of an experiment: exposures joined with the outcomes that followed them.

One row per exposed user (users seen in more than one variant are dropped and
counted). Only outcomes at or after the user's first exposure count (and before
the experiment's ``stop``, if set):

* ``ctr``             clicks / exposures (clicks = events in ``click_events``)
* ``conversion``      1.0 if any event in ``conversion_events``, else 0.0
* ``value_per_user``  sum of ``value`` over events in ``value_events`` (default: the conversion events)

With pre-period events, the same quantities computed on each user's events
before the first exposure are the CUPED covariates ``pre_ctr`` (the pre-period
click count: there are no exposures then), ``pre_conversion``, ``pre_value_per_user``. Without
them, one predicted value per user (``services.ab.covariate``) may serve as every metric's covariate.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from tlrec.serving.experiments import VARIANT, Experiment
from tlrec.tables import Columns

METRICS: tuple[str, ...] = ("ctr", "conversion", "value_per_user")
FIRST = "first_exposure"
EXPOSURES = "exposures"
CLICKS = "clicks"
COVARIATE = "covariate"  # a per-user predicted covariate, the same for every metric


def pre(metric: str) -> str:
    """Column of the pre-period covariate of ``metric``."""
    return f"pre_{metric}"


@dataclass(frozen=True)
class UserMetrics:
    """``frame``: one row per user (user_id, variant, first_exposure, exposures, clicks, metrics [, pre_*])."""

    frame: pl.DataFrame
    users_multiple_variants: int


def _outcome_aggregates(experiment: Experiment, prefix: str = "") -> list[pl.Expr]:
    """Clicks, conversion (0/1) and value of one user's events, as group_by aggregations."""
    event = pl.col(Columns.EVENT)
    clicks = event.is_in(experiment.click_events).sum().cast(pl.Float64)
    return [
        clicks.alias(f"{prefix}{CLICKS}"),
        event.is_in(experiment.conversion_events).any().cast(pl.Float64).alias(f"{prefix}conversion"),
        pl.when(event.is_in(experiment.value_event_names)).then(pl.col(Columns.VALUE)).otherwise(0.0)
        .sum().alias(f"{prefix}value_per_user"),
    ]


def user_metrics(exposures: pl.DataFrame, outcomes: pl.DataFrame, experiment: Experiment,
                 pre_period: pl.DataFrame | None = None, until: int | None = None,
                 covariate: pl.DataFrame | None = None) -> UserMetrics:
    """Per-user metrics from validated frames (``services.ab.inputs``).

    Args:
        exposures: ``user_id, variant, timestamp`` rows of this experiment.
        outcomes: ``user_id, event, value, timestamp``.
        experiment: the definition (event names, ``stop``).
        pre_period: optional events before the experiment (same columns as outcomes).
        until: only data with ``timestamp <= until`` (a look at a running experiment).
        covariate: optional ``user_id, covariate`` (instead of ``pre_period``): every metric's
            covariate; a user without a row gets the mean.

    Returns:
        ``UserMetrics`` whose frame has ``len(METRICS)`` metric columns (Float64,
        never null) and, with ``pre_period`` or ``covariate``, their ``pre_*`` covariates.
    """
    U, T = Columns.USER, Columns.TIMESTAMP
    if until is not None:
        exposures = exposures.filter(pl.col(T) <= until)
        outcomes = outcomes.filter(pl.col(T) <= until)
    per_user = exposures.group_by(U).agg(
        pl.col(VARIANT).n_unique().alias("__n_variants"),
        pl.col(VARIANT).first(),
        pl.col(T).min().alias(FIRST),
        pl.len().cast(pl.Float64).alias(EXPOSURES),
    )
    mixed = int((per_user["__n_variants"] > 1).sum())
    per_user = per_user.filter(pl.col("__n_variants") == 1).drop("__n_variants")

    after = outcomes.join(per_user.select(U, FIRST), on=U, how="inner").filter(pl.col(T) >= pl.col(FIRST))
    if experiment.stop is not None:
        after = after.filter(pl.col(T) < int(experiment.stop.timestamp()))
    frame = per_user.join(after.group_by(U).agg(_outcome_aggregates(experiment)), on=U, how="left")
    frame = frame.with_columns(pl.col(CLICKS, "conversion", "value_per_user").fill_null(0.0))
    frame = frame.with_columns((pl.col(CLICKS) / pl.col(EXPOSURES)).alias("ctr"))

    if pre_period is not None:
        before = pre_period.join(per_user.select(U, FIRST), on=U, how="inner").filter(pl.col(T) < pl.col(FIRST))
        covariates = before.group_by(U).agg(_outcome_aggregates(experiment, prefix="pre_"))
        covariates = covariates.rename({f"pre_{CLICKS}": pre("ctr")})
        frame = frame.join(covariates, on=U, how="left").with_columns(
            pl.col([pre(m) for m in METRICS]).fill_null(0.0))
    elif covariate is not None:
        frame = frame.join(covariate.select(U, COVARIATE), on=U, how="left")
        frame = frame.with_columns(pl.col(COVARIATE).fill_null(pl.col(COVARIATE).mean()))
        frame = frame.with_columns([pl.col(COVARIATE).alias(pre(m)) for m in METRICS]).drop(COVARIATE)
    return UserMetrics(frame.sort(U), mixed)
