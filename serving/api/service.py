"""What the routes do: model calls off the event loop, deadlines, fallbacks, events, reloads.

Routes stay thin and call these. Every model call runs in a worker thread within the
request's deadline (``Settings.deadline_ms``); past it, or on any error in ranking, the
answer is the popularity fallback (``source="popular"``, ``fallback_reason`` says why),
computed from a precomputed order in microseconds.

A/B experiments: a user's recommendations come from their variant's model
(``ModelSet.route``; the default model for everybody else), the answer names the
experiment and variant, and the user's first answer in each experiment logs one exposure
(fallback answers included), written concurrently with the model work.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import math
import time
from collections.abc import Hashable, Sequence
from typing import Any

import anyio.to_thread
from fastapi import HTTPException

from tlrec.errors import one_line
from tlrec.serving.api import threads
from tlrec.serving.api.deps import ServiceState
from tlrec.serving.api.schemas import (
    MAX_CONTRIBUTIONS,
    EventIn,
    EventsAck,
    HistoryContribution,
    HistoryRecommendIn,
    ItemExplanation,
    RecommendationsOut,
    ReloadOut,
    ScoredItem,
    SimilarOut,
    VariantOut,
)
from tlrec.serving.api.variants import Arm, ModelSet, load_model_set
from tlrec.serving.event_log import EventLogError, IdempotencyConflict, batch_digest
from tlrec.serving.served_model import ExplanationUnavailable, Recommendations, ScoreSplit, ServedModel

logger = logging.getLogger(__name__)

UserItem = tuple[str, list[str]]  # (user id, fresh item ids)


# ---------------------------------------------------------------------------- model work (worker threads)
def run_user_batch(key: Hashable, batch: list[UserItem]) -> list[Recommendations]:
    """One model call for many users: ``key`` = (model, k, exclude_seen), items = (user, fresh items).

    Users with fresh events are answered from their training history + fresh items
    (``recommend_history``, with the user's learned part where known), the rest by
    ``recommend``. Returns one ``Recommendations`` per item, in order.
    """
    model, k, exclude_seen = key  # type: ignore[misc]
    out: list[Recommendations | None] = [None] * len(batch)
    plain = [i for i, (_, fresh) in enumerate(batch) if not fresh]
    with_fresh = [i for i, (_, fresh) in enumerate(batch) if fresh]
    if plain:
        for i, rec in zip(plain, model.recommend([batch[i][0] for i in plain], k, exclude_seen)):
            out[i] = rec
    if with_fresh:
        users = [batch[i][0] for i in with_fresh]
        histories = [model.seen_items(u) + batch[i][1] for i, u in zip(with_fresh, users)]
        recs = model.recommend_history(histories, k, exclude_history=exclude_seen, user_ids=users)
        for i, user, rec in zip(with_fresh, users, recs):
            if rec.source == "history" and user in model.users:
                rec.source = "model"
            out[i] = rec
    return [r for r in out if r is not None]


def load_and_warm(artifacts: Any) -> ServedModel:
    """Load (checksums, sizes and dimensions verified) and warm up a version; blocking."""
    model = ServedModel.load(artifacts)
    started = time.perf_counter()
    model.warm_up()
    logger.info("warmed up %s in %.0f ms", model.version, 1000 * (time.perf_counter() - started))
    return model


# ---------------------------------------------------------------------------- helpers
def scored(rec: Recommendations, k: int) -> list[ScoredItem]:
    """Response items: finite scores only, re-ranked 1..n, at most k."""
    pairs = [(i, s) for i, s in zip(rec.item_ids, rec.scores) if math.isfinite(s)][:k]
    return [ScoredItem(item_id=i, score=s, rank=r) for r, (i, s) in enumerate(pairs, 1)]


def _deadline(state: ServiceState) -> float:
    return state.settings.deadline_ms / 1000.0


async def in_model_thread(state: ServiceState, fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a model thread, within the request deadline (``TimeoutError`` past it)."""
    async with asyncio.timeout(_deadline(state)):
        return await state.model_threads.call(fn, *args)


def _fallback(state: ServiceState, endpoint: str, reason: str, exc: BaseException | None = None) -> str:
    if exc is not None:
        if isinstance(exc, TimeoutError):
            logger.warning("%s: model work passed the %d ms deadline; popular fallback", endpoint,
                           state.settings.deadline_ms)
        else:
            logger.error("%s: model failed; popular fallback", endpoint, exc_info=exc)
    state.metrics.fallbacks.labels(endpoint, reason).inc()
    return reason


# ---------------------------------------------------------------------------- experiments
def _expose(state: ServiceState, arm: Arm, user_id: str) -> asyncio.Future[bool] | None:
    """Count the request for ``arm`` and start logging the user's exposure (None: already logged)."""
    state.metrics.experiment_requests.labels(arm.experiment, arm.variant).inc()
    recorder = state.exposures
    return recorder.record(user_id, arm.experiment, arm.variant, time.time()) if recorder is not None else None


async def _answer(state: ServiceState, out: RecommendationsOut, arm: Arm,
                  exposure: asyncio.Future[bool] | None) -> RecommendationsOut:
    """``out`` labelled with the arm, once the exposure is durable (waiting at most ``exposure_wait_ms``)."""
    out.experiment, out.variant = arm.experiment, arm.variant
    wait = state.settings.exposure_wait_ms
    if exposure is not None and state.exposures is not None and wait > 0:
        await state.exposures.settle(exposure, wait / 1000.0)
    return out


# ---------------------------------------------------------------------------- recommendations
async def user_recommendations(
    state: ServiceState, models: ModelSet, user_id: str, k: int, exclude_seen: bool, explain: bool = False
) -> RecommendationsOut:
    """Top-k for a user id (micro-batched) from the user's variant's model (or the default one),
    with the user's fresh events applied at once; ``explain``: each item's score split (``explain_items``)."""
    arm = models.route(user_id) if models.experiments else None
    model = models.default if arm is None else arm.model
    exposure = _expose(state, arm, user_id) if arm is not None else None
    fresh = state.fresh.get(user_id)
    out = await _user_recommendations(state, model, user_id, k, exclude_seen, fresh)
    if explain:
        await explain_items(state, model, out, fresh)
    return out if arm is None else await _answer(state, out, arm, exposure)


async def _user_recommendations(
    state: ServiceState, model: ServedModel, user_id: str, k: int, exclude_seen: bool, fresh: list[str]
) -> RecommendationsOut:
    reason = None
    try:
        async with asyncio.timeout(_deadline(state)):
            rec = await state.batcher.submit((model, k, exclude_seen), (user_id, fresh))
        if rec.source == "popular":
            reason = _fallback(state, "user", "unknown_user" if user_id not in model.users else "no_known_items")
    except Exception as exc:  # noqa: BLE001 - any failure in ranking falls back
        reason = _fallback(state, "user", "timeout" if isinstance(exc, TimeoutError) else "error", exc)
        rec = model.popular(k, user_id if exclude_seen else None, fresh if exclude_seen else ())
    return RecommendationsOut(user_id=user_id, items=scored(rec, k), source=rec.source,
                              fallback_reason=reason, model_version=model.version)


def _explanation(split: ScoreSplit) -> ItemExplanation:
    """The response's explanation: the largest contributions listed, the rest summed."""
    shown, rest = split.contributions[:MAX_CONTRIBUTIONS], split.contributions[MAX_CONTRIBUTIONS:]
    return ItemExplanation(
        score=split.score, baseline=split.baseline, head=split.head, content=split.content,
        learned_id=split.learned_id,
        contributions=[HistoryContribution(item_id=i, contribution=c, content=cc) for i, c, cc in shown],
        other_contributions=math.fsum(c for _, c, _ in rest), history_items=len(split.contributions),
    )


async def explain_items(state: ServiceState, model: ServedModel, out: RecommendationsOut, fresh: list[str]) -> None:
    """Give each item of ``out`` its score split (model thread, within the deadline), for the history the
    answer was ranked from (the user's items and the same ``fresh`` items), or say why there is none
    (``explanation_unavailable``); never fails the answer."""
    if out.source == "popular":
        out.explanation_unavailable = "the popularity fallback answered: its scores are counts, nothing to split"
        return
    method = model.explanation_method
    if method is None:
        out.explanation_unavailable = f"model {model.model.name!r} does not split its scores (ncf does)"
        return
    try:
        splits = await in_model_thread(state, model.explain, out.user_id, [i.item_id for i in out.items], fresh)
    except ExplanationUnavailable as exc:
        out.explanation_unavailable = str(exc)
        return
    except Exception as exc:  # noqa: BLE001 - the answer goes out without explanations
        timeout = isinstance(exc, TimeoutError)
        if not timeout:
            logger.error("explanation failed for %s", out.user_id[:64], exc_info=exc)
        out.explanation_unavailable = "explaining took past the deadline" if timeout else "explaining failed"
        return
    by_item = {s.item_id: s for s in splits}
    for item in out.items:
        if (split := by_item.get(item.item_id)) is not None:
            item.explanation = _explanation(split)
    out.explanation_method = method


def _history_weights(body: HistoryRecommendIn, half_life_days: float) -> list[float]:
    """Sent weights, times ``0.5 ** (age / half-life)`` when a half-life is set and timestamps are sent."""
    weights = [h.weight for h in body.history]
    stamps = [_seconds(h.timestamp) for h in body.history]
    if half_life_days > 0 and any(s is not None for s in stamps):
        newest = max(s for s in stamps if s is not None)
        half_life = half_life_days * 86400.0
        weights = [w * (0.5 ** ((newest - s) / half_life) if s is not None else 1.0) for w, s in zip(weights, stamps)]
    return [max(w, 1e-12) for w in weights]


async def history_recommendations(
    state: ServiceState, models: ModelSet, body: HistoryRecommendIn
) -> RecommendationsOut:
    """Top-k for a history sent with the request; ``filters.exclude_items`` never come back.

    With a ``user_id`` inside an experiment, the user's variant's model answers (and the
    exposure is logged); anonymous histories get the default model.
    """
    arm = models.route(body.user_id) if body.user_id and models.experiments else None
    model = models.default if arm is None else arm.model
    exposure = _expose(state, arm, body.user_id) if arm is not None and body.user_id else None
    out = await _history_recommendations(state, model, body)
    return out if arm is None else await _answer(state, out, arm, exposure)


async def _history_recommendations(
    state: ServiceState, model: ServedModel, body: HistoryRecommendIn
) -> RecommendationsOut:
    ids = [h.item_id for h in body.history]
    weights = _history_weights(body, state.settings.history_half_life_days)
    exclude = set(body.filters.exclude_items)
    k_model = min(body.k + len(exclude), len(model.items)) or 1
    name = body.user_id or ""
    reason = None
    try:
        (rec,) = await in_model_thread(
            state, lambda: model.recommend_history(
                [ids], k_model, weights=[weights], exclude_history=body.filters.exclude_history,
                candidates=body.candidates, user_ids=[name] if body.user_id else None,
                events=[[h.event for h in body.history]],
                timestamps=[[_seconds(h.timestamp) for h in body.history]],
            )
        )
        if rec.source == "popular":
            reason = _fallback(state, "history", "no_known_items")
    except Exception as exc:  # noqa: BLE001
        reason = _fallback(state, "history", "timeout" if isinstance(exc, TimeoutError) else "error", exc)
        drop = list(exclude) + (ids if body.filters.exclude_history else [])
        rec = model.popular(k_model, None, drop, body.candidates)
    if exclude:
        keep = [(i, s) for i, s in zip(rec.item_ids, rec.scores) if i not in exclude]
        rec = Recommendations(name, [i for i, _ in keep], [s for _, s in keep], rec.source)
    return RecommendationsOut(user_id=name, items=scored(rec, body.k), source=rec.source,
                              fallback_reason=reason, model_version=model.version)


async def similar_items(state: ServiceState, model: ServedModel, item_id: str, k: int) -> SimilarOut:
    """Nearest items in the item-tower space; popular items when the model has no item vectors."""
    if item_id not in model.items:
        raise HTTPException(status_code=404, detail=f"unknown item {item_id[:64]!r}")
    reason = None
    if not model.has_item_space:
        reason = _fallback(state, "similar", "no_item_vectors")
    else:
        try:
            pairs = await in_model_thread(state, model.similar_items, item_id, k)
            rec = Recommendations(item_id, [i for i, _ in pairs], [s for _, s in pairs], "model")
        except Exception as exc:  # noqa: BLE001
            reason = _fallback(state, "similar", "timeout" if isinstance(exc, TimeoutError) else "error", exc)
    if reason is not None:
        rec = model.popular(k, None, [item_id])
    return SimilarOut(item_id=item_id, items=scored(rec, k), source="popular" if reason else "model",
                      fallback_reason=reason, model_version=model.version)


# ---------------------------------------------------------------------------- events
def _seconds(ts: int | dt.datetime | None) -> int | None:
    if ts is None or isinstance(ts, int):
        return ts
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.timezone.utc)
    return int(ts.timestamp())


