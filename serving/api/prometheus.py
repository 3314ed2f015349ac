"""Prometheus metrics of one app (its own ``CollectorRegistry``, so tests and apps never share counters).

Exposed at ``GET /metrics`` in the Prometheus text format:

- ``tlrec_requests_total{route,method,status}`` and ``tlrec_request_duration_seconds{route}``
  (histogram); ``route`` is the route template (``/v1/users/{user_id}/recommendations``),
  ``unmatched`` for unknown paths, so ids never become labels.
- ``tlrec_fallbacks_total{endpoint,reason}``: answers not from the model (unknown_user,
  no_known_items, no_item_vectors, error, timeout).
- ``tlrec_model_info{version}`` = 1 for the version in service; ``tlrec_ready`` 0/1.
- ``tlrec_reloads_total{outcome}`` (ok, refused), ``tlrec_events_total`` (events durably
  appended), ``tlrec_event_batches_total{outcome}`` (appended, duplicate, conflict, error).
- ``tlrec_event_log_corrupt_records_total``: event log records found damaged (lost; every
  other record kept) by this process: at start-up replay, then by compactions. Non-zero
  means disk damage: see the ERROR log and ``tlrec events verify``.
- ``tlrec_model_batch_size`` (histogram): requests merged into one model call.
- A/B experiments (only for users inside one; the default model's answers are not
  labelled): ``tlrec_experiment_requests_total{experiment,variant}`` (recommendation
  requests answered by the variant's model), ``tlrec_exposures_total{experiment,variant}``
  (exposures durably logged: at most one per user and experiment),
  ``tlrec_exposure_errors_total{reason}`` (``write_failed``: retried on the user's next
  request; ``late``: answered before the write finished), ``tlrec_variant_info{experiment,
  variant,version}`` = 1 for each variant's model in service.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The app's collectors, registered in a private registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("tlrec_requests", "HTTP requests answered.", ["route", "method", "status"], registry=r)
        self.latency = Histogram(
            "tlrec_request_duration_seconds", "Time to answer, per route.", ["route"], buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter("tlrec_fallbacks", "Answers not from the model.", ["endpoint", "reason"], registry=r)
        self.model_info = Gauge("tlrec_model_info", "Model version in service (value 1).", ["version"], registry=r)
        self.ready = Gauge("tlrec_ready", "1 once the model and index are loaded and warmed up.", registry=r)
        self.reloads = Counter("tlrec_reloads", "Reload requests by outcome.", ["outcome"], registry=r)
        self.events = Counter("tlrec_events", "Events durably appended to the log.", registry=r)
        self.event_batches = Counter("tlrec_event_batches", "Event batches by outcome.", ["outcome"], registry=r)
        self.event_log_corrupt = Counter(
            "tlrec_event_log_corrupt_records", "Event log records found damaged (lost; later records kept).",
            registry=r,
        )
        self.batch_size = Histogram(
            "tlrec_model_batch_size", "Requests merged into one model call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r,
        )
        self.experiment_requests = Counter(
            "tlrec_experiment_requests", "Recommendation requests answered by an experiment variant's model.",
            ["experiment", "variant"], registry=r,
        )
        self.exposures = Counter(
            "tlrec_exposures", "Exposures durably logged (one per user and experiment).", ["experiment", "variant"],
            registry=r,
        )
        self.exposure_errors = Counter(
            "tlrec_exposure_errors", "Exposure log writes that failed or finished after the answer.", ["reason"],
            registry=r,
        )
        self.variant_info = Gauge(
            "tlrec_variant_info", "Model version serving each experiment variant (value 1).",
            ["experiment", "variant", "version"], registry=r,
        )
        self._version: str | None = None
        self._variants: set[tuple[str, str, str]] = set()

    def set_version(self, version: str) -> None:
        """Point ``tlrec_model_info`` at ``version`` (the previous label is removed)."""
        if self._version is not None and self._version != version:
            self.model_info.remove(self._version)
        self.model_info.labels(version=version).set(1)
        self._version = version

    def set_variants(self, variants: set[tuple[str, str, str]]) -> None:
        """Point ``tlrec_variant_info`` at these ``(experiment, variant, version)`` (others removed)."""
        for gone in self._variants - variants:
            self.variant_info.remove(*gone)
        for labels in variants:
            self.variant_info.labels(*labels).set(1)
        self._variants = set(variants)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware: counts every HTTP response and times it, labelled by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(label, scope.get("method", ""), str(status)).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - start)
