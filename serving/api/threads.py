"""Threads for model work: a pool of ``Settings.threads`` workers, torch/FAISS threads set in each.

OpenMP's thread count is per calling thread: ``faiss.omp_set_num_threads`` in the main
thread does not reach worker threads, which then start as many OpenMP threads as there
are cores. On a busy machine those spin against each other and a short call takes many
times as long. So every worker sets the counts when it starts (``configure_thread``), and
``run`` does the same for threads this module did not start (reload, start-up).
Multi-threaded BLAS suffers the same way on small products, so BLAS pools get the same limit.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")

_local = threading.local()
_intra_op = 1
BLAS_FROM_QUERIES = 4


def configure(intra_op_threads: int) -> None:
    """Set the torch/FAISS thread count used by every model thread (and by this one).

    Also sets where exact (flat) FAISS search switches from its per-query SIMD loop to
    BLAS: from ``BLAS_FROM_QUERIES`` queries on (one query is faster by SIMD, a handful
    already faster by BLAS; the FAISS default switches only at 128,000 queries, which
    leaves micro-batches on the slow path; see ``bench/results/api_load.md``).
    """
    global _intra_op
    import faiss
    from threadpoolctl import threadpool_limits

    _intra_op = intra_op_threads
    faiss.cvar.distance_compute_blas_threshold = BLAS_FROM_QUERIES
    # BLAS pools (numpy's and FAISS's OpenBLAS) are process-wide: limit them once, here;
    # `tlrec serve` also sets OMP/OPENBLAS/MKL_NUM_THREADS before they load
    threadpool_limits(limits=intra_op_threads, user_api="blas")
    configure_thread()


def configure_thread() -> None:
    """Apply the configured torch/FAISS thread count to the calling thread."""
    import faiss
    import torch

    torch.set_num_threads(_intra_op)
    faiss.omp_set_num_threads(_intra_op)
    _local.threads = _intra_op


def run(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` after making sure the calling thread uses the configured thread counts."""
    if getattr(_local, "threads", None) != _intra_op:
        configure_thread()
    return fn(*args)


class ModelThreads:
    """``workers`` threads that run model calls off the event loop (``await call(fn, *args)``)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="tlrec-model", initializer=configure_thread)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