async def ingest_events(state: ServiceState, events: Sequence[EventIn], key: str | None) -> EventsAck:
    """Append a batch durably (fsync, in a worker thread) and apply it to the fresh events at once."""
    log = state.events
    if log is None:
        raise HTTPException(status_code=503, detail="not ready: event log not open")
    now = int(time.time())
    records = [
        {"user_id": e.user_id, "item_id": e.item_id, "timestamp": now if e.timestamp is None else _seconds(e.timestamp),
         "event": e.event, "value": e.value}
        for e in events
    ]
    sent = batch_digest([e.model_dump(mode="json") for e in events])  # before defaults: a retry matches
    try:
        ack = await anyio.to_thread.run_sync(log.append, records, key, sent)
    except IdempotencyConflict as exc:
        state.metrics.event_batches.labels("conflict").inc()
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except EventLogError as exc:
        state.metrics.event_batches.labels("error").inc()
        logger.error("%s", exc)
        raise HTTPException(status_code=503, detail="event log unavailable; the batch was not stored") from None
    state.metrics.event_batches.labels("duplicate" if ack.duplicate else "appended").inc()
    if not ack.duplicate:
        state.metrics.events.inc(ack.accepted)
    model = state.model
    unknown = sum(e.item_id not in model.items for e in events) if model is not None else 0
    return EventsAck(accepted=ack.accepted, duplicate=ack.duplicate, sequence=ack.seq, unknown_items=unknown)


