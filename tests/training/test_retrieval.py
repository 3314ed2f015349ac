"""The retrieval capability and the one artifact layout.

* ``drop_excluded`` (the vectorised seen-item drop serving applies to an index's answers)
  agrees with a per-row reference, blocks of rows or not;
* ``retrieve_rank`` with any retrieval that honours the ``Retrieve`` contract gives the
  model's own ``recommend``; models without the capability refuse the vector methods;
* ``ModelArtifact`` writes a complete version (index included for a retrieval model) and
  reads back the same model.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

import tlrec.training.models.base as base
from tlrec.tables import Columns
from tlrec.training.artifacts import open_version
from tlrec.training.id_map import IdMap
from tlrec.training.interaction_data import InteractionData
from tlrec.training.model_artifact import INDEX_FILE, ModelArtifact
from tlrec.training.models import NCFConfig, NCFModel, PopularityModel
from tlrec.training.models.base import drop_excluded, top_k


def _reference(cand: np.ndarray, exclude: sp.csr_matrix, depth: int) -> np.ndarray:
    out = np.full((len(cand), min(depth, cand.shape[1])), -1, np.int64)
    for r, row in enumerate(cand):
        seen = set(exclude.indices[exclude.indptr[r] : exclude.indptr[r + 1]].tolist())
        keep = [i for i in row.tolist() if i < 0 or i not in seen][: out.shape[1]]
        out[r, : len(keep)] = keep
    return out


@pytest.mark.parametrize("table_bits", [1 << 23, 64, 1])
def test_drop_excluded_matches_a_row_loop(monkeypatch, table_bits):
    monkeypatch.setattr(base, "EXCLUDE_TABLE_BITS", table_bits)
    rng = np.random.default_rng(0)
    for trial in range(200):
        n, n_items = int(rng.integers(1, 8)), int(rng.integers(2, 50))
        m, depth = int(rng.integers(1, n_items + 1)), int(rng.integers(1, 60))
        cand = np.stack([rng.permutation(n_items)[:m] for _ in range(n)]).astype(np.int64)
        tail = rng.integers(0, m + 1, n)
        cand[np.arange(m)[None, :] >= tail[:, None]] = -1  # -1 padding at the end of a row
        exclude = sp.random(n, n_items, density=float(rng.random()) * 0.7, format="csr", random_state=trial)
        np.testing.assert_array_equal(drop_excluded(cand, exclude, depth), _reference(cand, exclude, depth))
    cand = np.arange(12, dtype=np.int64).reshape(2, 6)
    assert drop_excluded(cand, None, 4).tolist() == [[0, 1, 2, 3], [6, 7, 8, 9]]


def _data() -> InteractionData:
    rng = np.random.default_rng(1)
    rows = [(f"u{u:02d}", f"i{i:02d}", t) for u in range(30) for t, i in enumerate(rng.choice(40, 8, replace=False))]
    frame = pl.DataFrame(rows, schema=[Columns.USER, Columns.ITEM, Columns.TIMESTAMP], orient="row").with_columns(
        pl.lit("view").alias(Columns.EVENT), pl.lit(1.0).alias(Columns.VALUE))
    return InteractionData.build(frame, IdMap([f"i{i:02d}" for i in range(40)]))


@pytest.fixture(scope="module")
def ncf() -> tuple[NCFModel, InteractionData]:
    data = _data()
    model = NCFModel(NCFConfig(dim=8, content_hidden=8, epochs=3, val_fraction=0.0, progress=False))
    return model.fit(data), data


def test_retrieve_rank_with_an_index_style_retrieval_is_recommend(ncf):
    model, data = ncf
    users = np.arange(data.n_users)
    seen = data.seen()

    def search_then_drop(queries: np.ndarray, depth: int, exclude: sp.csr_matrix | None) -> np.ndarray:
        """Like an index: search past the excluded items, then drop them (serving's ``_retrieve``)."""
        most = int(np.diff(exclude.indptr).max(initial=0)) if exclude is not None else 0
        cand, _ = top_k(queries @ model.item_vectors().T, depth + most, np.arange(model.n_items))
        return drop_excluded(cand, exclude, depth)

    for k in (1, 5, 60):
        expected = model.recommend(users, k, exclude=seen)
        got = model.retrieve_rank(model.query_vectors(users), k, seen[users], retrieve=search_then_drop)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-6)
        assert not any(set(row) & set(seen[u].indices) for u, row in zip(users, got[0].tolist()))
    history = seen[users[:5]]
    expected = model.recommend_history(history, 5)
    got = model.retrieve_rank(model.history_vectors(history), 5, history, retrieve=search_then_drop)
    np.testing.assert_array_equal(got[0], expected[0])


def test_a_model_that_ranks_by_the_inner_product_retrieves_only_k(ncf):
    """Without the ranking head the lists are the retrieval's own top k: retrieving deeper is wasted work
    (batch scoring's cost, issue 17); with the head, the retrieval goes ``retrieval_depth`` deep."""
    model, data = ncf
    users = np.arange(data.n_users)
    depths: list[int] = []

    def recording(queries: np.ndarray, depth: int, exclude: sp.csr_matrix | None) -> np.ndarray:
        depths.append(depth)
        return model._exact_retrieve(queries, depth, exclude)

    head = float(model.net.head_on)
    try:
        for head_on, depth in ((1.0, base.retrieval_depth(3, model.n_items)), (0.0, 3)):
            model.net.head_on.fill_(head_on)
            assert model.ranks_by_inner_product == (head_on == 0.0)
            got = model.retrieve_rank(model.query_vectors(users), 3, data.seen()[users], retrieve=recording)
            assert depths[-1] == depth
            expected = model.recommend(users, 3, exclude=data.seen())
            np.testing.assert_array_equal(got[0], expected[0])
    finally:
        model.net.head_on.fill_(head)
    untrained = NCFModel(NCFConfig(dim=8, content_hidden=8, epochs=1, head_negatives=0, val_fraction=0.0,
                                   progress=False)).fit(data)
    assert untrained.ranks_by_inner_product  # no head trained: none served


def test_models_without_retrieval_refuse_the_vector_methods():
    model = PopularityModel().fit(_data())
    assert not model.retrieval
    with pytest.raises(NotImplementedError):
        model.item_vectors()
    with pytest.raises(NotImplementedError):
        model.query_vectors(np.array([0]))


def test_model_artifact_writes_and_reads_a_complete_version(ncf, tmp_path):
    model, data = ncf
    artifact = ModelArtifact.build(model, data, fit_seconds=1.0)
    assert artifact.index is not None and artifact.training["index"]["ntotal"] == data.n_items
    version_dir = artifact.publish(tmp_path / "artifacts", manifest={"note": "test"})
    assert (version_dir / INDEX_FILE).is_file()
    version = open_version(tmp_path / "artifacts")
    assert version.manifest["note"] == "test" and version.manifest["n_items"] == data.n_items
    back = ModelArtifact.read(version)
    assert back.items == data.items and back.users == data.users
    assert (back.seen != data.seen()).nnz == 0 and back.index.ntotal == data.n_items
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(back.model.recommend(users, 5, exclude=back.seen)[0],
                                  model.recommend(users, 5, exclude=data.seen())[0])

    popular = ModelArtifact.build(PopularityModel().fit(data), data)
    assert popular.index is None
    back = ModelArtifact.read(open_version(popular.publish(tmp_path / "artifacts")))
    assert back.index is None and back.model.name == "popularity"
