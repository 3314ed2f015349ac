"""The web console at ``/``, the API docs with local assets, and the ``/v1`` routes only the console needs.

The page and its static files need no key (they hold no data); everything the page shows
comes from ``/v1`` routes that take the same keys as any client (``X-API-Key``). The docs
(``/docs``: Swagger UI, ``/redoc``: ReDoc) load their scripts from a copy installed with
the package (``fastapi-offline``), never from a CDN, so they work offline.
"""

from __future__ import annotations

import base64
import hmac
import time
from pathlib import Path as FilePath
from typing import Annotated, TypeVar

import anyio.to_thread
import fastapi_offline
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

import tlrec.serving.console
from tlrec.serving.api.deps import API_KEY_HEADER, CurrentModel, CurrentModels, ServiceState, State, UserAuth
from tlrec.serving.api.routes import errors
from tlrec.serving.api.schemas import (
    MAX_HISTORY_EVENTS,
    MAX_ID_CHARS,
    MAX_SEARCH,
    CatalogEntry,
    CatalogItemOut,
    CatalogSearchOut,
    ExperimentOut,
    ExperimentsOut,
    HistoryEventOut,
    ModelReportOut,
    RecommendationsOut,
    ReportSection,
    SessionOut,
    SimilarOut,
    UserHistoryOut,
    VariantView,
    VectorSource,
)
from tlrec.serving.console.catalog import MEDIA_TYPES, Catalog, MediaKind
from tlrec.serving.console.experiments import experiment_views
from tlrec.serving.console.reports import Section
from tlrec.serving.console.state import ConsoleState

CONSOLE_DIR = FilePath(tlrec.serving.console.__file__).parent
DOCS_ASSETS = FilePath(fastapi_offline.__file__).parent / "static"
STATIC_URL, DOCS_ASSETS_URL = "/console/static", "/docs-assets"
#: The page runs only its own script and talks only to this server; media come as blobs (fetched with the key).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                               "media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache",
}

#: The docs pages run the inline start-up FastAPI writes; nothing may come from another host (ReDoc's footer
#: logo would: it is left out).
DOCS_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' "
                               "'unsafe-inline'; img-src 'self' data: blob:; worker-src 'self' blob:; "
                               "connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}

pages = APIRouter(include_in_schema=False)
router = APIRouter(prefix="/v1", tags=["console"], dependencies=[UserAuth])

ItemId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, description="External item id.")]
UserId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, description="External user id.")]
Answer = TypeVar("Answer", RecommendationsOut, SimilarOut)


def mount(app: FastAPI) -> None:
    """Add the console, its static files, the local docs and the console's ``/v1`` routes to ``app``
    (built with ``docs_url=None, redoc_url=None``)."""
    app.mount(STATIC_URL, StaticFiles(directory=CONSOLE_DIR / "static"), name="console-static")
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    app.include_router(pages)
    app.include_router(router)


def _console(request: Request) -> ConsoleState:
    return request.app.state.console


async def get_console(request: Request) -> ConsoleState:
    return _console(request)


Console = Annotated[ConsoleState, Depends(get_console)]


def with_titles(request: Request, out: Answer) -> Answer:
    """``out`` with each item's (and each explanation's history items') catalog title, when a catalog is loaded."""
    titles = _console(request).titles
    if titles:
        for item in out.items:
            item.title = titles.get(item.item_id)
            if item.explanation is not None:
                for part in item.explanation.contributions:
                    part.title = titles.get(part.item_id)
    return out


# ---------------------------------------------------------------------------- page and docs
_PAGE: dict[str, str] = {}


@pages.get("/")
async def console_page() -> HTMLResponse:
    """The console: one HTML page; its script asks for a key and calls the /v1 routes."""
    if "html" not in _PAGE:
        _PAGE["html"] = (CONSOLE_DIR / "templates" / "index.html").read_text(encoding="utf-8") \
            .replace("{{ static }}", STATIC_URL)
    return HTMLResponse(_PAGE["html"], headers=PAGE_HEADERS)


