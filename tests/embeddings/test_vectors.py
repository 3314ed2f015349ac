"""embed_catalog / load_item_vectors: Parquet + manifest round trip, atomic writes."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import polars as pl
import pytest

from tlrec.embeddings.fusion import fuse
from tlrec.embeddings.embed_catalog import embed_catalog
from tlrec.embeddings.vectors import load_item_vectors, manifest_path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def media(tmp_path, chelsea, sine, wav_writer):
    image = tmp_path / "cat.png"
    chelsea.resize((150, 100)).save(image)
    audio = wav_writer(tmp_path / "a440.wav", sine(440, seconds=0.5), 16_000)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return {"image": image, "audio": audio, "broken": broken}


def test_multimodal_round_trip(tmp_path, media, caplog):
    catalog = pl.DataFrame({
        "item_id": ["a", "b", "c", "d"],
        "title": ["Cat poster", "Jazz record", None, None],
        "description": ["A tabby cat.", None, "Only a description", None],
        "image_path": [str(media["image"]), None, str(media["broken"]), None],
        "audio_path": [None, str(media["audio"]), None, None],
        "price": [1.0, 2.0, 3.0, 4.0],
    })
    out = tmp_path / "vectors.parquet"
    assert embed_catalog(catalog, out, progress=False) == out
    assert manifest_path(out) == tmp_path / "vectors.manifest.json"

    written = pl.read_parquet(out)
    assert written.columns == ["item_id", "text", "image", "audio", "fused"]
    assert written.schema["text"].inner == pl.Float32  # list<float32>
    assert written["text"].is_null().to_list() == [False, False, False, True]
    assert written["image"].is_null().to_list() == [False, True, True, True]  # c failed

    vec = load_item_vectors(out)
    assert vec.item_ids == ["a", "b", "c", "d"] and len(vec) == 4
    assert {m: b.shape for m, b in vec.blocks.items()} == {"text": (4, 384), "image": (4, 1280), "audio": (4, 256)}
    assert vec.fused.shape == (4, 1920) and vec.fused.dtype == np.float32 and vec.dim == 1920
    np.testing.assert_allclose(np.linalg.norm(vec.fused[:3], axis=1), 1.0, atol=1e-5)
    assert not vec.fused[3].any()  # no modality at all -> zero row
    assert np.isnan(vec.blocks["image"][[1, 2, 3]]).all() and np.isnan(vec.blocks["audio"][[0, 2, 3]]).all()
    np.testing.assert_allclose(vec.fused, fuse(vec.blocks), atol=1e-6)

    man = vec.manifest
    assert man["modalities"] == ["text", "image", "audio"]
    assert man["fused_dim"] == 1920
    assert {m: (e["name"], e["dim"]) for m, e in man["encoders"].items()} == {
        "text": ("minilm", 384), "image": ("efficientnet-lite0", 1280), "audio": ("crepe-tiny", 256)}
    assert all(e["version"] for e in man["encoders"].values())
    hashes = man["content_hashes"]
    assert hashes["text"]["a"] == _sha(b"Cat poster. A tabby cat.")
    assert hashes["text"]["b"] == _sha(b"Jazz record") and hashes["text"]["d"] is None
    assert hashes["image"]["a"] == _sha(media["image"].read_bytes())
    assert hashes["audio"]["b"] == _sha(media["audio"].read_bytes())
    assert man["failures"]["image"] == {"count": 1, "item_ids": ["c"]}
    assert man["failures"]["text"]["count"] == 0
    assert any(str(media["broken"]) in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp files


def test_modalities_without_input_are_skipped_and_rerun_reuses(tmp_path):
    catalog = pl.DataFrame({"item_id": [1, 2], "title": ["red shoes", "blue hat"],
                            "image_path": [None, None]})
    out = tmp_path / "v.parquet"
    embed_catalog(catalog, out, progress=False)
    first = load_item_vectors(out)
    assert first.item_ids == ["1", "2"] and list(first.blocks) == ["text"]
    assert first.manifest["fused_dim"] == 384 and "image" not in first.manifest["encoders"]

    changed = catalog.with_columns(pl.Series("title", ["red shoes", "green hat"]))
    embed_catalog(changed, out, progress=False)
    second = load_item_vectors(out)
    assert second.manifest["reused"] == {"text": 1}
    np.testing.assert_array_equal(second.blocks["text"][0], first.blocks["text"][0])
    assert not np.allclose(second.blocks["text"][1], first.blocks["text"][1])


def test_bad_catalog_leaves_no_file(tmp_path):
    out = tmp_path / "v.parquet"
    with pytest.raises(ValueError, match="duplicate item_id"):
        embed_catalog(pl.DataFrame({"item_id": ["x", "x"], "title": ["a", "b"]}), out, progress=False)
    with pytest.raises(ValueError, match="item_id"):
        embed_catalog(pl.DataFrame({"title": ["a"]}), out, progress=False)
    with pytest.raises(ValueError, match="allowed"):
        embed_catalog(pl.DataFrame({"item_id": ["x"], "title": ["a"]}), out, text="nope", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_leaves_previous_output_intact(tmp_path, monkeypatch):
    out = tmp_path / "v.parquet"
    embed_catalog(pl.DataFrame({"item_id": ["x"], "title": ["a lamp"]}), out, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("tlrec.embeddings.vectors_writer.json_bytes", boom)
    with pytest.raises(OSError, match="disk full"):
        embed_catalog(pl.DataFrame({"item_id": ["y"], "title": ["a chair"]}), out, progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp files, old files kept

    fresh = tmp_path / "new" / "w.parquet"
    fresh.parent.mkdir()
    with pytest.raises(OSError):
        embed_catalog(pl.DataFrame({"item_id": ["y"], "title": ["a chair"]}), fresh, progress=False)
    assert list(fresh.parent.iterdir()) == []


def test_load_errors_name_the_file(tmp_path):
    out = tmp_path / "v.parquet"
    with pytest.raises(ValueError, match="v.parquet"):
        load_item_vectors(out)
    embed_catalog(pl.DataFrame({"item_id": ["x"], "title": ["a lamp"]}), out, progress=False)

    good = out.read_bytes()
    out.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError) as err:
        load_item_vectors(out)
    assert str(out) in str(err.value) and "\n" not in str(err.value)

    man = manifest_path(out)
    data = json.loads(man.read_text())
    data.pop("vectors_sha256")
    man.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="Parquet") as err:
        load_item_vectors(out)
    assert "\n" not in str(err.value)

    out.write_bytes(good)
    man.write_text("{not json")
    with pytest.raises(ValueError, match="manifest"):
        load_item_vectors(out)
    man.unlink()
    with pytest.raises(ValueError, match="manifest"):
        load_item_vectors(out)
