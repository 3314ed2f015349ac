"""training/models/blend.py: per-user standardised scores, weights, cold items, save/load."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from pydantic import ValidationError

from tlrec.errors import ConfigError
from tlrec.tables import Columns
from tlrec.training.id_map import IdMap
from tlrec.training.interaction_data import InteractionData
from tlrec.training.models import (
    BlendConfig,
    BlendModel,
    ContentProfileModel,
    ItemKNNModel,
    PopularityModel,
    build_model,
)
from tlrec.training.models.blend import UNSCORED, BlendComponent, standardise

C = Columns
N_GROUPS, PER_GROUP, COLD = 4, 6, 2  # the last COLD items of each group have no interaction


def _data() -> tuple[InteractionData, np.ndarray, np.ndarray]:
    """Users of 4 taste groups, each taking 3-5 warm items of their group and one popular item.

    Returns (data, content vectors [n_items, N_GROUPS + 1], cold item ids)."""
    rng = np.random.default_rng(0)
    n_items = N_GROUPS * (PER_GROUP + COLD)
    group = np.repeat(np.arange(N_GROUPS), PER_GROUP + COLD)
    warm_of = {g: np.flatnonzero(group == g)[:PER_GROUP] for g in range(N_GROUPS)}
    rows, t = [], 0
    for u in range(40):
        g = u % N_GROUPS
        picks = set(rng.choice(warm_of[g], int(rng.integers(3, 6)), replace=False).tolist()) | {0}
        for i in sorted(picks):
            t += 1
            rows.append((f"u{u:02d}", f"i{i:02d}", t))
    frame = pl.DataFrame(rows, schema={C.USER: pl.String, C.ITEM: pl.String, C.TIMESTAMP: pl.Int64}, orient="row")
    data = InteractionData.build(frame, IdMap([f"i{i:02d}" for i in range(n_items)]))
    vectors = np.zeros((n_items, N_GROUPS + 1), np.float32)
    vectors[np.arange(n_items), group] = 1.0
    vectors[:, N_GROUPS] = rng.normal(0, 0.1, n_items)
    cold = np.concatenate([np.flatnonzero(group == g)[PER_GROUP:] for g in range(N_GROUPS)])
    return data, vectors, cold


@pytest.fixture(scope="module")
def world():
    data, vectors, cold = _data()
    knn = ItemKNNModel().fit(data)
    pop = PopularityModel().fit(data)
    content = ContentProfileModel().fit(data, vectors)
    return data, vectors, cold, knn, pop, content


# ------------------------------------------------------------------ standardise
def test_standardise_known_answer():
    scores = np.array([[1.0, 2.0, 3.0, 100.0], [4.0, 4.0, 10.0, -7.0]], np.float32)
    warm = np.array([True, True, True, False])
    out = standardise(scores, warm)
    assert out is scores  # in place
    np.testing.assert_allclose(out[:, warm].mean(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(out[:, warm].std(axis=1), 1.0, rtol=1e-5)
    # row 0: mean 2, std sqrt(2/3); the cold column moves with the same mean and std
    s = np.sqrt(2 / 3)
    np.testing.assert_allclose(out[0], [-1 / s, 0.0, 1 / s, 98 / s], rtol=1e-5)
    # row 1: mean 6, std sqrt(8)
    np.testing.assert_allclose(out[1], np.array([-2, -2, 4, -13]) / np.sqrt(8), rtol=1e-5)


def test_standardise_all_warm_and_constant_rows():
    scores = np.array([[3.0, 3.0, 3.0], [0.0, 1.0, 2.0]], np.float32)
    out = standardise(scores, np.ones(3, bool))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0], 0.0)  # a constant row stays flat (no division by zero)
    np.testing.assert_allclose(out[1], np.array([-1.0, 0.0, 1.0]) / np.sqrt(2 / 3), rtol=1e-5)


# ------------------------------------------------------------------ config
def _components(*pairs: tuple[str, float]) -> list[BlendComponent]:
    return [BlendComponent(model=m, weight=w) for m, w in pairs]


def test_weights_must_sum_to_one():
    with pytest.raises(ValidationError, match="sum to 1"):
        BlendConfig(components=_components(("itemknn", 0.5), ("popularity", 0.3)))
    with pytest.raises(ConfigError, match="sum to 1"):
        build_model("blend", {"components": [{"model": "itemknn", "weight": 0.9}, {"model": "popularity",
                                                                                   "weight": 0.9}]})
    with pytest.raises(ValidationError):
        BlendConfig(components=_components(("itemknn", 1.5), ("popularity", -0.5)))  # no negative weight
    with pytest.raises(ValidationError):
        BlendConfig(components=[])
    BlendConfig(components=_components(("itemknn", 0.7), ("popularity", 0.3)))  # fine


def test_duplicate_components_rejected():
    with pytest.raises(ValidationError, match="once"):
        BlendConfig(components=_components(("itemknn", 0.5), ("itemknn", 0.5)))
    with pytest.raises(ConfigError, match="once"):
        build_model("blend", {"components": [{"model": "popularity", "weight": 0.5},
                                             {"model": "popularity", "weight": 0.5}]})
    with pytest.raises(ValidationError, match="blend cannot hold a blend"):
        BlendConfig(components=_components(("blend", 0.5), ("popularity", 0.5)))


def test_cold_items_from_must_be_a_component():
    with pytest.raises(ValidationError, match="not a component"):
        BlendConfig(components=_components(("itemknn", 0.5), ("popularity", 0.5)), cold_items_from="ncf")
    with pytest.raises(ConfigError, match="cold_items_from"):
        build_model("blend", {"components": [{"model": "itemknn", "weight": 1.0}], "cold_items_from": "content"})
    with pytest.raises(ConfigError, match="unknown key"):
        build_model("blend", {"components": [{"model": "itemknn", "weight": 1.0, "colour": 1}]})


def test_cold_items_flag_follows_the_router(world):
    data, _, _, knn, pop, content = world
    assert BlendModel.of([knn, pop], [0.5, 0.5], None, data).recommends_for_cold_items is False
    assert BlendModel.of([knn, content], [1.0, 0.0], "content", data).recommends_for_cold_items is True
    assert BlendModel.recommends_for_cold_items is False


# ------------------------------------------------------------------ scores
def test_blend_is_the_weighted_sum_of_standardised_scores(world):
    data, _, _, knn, pop, _ = world
    blend = BlendModel.of([knn, pop], [0.7, 0.3], None, data)
    users = np.arange(data.n_users)
    warm = np.bincount(data.interactions[C.ITEM_IDX].to_numpy(), minlength=data.n_items) > 0
    expected = 0.7 * standardise(knn.score(users).copy(), warm) + 0.3 * standardise(pop.score(users).copy(), warm)
    got = blend.score(users)
    np.testing.assert_allclose(got[:, warm], expected[:, warm], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(blend.score(users, np.array([3, 1])), got[:, [3, 1]])


def test_cold_items_rank_last_without_a_router(world):
    data, _, cold, knn, pop, _ = world
    blend = BlendModel.of([knn, pop], [0.5, 0.5], None, data)
    users = np.arange(data.n_users)
    scores = blend.score(users)
    np.testing.assert_allclose(scores[:, cold], UNSCORED, rtol=1e-6)
    warm = np.setdiff1d(np.arange(data.n_items), cold)
    assert scores[:, warm].min() > UNSCORED / 2
    items, top = blend.recommend(users, data.n_items)
    assert set(items[:, -len(cold):].ravel()) == set(cold.tolist()) and np.isfinite(top).all()


def test_cold_items_get_the_routers_standardised_score(world):
    data, _, cold, knn, pop, content = world
    blend = BlendModel.of([knn, pop, content], [0.6, 0.4, 0.0], "content", data)
    users = np.arange(data.n_users)
    warm = np.ones(data.n_items, bool)
    warm[cold] = False
    router = standardise(content.score(users).copy(), warm)
    scores = blend.score(users)
    np.testing.assert_allclose(scores[:, cold], router[:, cold], rtol=1e-5, atol=1e-5)
    # weight 0 on warm items: the warm columns are those of knn and popularity alone
    alone = BlendModel.of([knn, pop], [0.6, 0.4], None, data).score(users)
    np.testing.assert_allclose(scores[:, warm], alone[:, warm], rtol=1e-5, atol=1e-5)
    # a user of group g gets their own group's new items first among the new items
    items, _ = blend.recommend(users, 2, candidates=cold)
    group_of = {int(i): int(i) // (PER_GROUP + COLD) for i in cold}
    for u in users:
        g = int(data.users.external[u][1:]) % N_GROUPS
        assert {group_of[int(i)] for i in items[u]} == {g}


def test_a_router_alone_is_scored_on_the_cold_items_and_a_sample_of_warm_ones(world, monkeypatch):
    """A weight-0 router costs (cold + ROUTER_SCALE_ITEMS) columns, not the catalog (the demo's served blend:
    EASE + NCF for new items); its scale comes from the sampled warm items."""
    import tlrec.training.models.blend as blend_module

    data, _, cold, knn, pop, content = world
    monkeypatch.setattr(blend_module, "ROUTER_SCALE_ITEMS", 8)
    blend = BlendModel.of([knn, pop, content], [0.6, 0.4, 0.0], "content", data)
    asked: list[np.ndarray | None] = []
    scored = content._score

    def spy(user_idx, item_idx):
        asked.append(item_idx)
        return scored(user_idx, item_idx)

    monkeypatch.setattr(content, "_score", spy)
    users = np.arange(data.n_users)
    scores = blend.score(users)
    (columns,) = asked
    assert len(columns) == len(cold) + 8 and set(columns[: len(cold)]) == set(cold.tolist())
    sample = columns[len(cold):]
    assert not set(sample) & set(cold.tolist())
    raw = scored(users, None)
    expected = (raw[:, np.sort(cold)] - raw[:, sample].mean(1, keepdims=True)) / raw[:, sample].std(1, keepdims=True)
    np.testing.assert_allclose(scores[:, np.sort(cold)], expected, rtol=1e-4, atol=1e-4)
    warm = np.setdiff1d(np.arange(data.n_items), cold)
    alone = BlendModel.of([knn, pop], [0.6, 0.4], None, data).score(users)
    np.testing.assert_allclose(scores[:, warm], alone[:, warm], rtol=1e-5, atol=1e-5)
    # a refit that warms a cold item (selection: tuned on the split, refit on all events) routes anew
    blend.warm = blend.warm.copy()
    blend.warm[cold[0]] = True
    asked.clear()
    blend.score(users)
    assert len(asked[0]) == len(cold) - 1 + 8 and cold[0] not in set(asked[0][: len(cold) - 1])


def test_score_history_equals_score_for_a_users_own_history(world):
    data, _, _, knn, pop, _ = world
    blend = BlendModel.of([knn, pop], [0.5, 0.5], None, data)
    users = np.arange(data.n_users)
    history = sp.csr_matrix(data.seen()[users], dtype=np.float32)
    np.testing.assert_allclose(blend.score_history(history), blend.score(users), rtol=1e-5, atol=1e-5)
    items, _ = blend.recommend_history(history, 3)
    expected, _ = blend.recommend(users, 3, exclude=data.seen())
    np.testing.assert_array_equal(items, expected)
    # an empty history gets a finite prior (popularity's, standardised)
    empty = blend.score_history(sp.csr_matrix((1, data.n_items), dtype=np.float32))
    assert np.isfinite(empty).all()


# ------------------------------------------------------------------ fit, save, load
def test_save_load_round_trip(world, tmp_path):
    data, _, cold, knn, pop, content = world
    blend = BlendModel.of([knn, pop, content], [0.5, 0.5, 0.0], "content", data)
    blend.save(tmp_path / "blend")
    loaded = BlendModel.load(tmp_path / "blend")
    assert loaded.config == blend.config and loaded.recommends_for_cold_items
    assert [type(m) for m in loaded.components] == [ItemKNNModel, PopularityModel, ContentProfileModel]
    np.testing.assert_array_equal(loaded.warm, blend.warm)
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(loaded.score(users), blend.score(users))
    history = sp.csr_matrix(data.seen()[:5], dtype=np.float32)
    np.testing.assert_array_equal(loaded.score_history(history), blend.score_history(history))
    a, sa = blend.recommend(users, 5, exclude=data.seen())
    b, sb = loaded.recommend(users, 5, exclude=data.seen())
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)


def test_fit_from_config_matches_of(world):
    data, vectors, _, knn, pop, content = world
    config = {"components": [{"model": "itemknn", "weight": 0.5}, {"model": "popularity", "weight": 0.25},
                             {"model": "content", "weight": 0.25}], "cold_items_from": "content"}
    fitted = build_model("blend", config).fit(data, vectors)
    assert fitted.wants_item_vectors()
    same = BlendModel.of([knn, pop, content], [0.5, 0.25, 0.25], "content", data)
    users = np.arange(data.n_users)
    np.testing.assert_allclose(fitted.score(users), same.score(users), rtol=1e-5, atol=1e-5)
