"""NCF's score split (training/models/ncf_explain.py), the figures behind `explain=true` and the console's
"Why this item": on tiny fitted models, with and without content vectors, the split reproduces the
served score and both identities hold exactly (score = baseline + contributions + head = content +
learned_id + head)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from tlrec.tables import Columns
from tlrec.training.id_map import IdMap
from tlrec.training.interaction_data import InteractionData
from tlrec.training.models import NCFConfig, NCFModel

N_ITEMS = 42  # the last two items have no interactions: new items, placed by content


def _data() -> InteractionData:
    rng = np.random.default_rng(1)
    rows = [(f"u{u:02d}", f"i{i:02d}", t) for u in range(30) for t, i in enumerate(rng.choice(40, 8, replace=False))]
    frame = pl.DataFrame(rows, schema=[Columns.USER, Columns.ITEM, Columns.TIMESTAMP], orient="row").with_columns(
        pl.lit("view").alias(Columns.EVENT), pl.lit(1.0).alias(Columns.VALUE))
    return InteractionData.build(frame, IdMap([f"i{i:02d}" for i in range(N_ITEMS)]))


@pytest.fixture(scope="module", params=["content", "ids only"])
def model(request) -> NCFModel:
    content = np.random.default_rng(2).normal(size=(N_ITEMS, 12)).astype(np.float32)
    config = NCFConfig(dim=8, content_hidden=8, epochs=1, val_fraction=0.0, progress=False)
    return NCFModel(config).fit(_data(), content if request.param == "content" else None)


def _check(split, served: np.ndarray) -> None:
    np.testing.assert_allclose(split.score, served, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(split.baseline + split.contributions.sum(axis=1) + split.head, split.score,
                               rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(split.content + split.learned_id + split.head, split.score, rtol=1e-12, atol=1e-9)


def test_known_users_scores_split_exactly(model):
    items = np.arange(N_ITEMS - 2)  # warm items (the new ones rank at -1e4 without content: float32 rounding)
    for user in range(5):
        split = model.explain_user(user, items)
        _check(split, model.score(np.array([user]), items)[0])
        assert set(split.history.tolist()) == set(model.histories[user].indices.tolist())


def test_histories_new_items_and_an_empty_history(model):
    has_content = model.net.content_hidden is not None
    items = np.arange(N_ITEMS) if has_content else np.arange(N_ITEMS - 2)
    history = sp.csr_matrix((np.array([1.0, 0.5, 2.0], np.float32), ([0, 0, 0], [3, 7, 40])), shape=(1, N_ITEMS))
    _check(model.explain_history(history, items), model.score_history(history, items)[0])
    empty = model.explain_history(sp.csr_matrix((1, N_ITEMS), dtype=np.float32), items)
    prior = np.append(np.tanh(model.net.hist_bias.detach().numpy()), 1.0).astype(np.float32)  # an empty history
    _check(empty, model.rank_vectors(prior[None, :], items[None, :])[0])
    assert empty.contributions.shape == (len(items), 0)
    if has_content:  # a new item has no id of its own: all of its item-side vector is content
        split = model.explain_history(sp.csr_matrix((1, N_ITEMS), dtype=np.float32), np.array([40, 41]))
        np.testing.assert_allclose(split.learned_id, 0.0, atol=1e-12)  # empty history: nothing learned is used
    else:  # without content vectors, nothing comes from content
        assert not np.any(model.explain_user(0, items).content)


def test_a_bad_history_or_item_is_refused(model):
    with pytest.raises(ValueError, match="expected \\[1, 42\\]"):
        model.explain_history(sp.csr_matrix((2, N_ITEMS), dtype=np.float32), np.arange(3))
    with pytest.raises(IndexError):
        model.explain_user(0, np.array([N_ITEMS]))
    with pytest.raises(IndexError):
        model.explain_user(10_000, np.arange(3))
