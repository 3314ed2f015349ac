"""The Ray Data embedding job gives the same vectors as the in-process path."""

from __future__ import annotations

import numpy as np
import polars as pl
from PIL import Image

from embeddings.batch import embed_catalog_ray
from embeddings.vectors import embed_catalog, load_item_vectors


def test_ray_job_matches_in_process(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    catalog = pl.DataFrame({
        "item_id": [f"i{i}" for i in range(6)],
        "title": ["A red bicycle", "Blue running shoes", "A mystery novel", "Jazz record", "Garden hose", "Tea"],
        "description": ["", "light", "thrilling", "", "green", "black tea"],
        "image_path": [str(tmp_path / f"{i}.png") if i < 3 else None for i in range(6)],
    })
    local = load_item_vectors(embed_catalog(catalog, tmp_path / "local.parquet", audio=None, progress=False))
    ray_out = embed_catalog_ray(catalog, tmp_path / "ray.parquet", address="local", audio=None, actors=1,
                                progress=False)
    distributed = load_item_vectors(ray_out)
    assert distributed.item_ids == local.item_ids
    np.testing.assert_allclose(distributed.fused, local.fused, atol=1e-4)
    assert distributed.manifest["encoders"].keys() == {"text", "image"}
