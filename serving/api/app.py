"""FastAPI app: the model and index load in ``lifespan``, never at import time.

First version (a later issue makes it production-grade):
``GET /recommendations/{user_id}?k=&exclude_seen=`` and ``GET /healthz``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, HTTPException, Path as PathParam, Query, Request
from starlette.concurrency import run_in_threadpool

from serving.api.schemas import MAX_K, HealthOut, RecommendationsOut, ScoredItem
from serving.recommender import ServedModel

logger = logging.getLogger(__name__)


def create_app(artifacts: Path) -> FastAPI:
    """An app serving the artifact version that ``artifacts`` names (dir or root with ``current``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.model = await run_in_threadpool(ServedModel.load, Path(artifacts))
        yield

    app = FastAPI(title="tlrec", version="0.1.0", lifespan=lifespan)

    def served(request: Request) -> ServedModel:
        model = getattr(request.app.state, "model", None)
        if model is None:
            raise HTTPException(status_code=503, detail="model not loaded")
        return model

    @app.get("/healthz", response_model=HealthOut)
    async def healthz(request: Request) -> HealthOut:
        model = getattr(request.app.state, "model", None)
        return HealthOut(status="ok", model_version=model.version if model else None)

    @app.get("/recommendations/{user_id}", response_model=RecommendationsOut)
    async def recommendations(
        request: Request,
        user_id: Annotated[str, PathParam(min_length=1, max_length=256)],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        exclude_seen: bool = True,
    ) -> RecommendationsOut:
        model = served(request)
        (rec,) = await run_in_threadpool(model.recommend, [user_id], k, exclude_seen)
        items = [ScoredItem(item_id=i, score=s, rank=r) for i, s, r in zip(rec.item_ids, rec.scores, rec.ranks)]
        return RecommendationsOut(user_id=user_id, items=items, source=rec.source, model_version=model.version)

    return app
