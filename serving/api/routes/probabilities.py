"""Calibrated probabilities: will this user do the event on these items, will this user come back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from tlrec.serving.api import probabilities
from tlrec.serving.api.deps import State, UserAuth
from tlrec.serving.api.routes import errors
from tlrec.serving.api.schemas import MAX_ID_CHARS, PropensityIn, PropensityOut, ReturnOut

router = APIRouter(prefix="/v1", tags=["probabilities"], dependencies=[UserAuth])

UserId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, description="External user id.")]


@router.post("/users/{user_id}/propensity", response_model=PropensityOut, responses=errors(401, 404, 413, 415, 422, 503))
async def user_propensity(state: State, user_id: UserId, body: PropensityIn) -> PropensityOut:
    """P(the user does the model's event on each item), calibrated; the user's fresh events count.
    An unknown user is answered from the items (and their fresh events); an item without training
    examples from its content. 404: an item outside the catalog, or no propensity model served."""
    return await probabilities.propensity(state, user_id, body)


@router.get("/users/{user_id}/return", response_model=ReturnOut, responses=errors(401, 404, 422, 503))
async def user_return(state: State, user_id: UserId) -> ReturnOut:
    """P(the user has at least one event within the horizon after the as-of time), calibrated; a fresh
    event moves the as-of time to it. 404: no return model served."""
    return await probabilities.return_probability(state, user_id)
