"""Micro-batching: concurrent requests with the same key become one model call in a worker thread.

No timer: a call starts as soon as a worker slot is free, so a lone request waits for
nothing; under load, requests that arrive while calls are running queue up and leave
together (up to ``max_batch``). One numpy/torch/FAISS call over ``[n, ...]`` costs far
less than ``n`` calls over ``[1, ...]``, and the work runs off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import anyio.to_thread

logger = logging.getLogger(__name__)

RunBatch = Callable[[Any, list[Any]], list[Any]]
Offload = Callable[..., Awaitable[Any]]  # offload(fn, *args) -> fn(*args) run in a worker thread


class MicroBatcher:
    """``await submit(key, item)`` -> ``run(key, [items])[i]``, with calls merged per ``key``.

    ``run`` is blocking and must return one result per item, in order; an exception fails
    every request of that call. At most ``max_inflight`` calls run at once, each through
    ``offload`` (default: anyio's worker threads).
    """

    def __init__(
        self,
        run: RunBatch,
        max_batch: int = 32,
        max_inflight: int = 1,
        on_batch: Callable[[int], None] | None = None,
        offload: Offload | None = None,
    ) -> None:
        self._run = run
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._on_batch = on_batch
        self._offload: Offload = offload or anyio.to_thread.run_sync
        self._pending: dict[Hashable, list[tuple[Any, asyncio.Future[Any]]]] = {}
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, key: Hashable, item: Any) -> Any:
        """Queue ``item`` under ``key`` and wait for its result (cancellation drops it from the queue).

        With a free slot and nothing queued the call starts at once from this task (no
        hand-over through a queue: the lone-request case pays nothing for batching).
        """
        if self._inflight < self.max_inflight and not self._pending:
            self._inflight += 1
            try:
                if self._on_batch is not None:
                    self._on_batch(1)
                (result,) = self._checked(await self._offload(self._run, key, [item]), 1)
                return result
            finally:
                self._inflight -= 1
                self._dispatch()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append((item, fut))
        self._dispatch()
        return await fut

    @staticmethod
    def _checked(results: list[Any], n: int) -> list[Any]:
        if len(results) != n:
            raise RuntimeError(f"batch returned {len(results)} results for {n} requests")
        return results

    def _dispatch(self) -> None:
        while self._inflight < self.max_inflight and self._pending:
            key = next(iter(self._pending))
            queue = self._pending[key]
            live = [(item, fut) for item, fut in queue if not fut.cancelled()]
            batch, rest = live[: self.max_batch], live[self.max_batch :]
            if rest:
                self._pending[key] = rest
                # leave the key at the back so other keys get a turn
                self._pending[key] = self._pending.pop(key)
            else:
                del self._pending[key]
            if not batch:
                continue
            self._inflight += 1
            task = asyncio.get_running_loop().create_task(self._call(key, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call(self, key: Hashable, batch: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        try:
            if self._on_batch is not None:
                self._on_batch(len(batch))
            results = self._checked(await self._offload(self._run, key, [item for item, _ in batch]), len(batch))
            for (_, fut), result in zip(batch, results):
                if not fut.done():
                    fut.set_result(result)
        except Exception as exc:  # every waiter gets the failure and falls back
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        finally:
            self._inflight -= 1
            self._dispatch()
