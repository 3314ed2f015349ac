"""Shared fixtures: a small demo world (real encoders, real NCF, real FAISS), built once.

Nothing here reads ../shared: a fresh clone has none of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SMALL_ITEMS = 480
SMALL_USERS = 200
TEST_NCF_CONFIG = {"epochs": 15, "progress": False}


@dataclass
class World:
    """A generated demo catalog, its vectors, a temporal split and published artifacts."""

    root: Path
    catalog: Path
    interactions: Path
    vectors: Path
    train: Path
    test: Path
    artifacts: Path  # root with `current` -> the NCF version
    ncf_version: Path
    popularity_version: Path


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    from tlrec.embeddings.embed_catalog import embed_catalog
    from tlrec.files import write_parquet_atomic
    from tlrec.services.demo_catalog import generate_demo
    from tlrec.services.jobs import train_job
    from tlrec.training.data import load_catalog, load_interactions
    from tlrec.training.splits import temporal_split

    root = tmp_path_factory.mktemp("world")
    files = generate_demo(root, n_items=SMALL_ITEMS, n_users=SMALL_USERS, seed=1, progress=False)
    catalog = load_catalog(files.catalog)
    vectors = embed_catalog(catalog, root / "vectors.parquet", progress=False)
    train, test = temporal_split(load_interactions(files.interactions, catalog=catalog), 0.2)
    write_parquet_atomic(train, root / "train.parquet")
    write_parquet_atomic(test, root / "test.parquet")
    artifacts = root / "artifacts"
    popularity = train_job(files.catalog, root / "train.parquet", artifacts, model="popularity")
    ncf = train_job(files.catalog, root / "train.parquet", artifacts, vectors_path=vectors, model="ncf",
                    config=TEST_NCF_CONFIG)
    return World(root, files.catalog, files.interactions, vectors, root / "train.parquet", root / "test.parquet",
                 artifacts, ncf, popularity)
