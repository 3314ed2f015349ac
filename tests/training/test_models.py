"""Contract tests run on every registered model, plus known-answer cases.

Synthetic data with a known answer (after implicit's test mixin): users and items
fall in groups; each user has interacted with every item of their group but one,
so the best unseen item for user u is that one item.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from tlrec.tables import Columns
from tlrec.training.id_map import IdMap
from tlrec.training.interaction_data import InteractionData
from tlrec.training.models import MODELS, NCFConfig, NCFModel, PopularityModel, get_model_class

N_GROUPS = 4
ITEMS_PER_GROUP = 6
USERS_PER_GROUP = 12


def _group_data(cold_items_per_group: int = 0) -> tuple[InteractionData, np.ndarray, dict[int, int]]:
    """Block data; returns (data, content vectors [n_items, N_GROUPS + 2], user -> held-out item)."""
    rng = np.random.default_rng(0)
    n_items = N_GROUPS * (ITEMS_PER_GROUP + cold_items_per_group)
    item_group = np.repeat(np.arange(N_GROUPS), ITEMS_PER_GROUP + cold_items_per_group)
    rows, held_out = [], {}
    t = 0
    for g in range(N_GROUPS):
        group_items = np.flatnonzero(item_group == g)[:ITEMS_PER_GROUP]  # the rest are cold
        for j in range(USERS_PER_GROUP):
            u = g * USERS_PER_GROUP + j
            skip = int(group_items[j % ITEMS_PER_GROUP])
            held_out[u] = skip
            for i in group_items:
                if i != skip:
                    t += 1
                    rows.append((f"u{u:03d}", f"i{i:03d}", t))
    frame = pl.DataFrame(rows, schema=[Columns.USER, Columns.ITEM, Columns.TIMESTAMP], orient="row").with_columns(
        pl.lit("view").alias(Columns.EVENT), pl.lit(1.0).alias(Columns.VALUE)
    )
    items = IdMap([f"i{i:03d}" for i in range(n_items)])
    users = IdMap([f"u{u:03d}" for u in range(N_GROUPS * USERS_PER_GROUP)])
    data = InteractionData.build(frame, items, users=users)
    content = np.zeros((n_items, N_GROUPS + 2), np.float32)
    content[np.arange(n_items), item_group] = 1.0
    content[:, N_GROUPS:] = rng.normal(0, 0.05, (n_items, 2))
    return data, content, held_out


def _fit(name: str, data: InteractionData, content: np.ndarray):
    cls = get_model_class(name)
    if cls is NCFModel:
        model = NCFModel(NCFConfig(dim=16, content_hidden=32, epochs=60, batch_users=16,
                                   val_fraction=0.0, progress=False, lr=1e-2))
    elif name == "lightfm":  # one thread: Hogwild SGD is not reproducible run to run
        model = cls(cls.config_class(num_threads=1))
    else:
        model = cls()
    return model.fit(data, content)


@pytest.fixture(scope="module")
def group_data():
    return _group_data()


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request, group_data):
    data, content, _ = group_data
    return request.param, _fit(request.param, data, content)


def test_seen_items_are_excluded(fitted, group_data):
    _, model = fitted
    data, _, _ = group_data
    users = np.arange(data.n_users)
    items, _ = model.recommend(users, 5, exclude=data.seen())
    seen = data.seen()
    for u, row in zip(users, items):
        assert not set(row[row >= 0]) & set(seen[u].indices)


def test_batch_equals_one_by_one(fitted, group_data):
    _, model = fitted
    data, _, _ = group_data
    users = np.arange(data.n_users)
    batch_items, batch_scores = model.recommend(users, 5, exclude=data.seen())
    for u in users[:10]:
        items, scores = model.recommend(np.array([u]), 5, exclude=data.seen())
        np.testing.assert_array_equal(items[0], batch_items[u])
        np.testing.assert_allclose(scores[0], batch_scores[u], rtol=1e-5, atol=1e-6)  # float32 near 0


def test_save_load_same_recommendations(fitted, group_data, tmp_path):
    name, model = fitted
    data, _, _ = group_data
    model.save(tmp_path / name)
    loaded = get_model_class(name).load(tmp_path / name)
    users = np.arange(data.n_users)
    a, sa = model.recommend(users, 5, exclude=data.seen())
    b, sb = loaded.recommend(users, 5, exclude=data.seen())
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-5)


def test_candidates_restrict_ranking(fitted, group_data):
    _, model = fitted
    data, _, _ = group_data
    candidates = np.array([1, 7, 13, 19])
    items, _ = model.recommend(np.arange(data.n_users), 3, candidates=candidates)
    assert set(items.ravel()) <= set(candidates)


def test_short_candidate_list_pads_with_minus_one(fitted):
    _, model = fitted
    items, scores = model.recommend(np.array([0]), 4, candidates=np.array([2, 3]))
    assert list(items[0, 2:]) == [-1, -1] and np.isneginf(scores[0, 2:]).all()


def test_k_must_be_positive(fitted):
    _, model = fitted
    with pytest.raises(ValueError, match="k must be >= 1"):
        model.recommend(np.array([0]), 0)


def test_ncf_recovers_held_out_item(group_data):
    data, content, held_out = group_data
    model = _fit("ncf", data, content)
    users = np.arange(data.n_users)
    items, _ = model.recommend(users, 1, exclude=data.seen())
    hits = np.mean([items[u, 0] == held_out[u] for u in users])
    assert hits >= 0.9, hits


def test_ncf_over_a_sampled_softmax_learns_with_sparse_id_gradients(group_data):
    """Above ``full_softmax_items`` a step scores a sample of the items; the id embeddings then take sparse
    gradients and a lazy Adam (a million-item catalog costs a step the rows it touches), and still learn."""
    data, content, held_out = group_data
    model = NCFModel(NCFConfig(dim=16, content_hidden=32, epochs=60, batch_users=16, val_fraction=0.0,
                               progress=False, lr=1e-2, full_softmax_items=8, negatives=8))
    model.fit(data, content)
    assert model.net.item_emb.sparse and model.net.hist_emb.sparse
    users = np.arange(data.n_users)
    items, _ = model.recommend(users, 1, exclude=data.seen())
    assert np.mean([items[u, 0] == held_out[u] for u in users]) >= 0.8


def test_popularity_known_answer():
    frame = pl.DataFrame({
        Columns.USER: ["a", "b", "c", "a", "b", "a"],
        Columns.ITEM: ["x", "x", "x", "y", "y", "z"],
        Columns.TIMESTAMP: [1, 2, 3, 4, 5, 6],
        Columns.EVENT: ["view"] * 6,
        Columns.VALUE: [1.0] * 6,
    })
    data = InteractionData.build(frame, IdMap(["w", "x", "y", "z"]))
    model = PopularityModel().fit(data)
    items, scores = model.recommend(np.array([2]), 3)
    assert data.items.to_external(items[0]) == ["x", "y", "z"]
    np.testing.assert_array_equal(scores[0], [3, 2, 1])
    items, _ = model.recommend(np.array([0]), 2, exclude=data.seen())  # user a saw x, y, z
    assert data.items.to_external(items[0][:1]) == ["w"]


def test_ncf_recommends_cold_items_through_content():
    """Items with no interactions at all get ranked for the users of their content group."""
    data, content, _ = _group_data(cold_items_per_group=2)
    model = _fit("ncf", data, content)
    n_per = ITEMS_PER_GROUP + 2
    cold = np.array([g * n_per + ITEMS_PER_GROUP + c for g in range(N_GROUPS) for c in range(2)])
    users = np.arange(data.n_users)
    items, _ = model.recommend(users, 2, candidates=cold)
    user_group = users // USERS_PER_GROUP
    rec_group = items[:, 0] // n_per
    assert np.mean(rec_group == user_group) >= 0.9


def test_ncf_is_deterministic(group_data):
    data, content, _ = group_data
    a = _fit("ncf", data, content).recommend(np.arange(10), 5)
    b = _fit("ncf", data, content).recommend(np.arange(10), 5)
    np.testing.assert_array_equal(a[0], b[0])


def test_fit_rejects_misshapen_vectors(group_data):
    data, content, _ = group_data
    with pytest.raises(ValueError, match="one row per catalog item"):
        NCFModel(NCFConfig(progress=False)).fit(data, content[:-1])


def test_unknown_config_key_is_an_error():
    with pytest.raises(ValueError, match="extra"):
        NCFConfig.model_validate({"dimm": 3})


def test_unknown_model_names_allowed():
    with pytest.raises(ValueError, match="ncf, popularity"):
        get_model_class("bert4rec")


def test_history_of_a_known_user_matches_their_recommendations(fitted, group_data):
    """A user's own training history, sent as an ad-hoc history, gives their list (history models)."""
    name, model = fitted
    data, _, _ = group_data
    if not model.recommends_from_history:
        with pytest.raises(NotImplementedError):
            model.recommend_history(data.seen()[:1], 3)
        return
    users = np.arange(0, data.n_users, 5)
    history = data.seen()[users]
    by_user, _ = model.recommend(users, 3, exclude=data.seen())
    by_history, _ = model.recommend_history(history, 3)
    agree = np.mean(by_user[:, 0] == by_history[:, 0])
    # item-based models score a history exactly as the user; LightFM folds the user in (approximate)
    assert agree >= (0.7 if name == "lightfm" else 1.0), f"{name}: top item agrees for {agree:.0%} of users"


