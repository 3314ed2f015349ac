"""A predicted CUPED covariate: each exposed user's return probability from a return model.

When there is no pre-period metric to adjust with (new users, a new metric, no logged history
before the test), a model's prediction of the user's behaviour serves as the covariate
(the practice known as CUPAC): any function of what was known before exposure is a valid
CUPED covariate, and the better it predicts the metric, the narrower the intervals.

The covariate is ``P(the user has an event within the model's horizon)`` as of just before the
user's first exposure (``ReturnArtifact.predict(at=...)``): only events before exposure count, so
the treatment cannot move it. Users the model does not know get its base rate.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
from tlrec.services.ab.outcomes import COVARIATE
from tlrec.tables import Columns
from tlrec.training.return_artifact import ReturnArtifact

logger = logging.getLogger(__name__)

__all__ = ["predicted_covariate"]


def predicted_covariate(artifacts: Path, exposures: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """``user_id, covariate`` (Float64) of every user in ``exposures`` and a one-line description.

    ``artifacts``: a return model (a root's ``current`` or a version directory); ``ArtifactError``
    (one line) when it is another task's model or fails verification.
    """
    artifact, version = ReturnArtifact.load(artifacts)
    U, T = Columns.USER, Columns.TIMESTAMP
    first = exposures.group_by(U).agg(pl.col(T).min()).sort(U)
    at = first[T].to_numpy() - 1  # strictly before the first exposure
    predicted = artifact.predict(first[U], at=at)
    known = int(predicted["known_user"].sum())
    logger.info("covariate: return model %s (horizon %g days) for %d exposed users, %d with events before "
                "their exposure (the others get the base rate %.4f)", version, artifact.horizon_days,
                first.height, known, artifact.model.prior)
    description = (f"predicted P(return within {artifact.horizon_days:g} days) before exposure, return model "
                   f"{version} ({known} of {first.height} users with history)")
    return predicted.select(U, pl.col("probability").alias(COVARIATE)), description
