"""Recommendations for a user id, for a sent history, next-item predictions, and similar items."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from tlrec.serving.api import service
from tlrec.serving.api.deps import CurrentModel, CurrentModels, State, UserAuth
from tlrec.serving.api.routes import errors
from tlrec.serving.api.routes.console import with_titles
from tlrec.serving.api.schemas import MAX_ID_CHARS, MAX_K, HistoryRecommendIn, RecommendationsOut, SimilarOut

router = APIRouter(prefix="/v1", tags=["recommendations"], dependencies=[UserAuth])

UserId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, description="External user id.")]
ItemId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, description="External item id.")]
K = Annotated[int, Query(ge=1, le=MAX_K, description="List length.")]
Explain = Annotated[bool, Query(
    description="Give each item an `explanation`: which history items its score came from and how much of it "
    "from pre-trained content vs learned ids (models that can split their scores exactly: ncf).")]


@router.get("/users/{user_id}/recommendations", response_model=RecommendationsOut,
            responses=errors(401, 404, 422, 503))
async def user_recommendations(
    request: Request, state: State, models: CurrentModels, user_id: UserId, k: K = 10,
    exclude_seen: Annotated[bool, Query(description="Drop the user's items (training data, fresh events).")] = True,
    explain: Explain = False,
) -> RecommendationsOut:
    """Top-k for a user; an unknown user gets popular items (`source="popular"`).

    A user inside an A/B experiment gets their variant's model (`experiment`, `variant`).
    """
    return with_titles(request, await service.user_recommendations(state, models, user_id, k, exclude_seen, explain))


@router.post("/recommendations", response_model=RecommendationsOut, responses=errors(401, 413, 415, 422, 503))
async def history_recommendations(request: Request, state: State, models: CurrentModels,
                                  body: HistoryRecommendIn) -> RecommendationsOut:
    """Top-k for a history sent in the request (new or anonymous users), optional candidates and filters."""
    return with_titles(request, await service.history_recommendations(state, models, body))


@router.get("/users/{user_id}/next", response_model=RecommendationsOut, responses=errors(401, 404, 422, 503))
async def user_next(
    request: Request, state: State, models: CurrentModels, user_id: UserId, k: K = 10,
    exclude_seen: Annotated[bool, Query(description="Drop the user's items (training data, fresh events).")] = True,
    explain: Explain = False,
) -> RecommendationsOut:
    """The k items the user is most likely to interact with next, from their events in order (training
    data, then fresh events: a click changes the answer at once).

    A model trained with `tlrec train --task next-item` reads the order, event types and times; any
    other model answers from the same events as a history (as `/recommendations` does).
    """
    return with_titles(request, await service.user_recommendations(state, models, user_id, k, exclude_seen, explain))


@router.post("/next", response_model=RecommendationsOut, responses=errors(401, 413, 415, 422, 503))
async def sequence_next(request: Request, state: State, models: CurrentModels,
                        body: HistoryRecommendIn) -> RecommendationsOut:
    """The next k items after an ad-hoc sequence (anonymous sessions): `history` oldest first, each with
    optional `event` and `timestamp`; same options as `POST /v1/recommendations`."""
    return with_titles(request, await service.history_recommendations(state, models, body))


@router.get("/items/{item_id}/similar", response_model=SimilarOut, responses=errors(401, 404, 422, 503))
async def similar_items(request: Request, state: State, model: CurrentModel, item_id: ItemId,
                        k: K = 10) -> SimilarOut:
    """Items nearest to `item_id` in the model's item space (popular items when it has none)."""
    return with_titles(request, await service.similar_items(state, model, item_id, k))
