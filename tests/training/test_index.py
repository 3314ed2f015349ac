"""FAISS index: exact search matches brute force; files round-trip; bad files are refused."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from tlrec.training.index import TARGET_RECALL, IndexFileError, VectorIndex


def test_exact_search_matches_brute_force():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(500, 24)).astype(np.float32)
    queries = rng.normal(size=(7, 24)).astype(np.float32)
    scores, ids = VectorIndex.build(items).search(queries, 10)
    brute = np.argsort(-(queries @ items.T), axis=1)[:, :10]
    np.testing.assert_array_equal(ids, brute)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ items.T, brute, 1), rtol=1e-5)


def test_the_approximate_index_is_calibrated_to_its_recall(tmp_path):
    """Above ``exact_max_items``: an inverted file whose nprobe is the smallest reaching TARGET_RECALL on the
    sample queries; the calibration holds on other queries from the same data and survives the file."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(40, 16)).astype(np.float32)
    items = (centres[rng.integers(0, 40, 4000)] + 0.3 * rng.normal(size=(4000, 16))).astype(np.float32)
    queries = (centres[rng.integers(0, 40, 600)] + 0.3 * rng.normal(size=(600, 16))).astype(np.float32)
    _, exact = VectorIndex.build(items).search(queries[300:], 10)
    index = VectorIndex.build(items, exact_max_items=100, queries=queries[:300])
    inner = index.index
    assert isinstance(inner, faiss.IndexIVFFlat) and inner.nlist == round(np.sqrt(4000))
    assert 1 <= inner.nprobe < inner.nlist  # it did not fall back to scanning every cell
    _, approx = index.search(queries[300:], 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= TARGET_RECALL - 0.03
    chosen = inner.nprobe
    inner.nprobe = max(1, chosen - 1)  # one cell less would miss the target on the sample queries
    _, fewer = index.search(queries[:300], 10)
    _, truth = VectorIndex.build(items).search(queries[:300], 10)
    assert chosen == 1 or np.mean([len(set(a) & set(e)) / 10 for a, e in zip(fewer, truth)]) < TARGET_RECALL
    inner.nprobe = chosen
    index.save(tmp_path / "ivf.faiss")
    loaded = VectorIndex.load(tmp_path / "ivf.faiss")
    assert loaded.index.nprobe == inner.nprobe
    np.testing.assert_array_equal(loaded.search(queries[300:], 10)[1], approx)


def test_save_load_round_trip(tmp_path):
    items = np.eye(4, dtype=np.float32)
    index = VectorIndex.build(items)
    index.save(tmp_path / "i.faiss")
    loaded = VectorIndex.load(tmp_path / "i.faiss")
    assert (loaded.dim, loaded.ntotal) == (4, 4)
    assert loaded.search(np.array([[0, 0, 1, 0]], np.float32), 1)[1][0, 0] == 2


def test_k_larger_than_index_is_clipped():
    _, ids = VectorIndex.build(np.eye(3, dtype=np.float32)).search(np.ones((1, 3), np.float32), 10)
    assert ids.shape == (1, 3)


def test_corrupt_or_missing_file_is_refused(tmp_path):
    bad = tmp_path / "bad.faiss"
    bad.write_bytes(b"not an index at all")
    with pytest.raises(IndexFileError, match="bad.faiss"):
        VectorIndex.load(bad)
    with pytest.raises(IndexFileError, match="not found"):
        VectorIndex.load(tmp_path / "missing.faiss")


def test_bad_vectors_rejected():
    with pytest.raises(ValueError, match="NaN"):
        VectorIndex.build(np.array([[np.nan, 1.0]], np.float32))
    with pytest.raises(ValueError, match="shape"):
        VectorIndex.build(np.zeros((3, 2), np.float32)).search(np.zeros((1, 5), np.float32), 1)
