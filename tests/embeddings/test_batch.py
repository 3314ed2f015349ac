"""The Ray Data embedding job: same output as the in-process path, streamed, incremental, fault tolerant.

One small local Ray (2 CPUs) is started once for the module and reused by every test.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tlrec.embeddings.batch import _layout, embed_catalog_ray
from tlrec.embeddings.embed_catalog import embed_catalog
from tlrec.embeddings.vectors import load_item_vectors

TITLES = ["A red bicycle", "Blue running shoes", "A mystery novel", "Jazz record", "Garden hose", "Black tea",
          "Wool socks", "Desk lamp"]


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def _leftovers(folder):
    """Temp files / part directories left next to the outputs."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def multimodal(tmp_path_factory, chelsea, sine, wav_writer, ray_local):
    """A catalog with text, images (one corrupt) and one audio clip, embedded in process and with Ray."""
    root = tmp_path_factory.mktemp("multimodal")
    media = root / "media"
    media.mkdir()
    chelsea.resize((120, 80)).save(media / "cat.png")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(media / f"noise{i}.png")
    (media / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    wav_writer(media / "a440.wav", sine(440, seconds=0.3), 16_000)
    catalog = pl.DataFrame({
        "item_id": [f"i{i}" for i in range(6)],
        "title": TITLES[:6],
        "description": ["", "light", "thrilling", None, "green", "black tea"],
        "image_path": ["media/cat.png", "media/noise0.png", "media/broken.jpg", None, "media/noise1.png", None],
        "audio_path": [None, None, None, "media/a440.wav", None, None],
        "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    })
    local = embed_catalog(catalog, root / "local.parquet", progress=False, base_dir=root)
    distributed = embed_catalog_ray(catalog, root / "ray.parquet", address="local", actors=2, rows_per_task=2,
                                    progress=False, base_dir=root)
    return {"root": root, "catalog": catalog, "local": local, "ray": distributed}


def test_ray_job_matches_in_process(multimodal):
    local, distributed = load_item_vectors(multimodal["local"]), load_item_vectors(multimodal["ray"])
    assert distributed.item_ids == local.item_ids == [f"i{i}" for i in range(6)]  # catalog order kept
    assert list(distributed.blocks) == list(local.blocks) == ["text", "image", "audio"]
    for modality, block in local.blocks.items():
        np.testing.assert_array_equal(np.isnan(distributed.blocks[modality]), np.isnan(block))
        np.testing.assert_allclose(np.nan_to_num(distributed.blocks[modality]), np.nan_to_num(block), atol=1e-4)
    np.testing.assert_allclose(distributed.fused, local.fused, atol=1e-4)
    # identical file schema and manifest (keys and content, apart from the time and checksum)
    assert pq.read_schema(multimodal["ray"]) == pq.read_schema(multimodal["local"])
    drop = ("created_at", "vectors_file", "vectors_sha256")
    strip = lambda m: {k: v for k, v in m.items() if k not in drop}  # noqa: E731
    assert strip(distributed.manifest) == strip(local.manifest)
    assert distributed.manifest.keys() == local.manifest.keys()
    assert _leftovers(multimodal["root"]) == []  # no temp files, no part directories


def test_corrupt_image_gives_null_block_and_is_reported(multimodal):
    vec = load_item_vectors(multimodal["ray"])
    assert np.isnan(vec.blocks["image"][2]).all()  # i2: broken.jpg
    assert not np.isnan(vec.blocks["image"][[0, 1, 4]]).any() and not np.isnan(vec.blocks["text"]).any()
    np.testing.assert_allclose(np.linalg.norm(vec.fused, axis=1), 1.0, atol=1e-5)  # text still fuses
    man = vec.manifest
    assert man["failures"]["image"] == {"count": 1, "item_ids": ["i2"]}
    assert "broken.jpg" in man["failure_reasons"]["image"]["i2"]
    assert man["failures"]["text"]["count"] == 0 and man["failures"]["audio"]["count"] == 0
    assert man["embedded"] == {"text": 6, "image": 4, "audio": 1}
    assert man["missing_input"] == {"text": 0, "image": 2, "audio": 5}


def _text_catalog(n: int = 8) -> pl.DataFrame:
    return pl.DataFrame({"item_id": [f"t{i}" for i in range(n)], "title": TITLES[:n],
                         "description": [f"item number {i}" for i in range(n)]})


@pytest.mark.slow  # kept out of the default run (time budget): reuse on re-run is tests/embeddings/test_vectors.py's, in process
def test_parquet_path_is_streamed_and_rerun_embeds_only_changes(tmp_path, ray_local):
    catalog = _text_catalog()
    src = tmp_path / "catalog.parquet"
    catalog.write_parquet(src, row_group_size=3)
    out = tmp_path / "vectors.parquet"
    embed_catalog_ray(src, out, image=None, audio=None, progress=False, rows_per_task=3)
    first = load_item_vectors(out)
    assert first.item_ids == catalog["item_id"].to_list()
    assert first.manifest["embedded"] == {"text": 8} and first.manifest["reused"] == {"text": 0}
    np.testing.assert_allclose(np.linalg.norm(first.fused, axis=1), 1.0, atol=1e-5)

    changed = pl.concat([
        catalog.with_columns(pl.when(pl.col("item_id") == "t3").then(pl.lit("Vinyl jazz record"))
                             .otherwise(pl.col("title")).alias("title")),
        pl.DataFrame({"item_id": ["t_new"], "title": ["Tennis racket"], "description": ["carbon"]}),
    ])
    changed.write_parquet(src)
    embed_catalog_ray(src, out, image=None, audio=None, progress=False, rows_per_task=3)
    second = load_item_vectors(out)
    assert second.item_ids == [*catalog["item_id"].to_list(), "t_new"]
    assert second.manifest["embedded"] == {"text": 2}  # only the changed and the new item were encoded
    assert second.manifest["reused"] == {"text": 7}
    same = [i for i in range(8) if i != 3]
    np.testing.assert_array_equal(second.blocks["text"][same], first.blocks["text"][same])
    assert float(second.blocks["text"][3] @ first.blocks["text"][3]) < 0.999
    assert second.manifest["content_hashes"]["text"]["t3"] != first.manifest["content_hashes"]["text"]["t3"]
    assert _leftovers(tmp_path) == []


@pytest.mark.slow  # kept out of the default run (time budget): a failed partition's resume is tests/services/test_batch_scoring.py's
def test_killed_worker_is_retried_without_duplicates_or_gaps(tmp_path, ray_local):
    catalog = _text_catalog()
    marker = tmp_path / "crashed-once"
    out = tmp_path / "vectors.parquet"
    embed_catalog_ray(catalog, out, image=None, audio=None, actors=1, rows_per_task=2, progress=False,
                      _test_crash_marker=marker)
    assert marker.exists()  # a worker really died (after writing its part, before returning it)
    vec = load_item_vectors(out)
    assert vec.item_ids == catalog["item_id"].to_list()  # each item exactly once, in order
    assert pl.read_parquet(out)["item_id"].n_unique() == len(catalog) == vec.manifest["n_items"]
    assert vec.manifest["embedded"] == {"text": 8}
    reference = load_item_vectors(embed_catalog(catalog, tmp_path / "local.parquet", image=None, audio=None,
                                                progress=False))
    np.testing.assert_allclose(vec.fused, reference.fused, atol=1e-4)
    assert _leftovers(tmp_path) == []  # the orphaned part went with the temp directory


def test_failed_job_leaves_previous_output_untouched(tmp_path, ray_local):
    catalog = _text_catalog(4)
    out = tmp_path / "vectors.parquet"
    embed_catalog(catalog, out, image=None, audio=None, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    changed = catalog.with_columns(pl.lit("something else").alias("title"))
    with pytest.raises(Exception):  # noqa: B017 - Ray's error type for a dead actor
        embed_catalog_ray(changed, out, image=None, audio=None, actors=1, rows_per_task=2, progress=False,
                          max_retries=0, _test_crash_marker=tmp_path / "crash")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "crash"} == before


def test_bad_parquet_catalog_names_the_row(tmp_path):
    src = tmp_path / "c.parquet"
    pl.DataFrame({"item_id": ["a", "b", "a"], "title": ["x", "y", "z"]}).write_parquet(src)
    with pytest.raises(ValueError, match=r"row 2, column 'item_id': duplicate item_id 'a'"):
        embed_catalog_ray(src, tmp_path / "v.parquet", image=None, audio=None)
    with pytest.raises(ValueError, match="not found"):
        embed_catalog_ray(tmp_path / "missing.parquet", tmp_path / "v.parquet")
    with pytest.raises(ValueError, match="allowed"):
        embed_catalog_ray(src, tmp_path / "v.parquet", text="nope")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.parquet"]


def test_layout_leaves_a_cpu_for_reads_and_sizes_tasks():
    assert _layout(2, 5000) == (1, 2, 1.0, 1024)  # 1 actor x 2 threads reserving 1 of 2 CPUs
    assert _layout(2, 5000, threads=1) == (2, 1, 0.5, 625)  # 4 tasks per actor
    assert _layout(8, 100_000) == (4, 2, 1.75, 1024)
    assert _layout(8, 100_000, actors=2) == (2, 4, 3.5, 1024)
    assert _layout(8, 100, rows_per_task=40)[0] == 3  # never more actors than tasks
    assert _layout(2, 10)[::3] == (1, 64)


class _FakeEncoder:
    """Deterministic 4-d text "encoder" (no model): enough to build real batches without torch."""

    def __init__(self):
        from tlrec.embeddings.base import ModelCard

        self.card = ModelCard(name="fake", modality="text", dim=4, params=0, size_mb=0.0, framework="none",
                              file_format="", input_spec="text", source="test", version="fake@1")

    def encode(self, inputs, batch_size=32, progress=False):
        out = np.array([[len(t), t.count("a"), 1.0, 0.5] for t in inputs], dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_assembly_drops_rows_of_a_batch_delivered_twice(tmp_path):
    """A retried batch whose first result was also delivered: each item is written once, in order."""
    from tlrec.embeddings.batch import _assemble
    from tlrec.embeddings.embed_catalog import embed_rows
    from tlrec.embeddings.vectors_writer import ManifestBuilder, VectorsFileWriter

    catalog = _text_catalog(6)
    results = []
    for k, (lo, hi) in enumerate([(0, 3), (3, 6), (3, 6)]):  # the second batch arrives twice
        part = tmp_path / f"part{k}.parquet"
        pq.write_table(embed_rows(catalog[lo:hi], {"text": _FakeEncoder()}), part)
        results.append({"part": str(part), "rows": hi - lo, "cards": '{"text": {"dim": 4}}'})
    out = tmp_path / "v.parquet"
    builder = ManifestBuilder(["text"])
    with VectorsFileWriter(out, ["text"]) as writer:
        cards, repeated = _assemble(results, writer, builder)
        writer.commit(builder.manifest(out, {"text": _FakeEncoder().card.to_dict()}, None))
    assert repeated == 3 and builder.n_items == 6 and cards is not None
    vec = load_item_vectors(out)
    assert vec.item_ids == catalog["item_id"].to_list()
    assert vec.manifest["embedded"] == {"text": 6}
    assert not list(tmp_path.glob("part*"))  # parts are deleted once written
