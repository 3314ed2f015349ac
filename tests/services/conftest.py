"""A tiny published world for the batch-scoring and A/B tests: seconds to build, no encoders.

Synthetic users with planted tastes (each user likes one of four item groups),
split by time; a popularity artifact and a small NCF artifact (no content
vectors, FAISS index) published under one root, ``current`` = NCF.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest

TINY_USERS, TINY_ITEMS, GROUPS = 160, 80, 4


@dataclass
class TinyWorld:
    root: Path
    catalog: Path
    train: Path
    test: Path
    artifacts: Path
    popularity: Path
    ncf: Path
    users: list[str]


def _publish(root: Path, catalog: pl.DataFrame, train: pl.DataFrame, model: str, config: dict) -> Path:
    from tlrec.training.artifacts import new_version, staged_version
    from tlrec.training.train import train_into

    version = f"{new_version()}-{model}"
    manifest: dict = {}
    with staged_version(root, version=version, manifest=manifest) as stage:
        _, info = train_into(stage, catalog, train, None, model, config)  # model, fallback, id maps, index
        manifest.update(info)
    return root / version


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> TinyWorld:
    from tlrec.files import write_parquet_atomic
    from tlrec.training.splits import temporal_split

    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(7)
    items = [f"i{j:03d}" for j in range(TINY_ITEMS)]
    group_of_item = np.arange(TINY_ITEMS) % GROUPS
    catalog = pl.DataFrame({"item_id": items, "title": [f"item {j}" for j in range(TINY_ITEMS)]})
    rows = []
    for u in range(TINY_USERS):
        liked = np.flatnonzero(group_of_item == u % GROUPS)
        n = int(rng.integers(8, 16))
        picks = np.where(rng.random(n) < 0.8, rng.choice(liked, n), rng.integers(0, TINY_ITEMS, n))
        ts = 1_700_000_000 + np.sort(rng.integers(0, 86_400 * 30, n))
        events = rng.choice(["view", "click", "purchase"], n, p=[0.6, 0.3, 0.1])
        for j, t, e in zip(picks, ts, events):
            rows.append((f"u{u:03d}", items[int(j)], int(t), str(e), 10.0 if e == "purchase" else 1.0))
    interactions = pl.DataFrame(rows, schema={"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64,
                                              "event": pl.String, "value": pl.Float64}, orient="row")
    interactions = interactions.sort("user_id", "timestamp")
    train, test = temporal_split(interactions, 0.25)
    write_parquet_atomic(catalog, root / "catalog.parquet")
    write_parquet_atomic(train, root / "train.parquet")
    write_parquet_atomic(test, root / "test.parquet")
    artifacts = root / "artifacts"
    popularity = _publish(artifacts, catalog, train, "popularity", {})
    ncf = _publish(artifacts, catalog, train, "ncf", {"epochs": 3, "dim": 8, "progress": False})
    return TinyWorld(root, root / "catalog.parquet", root / "train.parquet", root / "test.parquet", artifacts,
                     popularity, ncf, [f"u{u:03d}" for u in range(TINY_USERS)])


@pytest.fixture(scope="module")
def ray_local():
    """One small local Ray (2 CPUs) for a test module; jobs reuse it instead of starting their own."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=128 * 1024**2)
    yield ray
    if started:
        ray.shutdown()
