"""The probability routes' work: propensity and return answers (issue 15).

Each answer counts the user's fresh events from the event log (labelled by the model's SPEC for
propensity; their times for return) and runs in a model thread within the request deadline;
the models are ``serving.probability_models.ProbabilityModels``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import HTTPException

from tlrec.serving.api.deps import ServiceState
from tlrec.serving.api.service import in_model_thread
from tlrec.serving.api.schemas import ItemProbability, PropensityIn, PropensityOut, ReturnOut
from tlrec.tables import DataError

logger = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["propensity", "return_probability"]


def _not_served(what: str, option: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"no {what} model is served (start `tlrec serve` with {option})")


async def propensity(state: ServiceState, user_id: str, body: PropensityIn) -> PropensityOut:
    """Calibrated probabilities of ``body.item_ids`` for the user, fresh events counted."""
    models = state.probability
    artifact = models.propensity
    if artifact is None:
        raise _not_served("propensity", "--propensity ARTIFACTS")
    spec = artifact.positive.text
    if body.event is not None and body.event != spec:
        raise HTTPException(status_code=422, detail=f"event: this server's propensity model predicts {spec!r}, "
                                                    f"not {body.event!r}")
    fresh = [(item, event, value) for item, _, event, value in state.fresh.events(user_id)]
    try:
        frame = await _call(state, artifact.predict_user, user_id, body.item_ids, fresh)
    except DataError as exc:
        raise HTTPException(status_code=404, detail=f"item_ids: {exc}") from None
    counted = sum(1 for item, event, _ in fresh if event is not None and item in artifact.items)
    return PropensityOut(user_id=user_id, event=spec, known_user=user_id in artifact.users, fresh_events=counted,
                         model_version=models.propensity_version,
                         items=[ItemProbability(**row) for row in frame.iter_rows(named=True)])


async def return_probability(state: ServiceState, user_id: str) -> ReturnOut:
    """The user's calibrated probability of an event within the horizon, fresh events counted."""
    models = state.probability
    artifact = models.returns
    if artifact is None:
        raise _not_served("return", "--return ARTIFACTS")
    fresh = [(ts, item) for item, ts, _, _ in state.fresh.events(user_id) if ts is not None]
    extra = [([ts for ts, _ in fresh], [item for _, item in fresh])] if fresh else None
    frame = await _call(state, artifact.predict, [user_id], extra)
    row = frame.row(0, named=True)
    return ReturnOut(user_id=user_id, probability=row["probability"], known_user=row["known_user"],
                     horizon_days=row["horizon_days"], as_of=row["as_of"], model_version=models.return_version)


async def _call(state: ServiceState, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a model thread within the deadline; 503 past it (there is no fallback answer)."""
    try:
        return await in_model_thread(state, fn, *args)
    except TimeoutError:
        raise HTTPException(status_code=503, detail="model work passed the deadline; try again") from None
