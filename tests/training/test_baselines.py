"""Known answers for the classic baselines: ItemKNN, EASE and LightFM.

The shared contract tests (tests/training/test_models.py) already run on every
registered model; these check each model's own arithmetic and behaviour.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pytest

from tlrec.tables import Columns
from tlrec.training.id_map import IdMap
from tlrec.training.interaction_data import InteractionData
from tlrec.training.models import (
    MODELS,
    EASEConfig,
    EASEModel,
    ItemKNNConfig,
    ItemKNNModel,
    LightFMConfig,
    LightFMModel,
)
from tlrec.training.models.ease import ease_weights
from tlrec.training.models.itemknn import item_similarity

N_GROUPS, ITEMS_PER_GROUP, USERS_PER_GROUP = 4, 6, 12


def _data(pairs: list[tuple[str, str]], items: list[str]) -> InteractionData:
    frame = pl.DataFrame({
        Columns.USER: [u for u, _ in pairs],
        Columns.ITEM: [i for _, i in pairs],
        Columns.TIMESTAMP: list(range(len(pairs))),
        Columns.EVENT: ["view"] * len(pairs),
        Columns.VALUE: [1.0] * len(pairs),
    })
    return InteractionData.build(frame, IdMap(items))


def _groups(cold_per_group: int = 0) -> tuple[InteractionData, np.ndarray, dict[int, int], np.ndarray]:
    """Block data: each user saw all items of their group but one (held out); optional cold items.

    Returns (data, content [n_items, N_GROUPS + 2] (group one-hot + noise), user -> held-out item,
    cold item ids).
    """
    per = ITEMS_PER_GROUP + cold_per_group
    n_items = N_GROUPS * per
    group = np.repeat(np.arange(N_GROUPS), per)
    pairs, held = [], {}
    for g in range(N_GROUPS):
        warm = np.flatnonzero(group == g)[:ITEMS_PER_GROUP]
        for j in range(USERS_PER_GROUP):
            u = g * USERS_PER_GROUP + j
            held[u] = int(warm[j % ITEMS_PER_GROUP])
            pairs += [(f"u{u:03d}", f"i{i:03d}") for i in warm if i != held[u]]
    data = _data(pairs, [f"i{i:03d}" for i in range(n_items)])
    content = np.zeros((n_items, N_GROUPS + 2), np.float32)
    content[np.arange(n_items), group] = 1.0
    content[:, N_GROUPS:] = np.random.default_rng(0).normal(0, 0.05, (n_items, 2))
    cold = np.array([g * per + ITEMS_PER_GROUP + c for g in range(N_GROUPS) for c in range(cold_per_group)])
    return data, content, held, cold


def test_registered_names():
    assert {"itemknn", "ease", "lightfm"} <= set(MODELS)


# ----------------------------------------------------------------------------- ItemKNN

# users a, b saw x and y; c saw y and z; nobody saw w.
#   |U_x| = 2, |U_y| = 3, |U_z| = 1
#   sim(x, y) = 2 / sqrt(2 * 3), sim(y, z) = 1 / sqrt(3 * 1), sim(x, z) = 0
_KNN_PAIRS = [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("c", "y"), ("c", "z")]
_KNN_ITEMS = ["w", "x", "y", "z"]


def test_itemknn_identical_columns_have_similarity_one():
    data = _data([("a", "p"), ("a", "q"), ("b", "p"), ("b", "q"), ("b", "r"), ("c", "r")], ["p", "q", "r"])
    sim = item_similarity(data.matrix(), neighbors=10).toarray()
    assert sim[0, 1] == pytest.approx(1.0) and sim[1, 0] == pytest.approx(1.0)
    assert sim[0, 0] == 0.0  # no self-similarity
    assert sim[0, 2] == pytest.approx(1 / np.sqrt(2 * 2))


def test_itemknn_hand_checked_scores():
    data = _data(_KNN_PAIRS, _KNN_ITEMS)
    model = ItemKNNModel().fit(data)
    w, x, y, z = range(4)
    a, c = data.users.to_internal(["a", "c"])
    scores = model.score(np.array([a, c]))
    # c saw y and z: score(x) = sim(y, x) + sim(z, x) = 2 / sqrt(6) + 0
    assert scores[1, x] == pytest.approx(2 / np.sqrt(6), rel=1e-6)
    # a saw x and y: score(z) = sim(x, z) + sim(y, z) = 0 + 1 / sqrt(3)
    assert scores[0, z] == pytest.approx(1 / np.sqrt(3), rel=1e-6)
    assert scores[0, w] == 0.0 and scores[1, w] == 0.0
    items, _ = model.recommend(np.array([c]), 1, exclude=data.seen())
    assert data.items.to_external(items[0]) == ["x"]


def test_itemknn_shrinkage_and_neighbour_cut():
    data = _data(_KNN_PAIRS, _KNN_ITEMS)
    shrunk = ItemKNNModel(ItemKNNConfig(shrinkage=1.0)).fit(data)
    assert shrunk.similarity[1, 2] == pytest.approx(2 / (np.sqrt(6) + 1), rel=1e-6)
    # With one neighbour per item, y keeps only x (0.816 > 0.577): a's score for z drops to 0.
    cut = ItemKNNModel(ItemKNNConfig(neighbors=1)).fit(data)
    assert np.diff(cut.similarity.indptr).max() == 1
    a = data.users.to_internal(["a"])
    assert cut.score(a)[0, 3] == 0.0


# ----------------------------------------------------------------------------- EASE


def test_ease_matches_closed_form_in_numpy():
    rng = np.random.default_rng(0)
    x = (rng.random((30, 8)) < 0.35).astype(np.float32)
    x[:, 5] = 0  # an item nobody saw: still in the catalog, scored 0
    x[np.arange(30), rng.integers(0, 5, 30)] = 1  # every user has something
    pairs = [(f"u{u:02d}", f"i{i}") for u, i in zip(*np.nonzero(x))]
    data = _data(pairs, [f"i{i}" for i in range(8)])
    users = data.users.to_internal([f"u{u:02d}" for u in range(30)])
    xm = np.zeros_like(x)
    xm[users] = x  # rows in the model's user order
    l2 = 3.0
    p = np.linalg.inv(xm.T.astype(np.float64) @ xm + l2 * np.eye(8))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    model = EASEModel(EASEConfig(l2=l2)).fit(data)
    np.testing.assert_allclose(model.score(np.arange(data.n_users)), xm @ b, atol=1e-5)
    np.testing.assert_allclose(model.score(np.arange(3), np.array([7, 5, 0])), (xm @ b)[:3][:, [7, 5, 0]],
                               atol=1e-5)
    assert model.l2_ == l2
    import scipy.sparse as sp

    np.testing.assert_allclose(ease_weights(sp.csr_matrix(xm), l2), b, atol=1e-6)


def test_ease_tunes_l2_from_the_grid_and_logs_it(caplog):
    data, _, held, _ = _groups()
    grid = [1.0, 10.0, 100.0]
    with caplog.at_level(logging.INFO, logger="tlrec.training.models.ease"):
        model = EASEModel(EASEConfig(l2_grid=grid, val_fraction=0.2)).fit(data)
    assert model.l2_ in grid
    assert sorted(model.tuning_) == grid
    assert f"chose l2={model.l2_:g}" in caplog.text
    items, _ = model.recommend(np.arange(data.n_users), 1, exclude=data.seen())
    assert np.mean([items[u, 0] == held[u] for u in held]) >= 0.9


def test_ease_refuses_too_many_items():
    data, _, _, _ = _groups()
    with pytest.raises(ValueError, match="max_items=10"):
        EASEModel(EASEConfig(l2=10.0, max_items=10)).fit(data)


def test_ease_config_rejects_bad_values():
    with pytest.raises(ValueError):
        EASEConfig(l2=0.0)
    with pytest.raises(ValueError, match="extra"):
        EASEConfig.model_validate({"lambda": 3})


# ----------------------------------------------------------------------------- LightFM


def test_lightfm_warp_recovers_held_out_item():
    data, _, held, _ = _groups()
    model = LightFMModel(LightFMConfig(epochs=10, num_threads=1, seed=0)).fit(data)
    items, _ = model.recommend(np.arange(data.n_users), 1, exclude=data.seen())
    hits = np.mean([items[u, 0] == held[u] for u in held])
    assert hits >= 0.8, hits
    assert model.recommends_for_cold_items is False


def test_lightfm_hybrid_ranks_cold_items_of_the_right_group():
    data, content, _, cold = _groups(cold_per_group=2)
    model = LightFMModel(LightFMConfig(features="vectors", epochs=20, num_threads=1, seed=0)).fit(data, content)
    assert model.recommends_for_cold_items is True and LightFMModel.recommends_for_cold_items is False
    users = np.arange(data.n_users)
    items, _ = model.recommend(users, 2, candidates=cold)
    per = ITEMS_PER_GROUP + 2
    user_group = users // USERS_PER_GROUP
    assert np.mean(items[:, 0] // per == user_group) >= 0.9
    assert np.mean(items[:, 1] // per == user_group) >= 0.9
    # cold items carry no identity feature; warm ones do
    f = model.item_features
    assert f.shape == (data.n_items, N_GROUPS * ITEMS_PER_GROUP + content.shape[1])
    assert f[cold][:, : N_GROUPS * ITEMS_PER_GROUP].nnz == 0


def test_lightfm_hybrid_save_load_needs_no_lightfm(tmp_path):
    data, content, _, cold = _groups(cold_per_group=1)
    model = LightFMModel(LightFMConfig(features="vectors", epochs=3, num_threads=1)).fit(data, content)
    model.save(tmp_path / "m")
    loaded = LightFMModel.load(tmp_path / "m")
    users = np.arange(data.n_users)
    np.testing.assert_allclose(loaded.score(users), model.score(users), rtol=1e-6)
    np.testing.assert_allclose(loaded.score(users, cold), model.score(users, cold), rtol=1e-6)
    assert loaded.config == model.config


def test_lightfm_scores_match_lightfm_predict():
    from lightfm import LightFM

    data, _, _, _ = _groups()
    model = LightFMModel(LightFMConfig(epochs=2, num_threads=1, seed=3)).fit(data)
    ref = LightFM(no_components=64, loss="warp", random_state=np.random.RandomState(3))
    ref.fit_partial(data.matrix().tocoo(), epochs=2, num_threads=1)
    u = np.repeat(np.arange(data.n_users), data.n_items).astype(np.int32)
    i = np.tile(np.arange(data.n_items), data.n_users).astype(np.int32)
    expected = ref.predict(u, i).reshape(data.n_users, data.n_items)
    np.testing.assert_allclose(model.score(np.arange(data.n_users)), expected, rtol=1e-4, atol=1e-5)


def test_lightfm_single_thread_is_deterministic():
    data, _, _, _ = _groups()
    cfg = LightFMConfig(epochs=3, num_threads=1, seed=1)
    a = LightFMModel(cfg).fit(data).score(np.arange(5))
    b = LightFMModel(cfg).fit(data).score(np.arange(5))
    np.testing.assert_array_equal(a, b)


def test_lightfm_early_stopping_picks_an_epoch():
    data, _, _, _ = _groups()
    model = LightFMModel(LightFMConfig(epochs=8, val_fraction=0.2, patience=2, num_threads=1)).fit(data)
    assert 1 <= model.best_epoch_ <= 8


def test_lightfm_vectors_mode_needs_vectors():
    data, _, _, _ = _groups()
    with pytest.raises(ValueError, match="needs item_vectors"):
        LightFMModel(LightFMConfig(features="vectors")).fit(data)
    with pytest.raises(ValueError):
        LightFMConfig(features="genres")