def _docs_page(page: HTMLResponse) -> HTMLResponse:
    page.headers.update(DOCS_HEADERS)
    return page


@pages.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over /openapi.json, its assets served from the package."""
    app = request.app
    return _docs_page(get_swagger_ui_html(
        openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI",
        oauth2_redirect_url=app.swagger_ui_oauth2_redirect_url,
        swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},  # no online validator
    ))


@pages.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return _docs_page(get_swagger_ui_oauth2_redirect_html())


@pages.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc over /openapi.json, its script served from the package."""
    return _docs_page(get_redoc_html(openapi_url=request.app.openapi_url, title=f"{request.app.title} - ReDoc",
                                     redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js",
                                     redoc_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png", with_google_fonts=False))


# ---------------------------------------------------------------------------- session
def _is_admin(request: Request, state: ServiceState) -> bool:
    """The request's key is the admin key (constant time); open admin routes (no keys, --insecure) count."""
    if not state.settings.has_keys:
        return True
    given = request.headers.get(API_KEY_HEADER)
    probe = (given or "").encode("utf-8", "surrogateescape")
    found = False
    for key in state.admin_keys:
        found |= hmac.compare_digest(probe, key)
    return found and given is not None


@router.get("/console/session", response_model=SessionOut, responses=errors(401, 422))
async def session(request: Request, state: State, console: Console) -> SessionOut:
    """Who the key is (user or admin) and what this server serves: checks a key at log-in."""
    models = state.models
    model = models.default if models is not None else None
    return SessionOut(
        role="admin" if _is_admin(request, state) else "user",
        model_version=model.version if model else None, model=model.model.name if model else None,
        explanation_method=model.explanation_method if model else None,
        catalog_items=len(console.catalog) if console.catalog is not None else None,
        catalog_note=console.catalog_note,
        experiments=[e.experiment.name for e in models.experiments] if models is not None else [],
    )


# ---------------------------------------------------------------------------- catalog
def _catalog(console: ConsoleState) -> Catalog:
    if console.catalog is None:
        raise HTTPException(status_code=404, detail=f"no catalog loaded ({console.catalog_note})")
    return console.catalog


@router.get("/catalog/search", response_model=CatalogSearchOut, responses=errors(401, 404, 422))
async def catalog_search(
    console: Console,
    q: Annotated[str, Query(max_length=200, description="Part of a title (case-insensitive), or an item id.")] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_SEARCH, description="Most items returned.")] = 20,
) -> CatalogSearchOut:
    """Items of the console's catalog whose title contains `q`. 404: no catalog loaded."""
    catalog = _catalog(console)
    items, total = await anyio.to_thread.run_sync(catalog.search, q, limit)
    return CatalogSearchOut(query=q, total=total, items=[CatalogEntry(**catalog.summary(i)) for i in items])


@router.get("/catalog/items/{item_id}", response_model=CatalogItemOut, responses=errors(401, 404, 422, 503))
async def catalog_item(console: Console, model: CurrentModel, item_id: ItemId) -> CatalogItemOut:
    """An item's text, metadata, which media it has, and the encoders behind its content vector."""
    catalog = _catalog(console)
    item = catalog.item(item_id)
    if item is None:
        raise HTTPException(status_code=404, detail=f"unknown item {item_id[:64]!r}")
    known = item_id in model.items
    counts = getattr(model.fallback, "item_scores", None)
    interactions = float(counts[model.items.to_internal([item_id])[0]]) if known and counts is not None else None
    cards = model.manifest.get("encoders") or {}
    has_input = {"text": bool(item.title or item.description), "image": "image" in item.media_named,
                 "audio": "audio" in item.media_named}
    vectors = [VectorSource(modality=m, encoder=c.get("name"), version=c.get("version"), dim=c.get("dim"),
                            source=c.get("source"), input_spec=c.get("input_spec"))
               for m, c in cards.items() if isinstance(c, dict) and has_input.get(m, False)]
    note = None if cards else f"the served model ({model.model.name}) uses no pre-trained vectors"
    return CatalogItemOut(item_id=item_id, title=item.title, description=item.description,
                          has_image=item.image is not None, has_audio=item.audio is not None,
                          metadata=item.metadata, known_to_model=known, training_interactions=interactions,
                          vectors=vectors, vectors_note=note)