def test_ad_hoc_history_recommends_its_group(fitted, group_data):
    """A new user who saw 3 items of a group gets the group's other items first (popularity excepted)."""
    name, model = fitted
    data, _, _ = group_data
    if not model.recommends_from_history or name == "popularity":
        pytest.skip(f"{name} ignores the history (popularity) or cannot use one")
    hits = 0
    for g in range(N_GROUPS):
        items = np.arange(g * ITEMS_PER_GROUP, g * ITEMS_PER_GROUP + 3)
        history = sp.csr_matrix((np.ones(3), (np.zeros(3, int), items)), shape=(1, data.n_items))
        recs, _ = model.recommend_history(history, 3)
        assert not set(recs[0].tolist()) & set(items.tolist()), f"{name}: history items recommended again"
        hits += int(np.all(recs[0] // ITEMS_PER_GROUP == g))
    assert hits >= N_GROUPS - 1, f"{name}: only {hits} of {N_GROUPS} groups recovered from a history"


def test_history_batch_equals_one_by_one(fitted, group_data):
    name, model = fitted
    data, _, _ = group_data
    if not model.recommends_from_history:
        pytest.skip(f"{name} does not recommend from a history")
    history = data.seen()[:6]
    batch, _ = model.recommend_history(history, 4)
    for r in range(6):
        single, _ = model.recommend_history(history[r], 4)
        np.testing.assert_array_equal(single[0], batch[r])


def test_ncf_recency_weighs_the_newest_items_most(group_data):
    """With a short half-life the newest items decide: the same items in reverse order flip the answer."""
    data, content, _ = group_data
    model = NCFModel(NCFConfig(dim=16, content_hidden=32, epochs=60, batch_users=16, val_fraction=0.0,
                               progress=False, lr=1e-2, recency_half_life=1.0)).fit(data, content)
    w = model.history_weights(4)
    np.testing.assert_allclose(w, [0.125, 0.25, 0.5, 1.0])
    n_per = ITEMS_PER_GROUP
    group_a, group_b = list(range(0, 3)), list(range(n_per, n_per + 3))
    for order, newest_group in ((group_a + group_b, 1), (group_b + group_a, 0)):
        weights = model.history_weights(len(order))
        history = sp.csr_matrix((weights, (np.zeros(len(order), int), order)), shape=(1, data.n_items))
        items, _ = model.recommend_history(history, 3)
        assert all(i // n_per == newest_group for i in items[0]), (order, items[0])
    assert model.ordered_history(0).tolist() == [i for i in range(n_per) if i != 0]  # oldest first


def test_ncf_auto_recency_is_chosen_and_saved(group_data, tmp_path):
    data, content, _ = group_data
    model = NCFModel(NCFConfig(dim=16, content_hidden=32, epochs=20, batch_users=16, eval_every=5,
                               progress=False, lr=1e-2)).fit(data, content)
    from tlrec.training.models.ncf_fit import RECENCY_GRID

    half_life = float(model.net.half_life) or None
    assert half_life in RECENCY_GRID
    model.save(tmp_path / "m")
    again = NCFModel.load(tmp_path / "m")
    np.testing.assert_array_equal(again.history_weights(5), model.history_weights(5))


def test_content_neighbours_known_answer():
    from tlrec.training.models.ncf_fit import content_neighbours

    content = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.7, 0.7]], np.float32)
    pool = np.array([0, 1, 2, 3])
    nbr, sim = content_neighbours(content, pool, 1)
    assert pool[nbr[:, 0]].tolist()[:4] == [1, 0, 3, 2]  # itself excluded
    assert nbr.shape == (5, 1) and sim.shape == (5, 1)
    assert sim[0, 0] == pytest.approx(0.9 / np.hypot(0.9, 0.1), abs=1e-6)