# ---------------------------------------------------------------------------- reload
def _variants(models: ModelSet) -> list[VariantOut]:
    return [VariantOut(experiment=a.experiment, variant=a.variant, model_version=a.model.version) for a in models.arms]


def settle_heap() -> None:
    """Collect once, then keep the collector off every object alive now (``gc.freeze``): modules, models,
    id maps, the catalog.

    Python's full (oldest-generation) collections walk every tracked object; with the libraries
    and models loaded that is ~100 ms with the event loop stopped, a few times a minute under load:
    the p99 latency (``bench/results/api_wrk.md``). Frozen objects are still freed by reference
    counting; a reload unfreezes first, so the old models' cycles are collected.
    """
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    logger.info("heap settled: %d objects kept out of garbage collection (%.0f ms)", gc.get_freeze_count(),
                1000 * (time.perf_counter() - started))


def publish(state: ServiceState, models: ModelSet) -> None:
    """Swap ``models`` in (one reference) and point the version metrics at it."""
    state.models = models
    state.metrics.set_version(models.default.version)
    state.metrics.set_variants(models.variant_labels())


async def reload_model(state: ServiceState) -> ReloadOut:
    """Load what ``current`` and the experiment files name now, verify and warm it in a thread, swap one reference.

    All or nothing: the default version and every variant's version (versions already in
    service are reused, not reloaded; the experiment files are read again). If any of them
    cannot be served (corrupt, mismatched, unloadable artifact; a bad experiment file)
    the reload is refused with 409 and a one-line reason, and every old model keeps
    serving. Requests already running finish on the set they hold.
    """
    async with state.reload_lock:
        old = state.models
        try:
            if state.settings.experiments and state.exposures is None:  # start-up failed before opening it
                raise RuntimeError(f"exposure log not open ({state.not_ready_reason or 'start-up failed'})")
            new = await anyio.to_thread.run_sync(
                threads.run, load_model_set, state.settings, load_and_warm, old.loaded if old else None)
        except Exception as exc:  # noqa: BLE001 - refuse whatever cannot be served
            state.metrics.reloads.labels("refused").inc()
            logger.warning("reload refused: %s", one_line(exc, 500))
            raise HTTPException(status_code=409, detail=f"reload refused: {one_line(exc, 500)}") from None
        previous = old.default.version if old is not None else None
        if old is not None and new.signature() == old.signature():
            state.metrics.reloads.labels("unchanged").inc()
            return ReloadOut(model_version=previous, previous_version=previous, changed=False,
                             variants=_variants(old))
        publish(state, new)
        del old
        settle_heap()
        state.ready, state.not_ready_reason = state.events is not None, None
        state.metrics.ready.set(1 if state.ready else 0)
        state.metrics.reloads.labels("ok").inc()
        logger.info("now serving %s (was %s)%s", new.default.version, previous,
                    "".join(f"; {a.experiment}/{a.variant}: {a.model.version}" for a in new.arms))
        return ReloadOut(model_version=new.default.version, previous_version=previous, changed=True,
                         variants=_variants(new))