_MEDIA_CONTENT = {t: {"schema": {"type": "string", "format": "binary"}}
                  for types in MEDIA_TYPES.values() for t in sorted(set(types.values()))}


@router.get("/catalog/items/{item_id}/{kind}", response_class=Response,
            responses={200: {"content": _MEDIA_CONTENT, "description": "The file, with its content type."},
                       **errors(401, 404, 422)})
async def catalog_media(console: Console, item_id: ItemId,
                        kind: Annotated[MediaKind, Path(description="`image` or `audio`.")]) -> Response:
    """The item's image or audio file: only a file the catalog names, inside the catalog's folder, of a known type.
    404: no such item, or it has no such medium."""
    found = _catalog(console).media(item_id, kind)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no {kind} for item {item_id[:64]!r}")
    path, media_type = found
    return FileResponse(path, media_type=media_type,
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"})


# ---------------------------------------------------------------------------- users
@router.get("/users/{user_id}/history", response_model=UserHistoryOut, responses=errors(401, 422, 503))
async def user_history(
    console: Console, model: CurrentModel, user_id: UserId,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_EVENTS, description="The newest this many events.")] = 200,
) -> UserHistoryOut:
    """The user's events oldest first: training interactions (with times and event types where the training
    file is still there), then the events posted to `/v1/events` since."""
    events, source = await anyio.to_thread.run_sync(console.histories.of, model, user_id)
    titles = console.titles or {}
    shown = events[-limit:]
    return UserHistoryOut(
        user_id=user_id, known_user=user_id in model.users, total=len(events), source=source,
        events=[HistoryEventOut(item_id=e.item_id, title=titles.get(e.item_id), timestamp=e.timestamp, event=e.event,
                                origin=e.origin) for e in shown],
    )


# ---------------------------------------------------------------------------- experiments and models
def _png(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data else None


@router.get("/console/experiments", response_model=ExperimentsOut, responses=errors(401, 422, 503))
async def experiments(state: State, models: CurrentModels, console: Console) -> ExperimentsOut:
    """The served experiments: variants, traffic, exposures so far, and the analysis of `tlrec ab analyze`
    (effects with intervals, SRM, plots) with the events posted to the API as outcomes."""
    settings = state.settings
    views = await anyio.to_thread.run_sync(experiment_views, models.experiments, settings.resolved_exposures_file,
                                           settings.resolved_events_dir, console.analyzer, time.time())
    return ExperimentsOut(experiments=[
        ExperimentOut(name=v.name, description=v.description, traffic=v.traffic, control=v.control, start=v.start,
                      stop=v.stop, active=v.active, file=v.file,
                      variants=[VariantView(name=a.name, weight=a.weight, model_version=a.model_version,
                                            exposures=a.exposures) for a in v.variants],
                      analysis=v.analysis, plots={name: _png(png) or "" for name, png in v.plots.items()},
                      analysis_note=v.analysis_note)
        for v in views
    ])


def _section(section: Section) -> ReportSection:
    return ReportSection(data=section.data, png=_png(section.png), source=section.source, note=section.note)


@router.get("/console/model", response_model=ModelReportOut, responses=errors(401, 422, 503))
async def model_page(model: CurrentModel, console: Console) -> ModelReportOut:
    """The served version: manifest, validation table, transfer report and encoder comparison (with plots)."""
    report = await anyio.to_thread.run_sync(console.model_report, model)
    return ModelReportOut(version=report.version, model=report.model, task=report.task, manifest=report.manifest,
                          validation=report.validation, validation_note=report.validation_note,
                          transfer=_section(report.transfer), encoders=_section(report.encoders))

