"""Request and response schemas of the HTTP API (separate models, every list and string bounded).

The limits are part of the contract (they appear in the OpenAPI schema); a request past
one gets 422 with a message naming the field.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_K = 1000
MAX_HISTORY = 1000
MAX_CANDIDATES = 10_000
MAX_EXCLUDE = 1000
MAX_EVENTS = 1000
MAX_ID_CHARS = 256

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
Source = Literal["model", "history", "popular"]
FallbackReason = Literal["unknown_user", "no_known_items", "no_item_vectors", "error", "timeout"]
# int seconds (the interactions contract) or an ISO-8601 datetime (naive = UTC).
Timestamp = Annotated[int, Field(ge=0, le=253_402_300_799)] | dt.datetime


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------- errors
class ErrorOut(_Out):
    """Every error: one line in ``error``; for 422 the failing fields in ``detail``."""

    error: str
    detail: list[dict[str, str]] | None = None


# ---------------------------------------------------------------------------- recommendations
class ScoredItem(_Out):
    item_id: str
    score: float
    rank: int = Field(ge=1)


class RecommendationsOut(_Out):
    user_id: str = Field(description="As sent; empty for an anonymous history.")
    items: list[ScoredItem] = Field(description="Best first; fewer than k when fewer items are allowed.")
    source: Source = Field(
        description="'model': the model (with the user's fresh events, if any); 'history': the model from "
        "a sent or fresh history of a user it does not know; 'popular': the popularity fallback."
    )
    fallback_reason: FallbackReason | None = Field(default=None, description="Why the fallback answered.")
    model_version: str = Field(description="The version that answered (the variant's, inside an experiment).")
    experiment: str | None = Field(
        default=None, description="The A/B experiment the user is in (null: not in one; the default model answered)."
    )
    variant: str | None = Field(default=None, description="The user's variant in `experiment`, whose model answered.")


class HistoryItem(_In):
    item_id: Id
    weight: float = Field(default=1.0, gt=0, le=1e6, description="Strength of the interaction (1 = one event).")
    timestamp: Timestamp | None = Field(default=None, description="Unix seconds or ISO-8601.")


class RecommendFilters(_In):
    exclude_items: list[Id] = Field(default_factory=list, max_length=MAX_EXCLUDE, description="Never returned.")
    exclude_history: bool = Field(default=True, description="Drop the history's own items from the answer.")


class HistoryRecommendIn(_In):
    """Recommendations for a history sent with the request (new or anonymous users)."""

    history: list[HistoryItem] = Field(
        default_factory=list, max_length=MAX_HISTORY,
        description="Items oldest first: the model may weigh recent ones more (by position).",
    )
    k: int = Field(default=10, ge=1, le=MAX_K)
    candidates: list[Id] | None = Field(
        default=None, min_length=1, max_length=MAX_CANDIDATES, description="Rank only among these items."
    )
    filters: RecommendFilters = Field(default_factory=RecommendFilters)
    user_id: Id | None = Field(
        default=None,
        description="Optional: names the user in the answer; a user in an A/B experiment gets their variant's model.",
    )


class SimilarOut(_Out):
    item_id: str
    items: list[ScoredItem]
    source: Literal["model", "popular"]
    fallback_reason: FallbackReason | None = None
    model_version: str


# ---------------------------------------------------------------------------- events
class EventIn(_In):
    """One interaction (the interactions contract)."""

    user_id: Id
    item_id: Id = Field(description="Items unknown to the model are stored but do not change answers.")
    timestamp: Timestamp | None = Field(default=None, description="Unix seconds or ISO-8601; default: now.")
    event: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "view"
    value: float | None = Field(default=None, ge=-1e12, le=1e12)


class EventsIn(_In):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsAck(_Out):
    accepted: int = Field(description="Events in the stored batch.")
    duplicate: bool = Field(description="True when this Idempotency-Key was already stored (nothing new written).")
    sequence: int = Field(description="The batch's position in the event log.")
    unknown_items: int = Field(description="Events naming items the current model does not know.")


# ---------------------------------------------------------------------------- service
class HealthOut(_Out):
    status: Literal["ok"]
    model_version: str | None


class ReadyOut(_Out):
    status: Literal["ready", "not_ready"]
    model_version: str | None
    reason: str | None = None


class PingOut(_Out):
    status: Literal["ok"] = "ok"


class VariantOut(_Out):
    experiment: str
    variant: str
    model_version: str


class ReloadOut(_Out):
    model_version: str = Field(description="The default version (`ARTIFACTS/current`) now in service.")
    previous_version: str | None
    changed: bool = Field(description="False when the versions and the experiment files are as before.")
    variants: list[VariantOut] = Field(default_factory=list, description="Each experiment variant's version now.")
