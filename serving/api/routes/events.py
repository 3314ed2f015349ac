"""Event ingestion: acknowledged only once durably appended."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header

from tlrec.serving.api import service
from tlrec.serving.api.deps import State, UserAuth
from tlrec.serving.api.routes import errors
from tlrec.serving.api.schemas import EventsAck, EventsIn

router = APIRouter(prefix="/v1", tags=["events"], dependencies=[UserAuth])


@router.post("/events", response_model=EventsAck, responses=errors(401, 409, 413, 415, 422, 503))
async def post_events(
    state: State,
    body: EventsIn,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", min_length=1, max_length=128,
               description="Retrying with the same key (and batch) is acknowledged without storing it twice."),
    ] = None,
) -> EventsAck:
    """Append a batch of interactions (fsync before the reply); the users' next recommendations use them."""
    return await service.ingest_events(state, body.events, idempotency_key)
