"""Embed a catalog as a Ray Data job: ``map_batches`` over callable-class actors.

Each actor loads its encoder once (in ``__init__``) and encodes batches of inputs;
the driver gathers the vectors in catalog order and writes the same item-vectors
file as the in-process path (``embeddings.vectors``). Works on a local Ray
(``address="local"``) or an existing cluster (``"auto"`` or ``"ray://host:port"``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from embeddings.vectors import embed_catalog

logger = logging.getLogger(__name__)


class EncodeBatch:
    """Ray Data callable class: one encoder per actor, loaded once."""

    def __init__(self, name: str, batch_size: int, threads: int) -> None:
        import torch

        from embeddings.registry import get_encoder

        torch.set_num_threads(max(1, threads))
        self.encoder = get_encoder(name)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"row": int [b], "input": str [b]}`` -> ``{"row": int [b], "vector": float32 [b, dim]}``."""
        vectors = self.encoder.encode(list(batch["input"]), batch_size=self.batch_size)
        return {"row": batch["row"], "vector": vectors}


def ray_runner(actors: int | None = None) -> Any:
    """An ``embed_catalog`` runner that encodes through a Ray Data job on the connected cluster."""
    import ray

    def run(name: str, inputs: list[Any], batch_size: int, progress: bool) -> np.ndarray:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n_actors = actors or max(1, min(cpus, len(inputs) // max(batch_size, 1) or 1))
        threads = max(1, cpus // n_actors)
        items = [{"row": i, "input": str(x)} for i, x in enumerate(inputs)]
        ds = ray.data.from_items(items).map_batches(
            EncodeBatch,
            fn_constructor_kwargs={"name": name, "batch_size": batch_size, "threads": threads},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            num_cpus=threads,
        )
        out: np.ndarray | None = None
        for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
            vecs = np.stack(batch["vector"]) if batch["vector"].dtype == object else batch["vector"]
            if out is None:
                out = np.full((len(inputs), vecs.shape[1]), np.nan, dtype=np.float32)
            out[batch["row"]] = vecs
        if out is None:
            raise RuntimeError(f"ray job for {name} returned no rows")
        return out

    return run


def embed_catalog_ray(
    catalog: pl.DataFrame,
    out_path: Path,
    address: str = "local",
    text: str | None = "minilm",
    image: str | None = "efficientnet-lite0",
    audio: str | None = "crepe-tiny",
    actors: int | None = None,
    progress: bool = True,
) -> Path:
    """Like ``embed_catalog``, with the encoders run as Ray Data jobs.

    ``address``: "local" starts a Ray on this machine; anything else ("auto",
    "ray://...") connects to an existing cluster.
    """
    import ray

    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False)
        started = True
    try:
        ray.data.DataContext.get_current().enable_progress_bars = progress
        return embed_catalog(catalog, out_path, text=text, image=image, audio=audio, progress=progress,
                             runner=ray_runner(actors))
    finally:
        if started:
            ray.shutdown()
