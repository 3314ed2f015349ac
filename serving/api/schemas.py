"""Request and response schemas of the HTTP API (separate, with limits)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

MAX_K = 1000


class ScoredItem(BaseModel):
    item_id: str
    score: float
    rank: int = Field(ge=1)


class RecommendationsOut(BaseModel):
    user_id: str
    items: list[ScoredItem]
    source: Literal["model", "popular"] = Field(description="'popular' when the user is unknown to the model")
    model_version: str


class HealthOut(BaseModel):
    status: Literal["ok"]
    model_version: str | None
