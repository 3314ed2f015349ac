"""FastAPI app factory: settings in, app out; the model, index and event log load in ``lifespan``.

Start-up runs in the background so ``/healthz`` answers at once and ``/readyz`` turns 200
only when the event log is replayed, the exposure log is open (with experiments) and the
default model and every experiment variant's are loaded and warmed up. Errors never
carry a stack trace to the client: every error body is ``ErrorOut``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tlrec.serving.api import service, threads
from tlrec.serving.api.batching import MicroBatcher
from tlrec.serving.api.deps import ServiceState
from tlrec.serving.api.exposure_recorder import ExposureRecorder
from tlrec.serving.api.middleware import BodyLimitMiddleware
from tlrec.serving.api.routes import admin, console, events, health, probabilities, recommendations
from tlrec.serving.api.variants import ModelSet, load_model_set
from tlrec.serving.event_log import EventLog
from tlrec.serving.event_snapshot import FreshEvents
from tlrec.serving.exposure_log import ExposureLog
from tlrec.serving.probability_models import ProbabilityModels
from tlrec.serving.api.prometheus import Metrics, MetricsMiddleware
from tlrec.serving.console.experiments import ExperimentAnalyzer
from tlrec.serving.console.state import ConsoleState
from tlrec.serving.served_model import ServedModel
from tlrec.serving.settings import Settings
from tlrec.training.artifacts import resolve_version

logger = logging.getLogger(__name__)

API_VERSION = "1.0.0"


def create_app(settings: Settings | Path, model: ServedModel | ModelSet | None = None,
               probability: ProbabilityModels | None = None,
               analyzer: ExperimentAnalyzer | None = None) -> FastAPI:
    """An app serving ``settings.artifacts`` (a root with ``current``, or one version dir).

    ``settings`` may be a path (other settings from the environment). ``model``: already
    loaded models (``tlrec serve`` loads the default and every variant first, to fail
    fast), or the default version alone (variants then load at start-up). ``probability``:
    the propensity and return models, already loaded (else loaded at start-up).
    ``analyzer``: the A/B analysis the console's experiments page shows (``tlrec serve``
    passes the harness's; without it the page lists exposures only). Raises
    ``InsecureConfigError`` when no API key is set and ``insecure`` is off, ``DataError`` for
    an unreadable ``settings.catalog``.
    """
    if not isinstance(settings, Settings):
        settings = Settings(artifacts=Path(settings))
    settings.check_secure()
    if not settings.has_keys:
        logger.warning("serving WITHOUT authentication (--insecure): anyone who reaches the port can use every route")
    metrics = Metrics()
    model_threads = threads.ModelThreads(settings.threads)
    batcher = MicroBatcher(service.run_user_batch, settings.max_batch, settings.threads,
                           on_batch=metrics.batch_size.observe, offload=model_threads.call)
    fresh = FreshEvents(settings.fresh_per_user, settings.fresh_max_users)
    state = ServiceState(settings, metrics, fresh, batcher, model_threads)
    console_state = ConsoleState.create(settings, fresh, analyzer)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threads.configure(settings.intra_op_threads)
        logger.info("model work: up to %d calls at once, %d torch/FAISS thread(s) each", settings.threads,
                    settings.intra_op_threads)
        task = asyncio.create_task(_start(state, model, probability, console_state))
        try:
            yield
        finally:
            task.cancel()
            model_threads.shutdown()
            if state.exposures is not None:
                await state.exposures.close()
            if state.events is not None:
                state.events.close()

    app = FastAPI(
        title="tlrec", version=API_VERSION, lifespan=lifespan, docs_url=None, redoc_url=None,  # local docs: console
        description="Recommendations (FAISS retrieve -> NCF rank), event ingestion, hot model reload; "
                    "a web console at `/`.",
    )
    app.state.service = state
    app.state.console = console_state
    for router in (health.router, recommendations.router, probabilities.router, events.router, admin.router):
        app.include_router(router)
    console.mount(app)  # the page at /, /docs and /redoc with local assets, the console's /v1 routes
    _add_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts 413s too
    return app


async def _start(state: ServiceState, given: ServedModel | ModelSet | None,
                 probability: ProbabilityModels | None = None, console_state: ConsoleState | None = None) -> None:
    """Replay the event log, open the exposure log, load and warm the models (and the console's catalog,
    when not given), then mark the service ready."""
    settings = state.settings
    try:
        state.not_ready_reason = "replaying the event log"
        # fresh events restored from the snapshot; damage found (now or by a compaction) counted
        log = EventLog(settings.resolved_events_dir, fresh=state.fresh,
                       on_corrupt=state.metrics.event_log_corrupt.inc)
        await anyio.to_thread.run_sync(log.open)
        state.events = log
        if settings.experiments:
            state.not_ready_reason = "opening the exposure log"
            exposures = await anyio.to_thread.run_sync(ExposureLog, settings.resolved_exposures_file)
            state.exposures = ExposureRecorder(exposures, state.metrics)
        state.not_ready_reason = "loading the models"
        async with state.reload_lock:
            models = await anyio.to_thread.run_sync(threads.run, _load, settings, given)
            if state.models is None:  # a reload may have won the race
                service.publish(state, models)
        state.probability = probability or await anyio.to_thread.run_sync(ProbabilityModels.load, settings)
        if console_state is not None:
            state.not_ready_reason = "loading the catalog"
            await anyio.to_thread.run_sync(console_state.load_training_catalog, state.models.default)
        service.settle_heap()
        state.ready, state.not_ready_reason = True, None
        state.metrics.ready.set(1)
        arms = state.models.arms
        logger.info("ready: serving %s, events in %s%s", state.models.default.version, log.path,
                    f"; {len(arms)} experiment variant(s), exposures in {state.exposures.log.path}"
                    if arms and state.exposures is not None else "")
    except Exception as exc:  # noqa: BLE001 - stay alive but not ready; /readyz says why
        state.not_ready_reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        logger.error("start-up failed: %s", state.not_ready_reason, exc_info=exc)


def _load(settings: Settings, given: ServedModel | ModelSet | None) -> ModelSet:
    """The models to serve, each warmed up; blocking. Loads what ``given`` does not hold."""
    if isinstance(given, ModelSet):
        for model in given.models:
            model.warm_up()
        return given
    reuse = None
    if given is not None:
        given.warm_up()
        reuse = {resolve_version(Path(settings.artifacts)).resolve(): given}  # type: ignore[arg-type]
    return load_model_set(settings, service.load_and_warm, reuse)


def _error(status: int, message: str, detail: list[dict[str, str]] | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "detail": detail}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"loc": ".".join(str(p) for p in err.get("loc", ())), "msg": str(err.get("msg", "")),
             "type": str(err.get("type", ""))}
            for err in exc.errors()
        ][:50]
        first = detail[0] if detail else {"loc": "request", "msg": "invalid"}
        more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        return _error(422, f"{first['loc']}: {first['msg']}{more}"[:500], detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # the framework's "error parsing the body" (e.g. not UTF-8): invalid input
            detail = [{"loc": "body", "msg": str(exc.detail), "type": "json_invalid"}]
            return _error(422, "body: not valid JSON (UTF-8)", detail)
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal error (logged on the server)")
