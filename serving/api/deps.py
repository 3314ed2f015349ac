"""Shared state of one app and its ``Annotated`` dependencies (auth, the models in service).

Each request reads ``state.models`` once (``CurrentModels``: the default model and every
A/B variant's, one immutable ``ModelSet``) and uses that object to the end, so a reload
swapping the reference never changes a request half-way.
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader
from tlrec.serving.api.batching import MicroBatcher
from tlrec.serving.api.exposure_recorder import ExposureRecorder
from tlrec.serving.api.prometheus import Metrics
from tlrec.serving.api.threads import ModelThreads
from tlrec.serving.api.variants import ModelSet
from tlrec.serving.event_log import EventLog
from tlrec.serving.event_snapshot import FreshEvents
from tlrec.serving.probability_models import ProbabilityModels
from tlrec.serving.served_model import ServedModel
from tlrec.serving.settings import Settings

API_KEY_HEADER = "X-API-Key"


@dataclass
class ServiceState:
    """Everything a request may touch; ``models`` is swapped whole by a reload."""

    settings: Settings
    metrics: Metrics
    fresh: FreshEvents
    batcher: MicroBatcher
    model_threads: ModelThreads
    models: ModelSet | None = None
    events: EventLog | None = None
    exposures: ExposureRecorder | None = None  # set when experiments are configured
    probability: ProbabilityModels = field(default_factory=ProbabilityModels)  # propensity and return models
    ready: bool = False
    not_ready_reason: str | None = "starting"
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    admin_keys: list[bytes] = field(init=False)
    user_keys: list[bytes] = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.admin_keys = [s.admin_key.get_secret_value().encode()] if s.admin_key is not None else []
        self.user_keys = [k.get_secret_value().encode() for k in s.api_keys] + self.admin_keys

    @property
    def model(self) -> ServedModel | None:
        """The default model (``ARTIFACTS/current``) in service, if loaded."""
        models = self.models
        return models.default if models is not None else None


def _state(request: Request) -> ServiceState:
    return request.app.state.service


async def get_state(request: Request) -> ServiceState:
    return _state(request)


State = Annotated[ServiceState, Depends(get_state)]


async def current_models(request: Request) -> ModelSet:
    """The default and variant models in service at the start of this request; 503 while none is loaded."""
    state = _state(request)
    models = state.models
    if models is None:
        raise HTTPException(status_code=503, detail=f"not ready: {state.not_ready_reason or 'no model loaded'}")
    return models


CurrentModels = Annotated[ModelSet, Depends(current_models)]


async def current_model(request: Request) -> ServedModel:
    """The default model in service at the start of this request; 503 while none is loaded."""
    return (await current_models(request)).default


CurrentModel = Annotated[ServedModel, Depends(current_model)]

_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="API key (TLREC_API_KEYS).")
_UNAUTHORIZED = "missing or invalid API key (X-API-Key)"


def _matches(given: str | None, keys: list[bytes]) -> bool:
    """Constant-time match of ``given`` against every key (no early exit, no length shortcut)."""
    probe = (given or "").encode("utf-8", "surrogateescape")
    found = False
    for key in keys:
        found |= hmac.compare_digest(probe, key)
    return found and given is not None


async def require_user(request: Request, key: Annotated[str | None, Security(_key_header)] = None) -> None:
    """401 unless X-API-Key is a user or the admin key (no keys set + --insecure: open); then the query
    and content-type checks.

    One dependency does all (and reads the state itself): FastAPI's per-dependency cost
    is a large part of a short request.
    """
    state = _state(request)
    if state.settings.has_keys or not state.settings.insecure:
        if not _matches(key, state.user_keys):
            raise HTTPException(status_code=401, detail=_UNAUTHORIZED, headers={"WWW-Authenticate": API_KEY_HEADER})
    _check_query(request)
    _check_content_type(request)


async def require_admin(request: Request, key: Annotated[str | None, Security(_key_header)] = None) -> None:
    """401 for no or an unknown key, 403 for a user key: only TLREC_ADMIN_KEY may use admin routes."""
    state = _state(request)
    if state.settings.has_keys or not state.settings.insecure:
        if not _matches(key, state.admin_keys):
            if _matches(key, state.user_keys):
                raise HTTPException(status_code=403, detail="this key may not use admin routes (TLREC_ADMIN_KEY)")
            raise HTTPException(status_code=401, detail=_UNAUTHORIZED, headers={"WWW-Authenticate": API_KEY_HEADER})
    _check_query(request)
    _check_content_type(request)


UserAuth = Depends(require_user)
AdminAuth = Depends(require_admin)


@dataclass(frozen=True)
class _RouteShape:
    """What a route's dependencies declare: its query parameter names and whether it takes a body."""

    query: frozenset[str]
    takes_body: bool


_SHAPES: dict[int, _RouteShape | None] = {}


def _dependant_shape(dependant: Any) -> tuple[set[str], bool]:
    names, body = {p.alias for p in dependant.query_params}, bool(dependant.body_params)
    for sub in dependant.dependencies:
        sub_names, sub_body = _dependant_shape(sub)
        names |= sub_names
        body = body or sub_body
    return names, body


def _route_shape(request: Request) -> _RouteShape | None:
    """The shape of the request's route (computed once per route), None outside a route."""
    route = request.scope.get("route")
    key = id(route)
    if key not in _SHAPES:
        dependant = getattr(route, "dependant", None)
        if dependant is None:
            _SHAPES[key] = None
        else:
            names, body = _dependant_shape(dependant)
            _SHAPES[key] = _RouteShape(frozenset(names), body)
    return _SHAPES[key]


def _check_query(request: Request) -> None:
    """422 for a query parameter the route does not define (a typo like ``?K=5`` is not silently ignored)."""
    if not request.scope.get("query_string"):
        return
    shape = _route_shape(request)
    if shape is None:
        return
    for name in request.query_params:
        if name not in shape.query:
            raise RequestValidationError([{
                "loc": ("query", name[:64]), "type": "extra_forbidden",
                "msg": f"unknown query parameter (allowed: {', '.join(sorted(shape.query)) or 'none'})",
            }])


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or ``application/<anything>+json``, parameters (``; charset=utf-8``) ignored."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _check_content_type(request: Request) -> None:
    """415 when a route taking a JSON body gets a body that is not labelled JSON (text/plain, a form, none).

    A request without a body and without a Content-Type is left to validation (422: body required).
    """
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    shape = _route_shape(request)
    if shape is None or not shape.takes_body:
        return
    content_type = request.headers.get("content-type")
    if content_type is None:
        chunked = "transfer-encoding" in request.headers
        if not chunked and request.headers.get("content-length", "0").strip() in ("", "0"):
            return
        raise HTTPException(status_code=415, detail="missing Content-Type: send application/json")
    if not is_json_media_type(content_type):
        raise HTTPException(status_code=415,
                            detail=f"unsupported Content-Type {content_type[:64]!r}: send application/json")


async def reject_unknown_query(request: Request) -> None:
    """The query check alone, for routes without a key (probes)."""
    _check_query(request)


StrictQuery = Depends(reject_unknown_query)
