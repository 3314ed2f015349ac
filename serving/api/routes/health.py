"""Probes, metrics and a constant endpoint (no model work)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from tlrec.serving.api.deps import State, StrictQuery, UserAuth
from tlrec.serving.api.routes import errors
from tlrec.serving.api.schemas import HealthOut, PingOut, ReadyOut

router = APIRouter(tags=["service"])


@router.get("/healthz", response_model=HealthOut, dependencies=[StrictQuery], responses=errors(422))
async def healthz(state: State) -> HealthOut:
    """Alive (the process answers); says which version serves, if any."""
    return HealthOut(status="ok", model_version=state.model.version if state.model else None)


@router.get("/readyz", response_model=ReadyOut, dependencies=[StrictQuery],
            responses={503: {"model": ReadyOut, "description": "Not ready."}, **errors(422)})
async def readyz(state: State) -> JSONResponse:
    """Ready once the model and index are loaded and warmed up and the event log is replayed."""
    version = state.model.version if state.model else None
    if state.ready:
        return JSONResponse(ReadyOut(status="ready", model_version=version).model_dump())
    body = ReadyOut(status="not_ready", model_version=version, reason=state.not_ready_reason or "starting")
    return JSONResponse(body.model_dump(), status_code=503)


@router.get("/metrics", response_class=Response, dependencies=[StrictQuery],
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text format."}, **errors(422)})
async def metrics(state: State) -> Response:
    """Requests, latency histograms, fallbacks, reloads, events and the model version in service."""
    return Response(state.metrics.render(), media_type=state.metrics.content_type)


@router.get("/v1/ping", response_model=PingOut, responses=errors(401, 422),
            dependencies=[UserAuth])
async def ping() -> PingOut:
    """A constant answer through the same stack (auth, middleware): checks a key; the benchmark's baseline."""
    return PingOut()