def test_loading_a_model_from_another_version_names_the_key(tmp_path):
    import json

    data, content, _ = _group_data()
    model = PopularityModel().fit(data)
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    meta["config"]["user_hidden"] = 32  # a key an older version wrote
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"config.json: user_hidden: .*retrain"):
        PopularityModel.load(tmp_path / "m")


def test_ncf_content_layers_train_in_bf16_and_serve_in_float32(monkeypatch):
    """``bf16=True``: the content layers' products run in bfloat16 while training (close to float32, not
    equal), and the served vectors (eval mode) are exact float32; ``"auto"`` follows the CPU."""
    import torch

    from tlrec.training.models import ncf_net

    torch.manual_seed(0)
    content = torch.randn(50, 12)
    net = ncf_net.NCFNet(50, content, NCFConfig(dim=8, content_hidden=16, bf16=True))
    exact = ncf_net.NCFNet(50, content, NCFConfig(dim=8, content_hidden=16, bf16=False))
    exact.load_state_dict(net.state_dict())
    items = torch.arange(50)
    with torch.no_grad():
        served, served_exact = net.eval().items(items)[0], exact.eval().items(items)[0]
        trained, trained_exact = net.train().items(items)[0], exact.train().items(items)[0]
    torch.testing.assert_close(served, served_exact, rtol=0, atol=0)
    torch.testing.assert_close(trained_exact, served_exact, rtol=0, atol=0)
    assert trained.dtype == torch.float32
    gap = float((trained - served).abs().max())
    assert 0 < gap < 0.05 * float(served.abs().max())
    for native in (True, False):
        monkeypatch.setattr(ncf_net, "native_bf16", lambda native=native: native)
        assert ncf_net.NCFNet(50, content, NCFConfig(dim=8, content_hidden=16)).train_bf16 is native
