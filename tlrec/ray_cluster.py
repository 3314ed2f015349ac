"""Starting and stopping Ray for the batch jobs (``tlrec embed``, ``tlrec score``).

``ray`` is imported inside the functions, so importing this module (and ``tlrec``) stays cheap.
"""

from __future__ import annotations

import logging
import os

__all__ = ["LOCAL", "LOCAL_OBJECT_STORE_BYTES", "start_ray", "stop_ray"]

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
