"""Exposure logging at serve time: one durable line per (user, experiment), written off the event loop.

:class:`ExposureRecorder` sits between the requests and a
:class:`serving.experiments.ExposureLog` (JSON lines, fsynced, safe across worker
processes). A request for a user inside an experiment calls :meth:`ExposureRecorder.record`
before its model work:

* already logged (the log's in-memory key set, no lock, no I/O): nothing to do;
* being written by another request: share that write;
* else queued. One writer task drains the queue in a worker thread (anyio's, like the
  event log), up to ``MAX_BATCH`` exposures per write and one fsync per write (group
  commit: concurrent first requests share a flush, and a lone one waits for nothing).

The request awaits the write after its model work (:meth:`ExposureRecorder.settle`), so the
answer normally leaves only once its exposure is durable, at no extra latency unless the
fsync is slower than the model. The wait is bounded (``Settings.exposure_wait_ms``; 0: no
wait): past it the answer goes out and the write finishes behind it
(``tlrec_exposure_errors_total{reason="late"}``). A failed
write (disk full, I/O error) never fails the request: it is logged, counted
(``reason="write_failed"``) and retried on the user's next request.

Memory: the log's key set (every (experiment, user) in the file) plus the writes in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread

from tlrec.serving.exposure_log import ExposureLog
from tlrec.serving.api.prometheus import Metrics

logger = logging.getLogger(__name__)

Exposure = tuple[str, str, str, float]  # (user_id, experiment, variant, timestamp in epoch seconds)
Offload = Callable[..., Awaitable[Any]]  # offload(fn, *args) -> fn(*args) run in a worker thread
MAX_BATCH = 1000


class ExposureRecorder:
    """Deduplicating, group-committing front of an :class:`ExposureLog` for one event loop."""

    def __init__(self, log: ExposureLog, metrics: Metrics, offload: Offload | None = None) -> None:
        self.log = log
        self._metrics = metrics
        self._offload: Offload = offload or anyio.to_thread.run_sync
        self._queue: list[Exposure] = []
        self._waiting: dict[tuple[str, str], asyncio.Future[bool]] = {}
        self._writer: asyncio.Task[None] | None = None

    def record(self, user_id: str, experiment: str, variant: str, timestamp: float) -> asyncio.Future[bool] | None:
        """Make sure the (user, experiment) exposure gets logged; None if it already is.

        Returns a future that turns True once the line is durable (or was already in the
        file, written by another process), False if the write failed. Never raises.
        """
        if self.log.known(user_id, experiment):
            return None
        key = (experiment, user_id)
        fut = self._waiting.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._waiting[key] = fut
            self._queue.append((user_id, experiment, variant, timestamp))
            if self._writer is None:
                self._writer = asyncio.get_running_loop().create_task(self._drain())
        return fut

    async def settle(self, fut: asyncio.Future[bool], timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) for a write from :meth:`record`; the write is never cancelled."""
        if fut.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            self._metrics.exposure_errors.labels("late").inc()
            logger.warning("exposure log write slower than %.0f ms; answered before it finished", 1000 * timeout)

    @property
    def pending(self) -> int:
        """Exposures queued or being written."""
        return len(self._waiting)

    async def close(self, timeout: float = 5.0) -> None:
        """Let the writer finish (bounded), then close the log."""
        writer = self._writer
        if writer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(writer), timeout)
            except (TimeoutError, asyncio.CancelledError):
                logger.warning("closing with %d exposure(s) not written", self.pending)
        self.log.close()

    async def _drain(self) -> None:
        """Write the queue in batches until it is empty (one writer at a time)."""
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    written: list[bool] | None = await self._offload(self.log.log_batch, batch)
                except Exception as exc:  # noqa: BLE001 - the answers go out; the users retry next time
                    written = None
                    self._metrics.exposure_errors.labels("write_failed").inc(len(batch))
                    logger.error("exposure log %s: %d exposure(s) not written (%s); retried on the users' next "
                                 "request", self.log.path, len(batch), " ".join(str(exc).split())[:300])
                for i, (user_id, experiment, variant, _) in enumerate(batch):
                    if written is not None and written[i]:
                        self._metrics.exposures.labels(experiment, variant).inc()
                    fut = self._waiting.pop((experiment, user_id), None)
                    if fut is not None and not fut.done():
                        fut.set_result(written is not None)
        finally:
            self._writer = None
