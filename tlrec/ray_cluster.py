"""Starting and stopping Ray for the batch jobs (``tlrec embed``, ``tlrec score``), and running
independent fits as Ray tasks (``tlrec train --ray-address``: ``task_runner``).

``ray`` is imported inside the functions, so importing this module (and ``tlrec``) stays cheap.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

__all__ = ["LOCAL", "LOCAL_OBJECT_STORE_BYTES", "RayTasks", "TaskRunner", "in_process", "start_ray", "stop_ray",
           "task_runner"]

T = TypeVar("T")

#: The address that starts a Ray on this machine instead of joining a cluster.
LOCAL = "local"
#: The shared-memory object store of a Ray started here. The jobs pass only small blocks
#: through it: catalog rows and part-file names (embedding), user-id lists and part
#: summaries (scoring); vectors and scores go through files. Ray's default (30% of RAM)
#: only lets memory use grow with the input, so one cap serves both jobs: 512 MB, the
#: embedding job's (scoring needed 256 MB; the cap bounds the store, it reserves nothing
#: up front). Objects beyond it spill to disk.
LOCAL_OBJECT_STORE_BYTES = 512 * 1024**2


def start_ray(address: str | None = LOCAL) -> bool:
    """Connect to Ray; True if this call started it (then :func:`stop_ray` shuts it down).

    ``"local"`` (or None) starts a Ray on this machine: all CPUs, no dashboard, worker
    logs on the driver's stderr, the object store capped at ``LOCAL_OBJECT_STORE_BYTES``.
    Anything else (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``) joins that
    cluster, whose object store is the cluster's own. A Ray already initialised in this
    process is used as is (and this returns False).
    """
    import ray

    if ray.is_initialized():
        return False
    if address in (None, LOCAL):
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=True, object_store_memory=LOCAL_OBJECT_STORE_BYTES)
    else:
        ray.init(address=address, logging_level=logging.WARNING)
    return True


def stop_ray(started: bool) -> None:
    """Shut Ray down if ``started`` (the result of :func:`start_ray`); a Ray found running stays up."""
    if started:
        import ray

        ray.shutdown()


class TaskRunner(Protocol):
    """Runs ``fn(*args)`` for each ``args`` of ``calls``; returns the results in the order of ``calls``."""

    def __call__(self, fn: Callable[..., T], calls: Sequence[tuple[Any, ...]]) -> list[T]: ...


def in_process(fn: Callable[..., T], calls: Sequence[tuple[Any, ...]]) -> list[T]:
    """The calls one after another, here (the default ``TaskRunner``)."""
    return [fn(*args) for args in calls]


class RayTasks:
    """A ``TaskRunner`` whose calls run in parallel as Ray tasks on the Ray this process is connected to.

    Each task runs with this process's torch thread count (and asks Ray for as many CPUs), so a
    fit gives the bit-identical result it gives here: float sums change with the thread count.
    An argument object shared by several calls (a validation split, the item vectors) goes into
    the object store once. ``fn`` must be importable by the workers (a module-level function of
    tlrec, installed on every node of a cluster); results come back through Ray's object store.
    """

    def __call__(self, fn: Callable[..., T], calls: Sequence[tuple[Any, ...]]) -> list[T]:
        import ray
        import torch

        threads = torch.get_num_threads()
        task = ray.remote(num_cpus=threads, max_retries=0)(_with_threads)
        stored: dict[int, Any] = {}

        def ref(value: Any) -> Any:
            if value is None or isinstance(value, (str, int, float, bool)):
                return value
            if id(value) not in stored:
                stored[id(value)] = ray.put(value)
            return stored[id(value)]

        futures = [task.remote(fn, threads, *(ref(a) for a in args)) for args in calls]
        return list(ray.get(futures))


def _with_threads(fn: Callable[..., T], threads: int, *args: Any) -> T:
    import torch

    torch.set_num_threads(threads)
    return fn(*args)


@contextmanager
def task_runner(address: str | None) -> Iterator[TaskRunner]:
    """``in_process`` for ``address`` None; else ``RayTasks`` on Ray at ``address`` (``start_ray``), stopped
    at exit if this call started it."""
    if address is None:
        yield in_process
        return
    started = start_ray(address)
    try:
        yield RayTasks()
    finally:
        stop_ray(started)
