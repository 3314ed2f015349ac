"""ContentProfileModel: known answers on two clusters of item vectors, cold items, missing vectors.

The shared contract tests (tests/training/test_models.py) also run on it, through MODELS.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tlrec.tables import Columns
from tlrec.training.id_map import IdMap
from tlrec.training.interaction_data import InteractionData
from tlrec.training.models import MODELS, ContentProfileConfig, ContentProfileModel, get_model_class

# items 0-3: cluster A (+x), items 4-7: cluster B (+y); items 3 and 7 are never interacted with (cold)
_VECTORS = np.array(
    [[1.0, 0.1, 0.0], [0.9, 0.0, 0.1], [1.0, -0.1, 0.0], [0.95, 0.05, 0.0],
     [0.0, 1.0, 0.1], [0.1, 0.9, 0.0], [-0.1, 1.0, 0.0], [0.05, 0.95, 0.0]],
    dtype=np.float32,
)
_ITEMS = IdMap([f"i{i}" for i in range(8)])


def _data(pairs: list[tuple[str, int]]) -> InteractionData:
    frame = pl.DataFrame({
        Columns.USER: [u for u, _ in pairs],
        Columns.ITEM: [f"i{i}" for _, i in pairs],
        Columns.TIMESTAMP: list(range(len(pairs))),
        Columns.EVENT: ["view"] * len(pairs),
        Columns.VALUE: [1.0] * len(pairs),
    })
    return InteractionData.build(frame, _ITEMS)


@pytest.fixture()
def fitted() -> tuple[ContentProfileModel, InteractionData]:
    # alice: cluster A; bob: cluster B; carol: one of each (A twice: repeats do not count twice)
    data = _data([("alice", 0), ("alice", 1), ("bob", 4), ("bob", 5), ("bob", 6),
                  ("carol", 2), ("carol", 2), ("carol", 5)])
    return ContentProfileModel().fit(data, _VECTORS), data


def test_registered_with_flags():
    assert MODELS["content"] is ContentProfileModel and get_model_class("content") is ContentProfileModel
    assert ContentProfileModel.recommends_for_cold_items
    assert ContentProfileModel().config == ContentProfileConfig(pooling="mean")
    with pytest.raises(ValueError):
        ContentProfileConfig.model_validate({"pooling": "max"})


def test_unseen_item_of_the_users_cluster_comes_first(fitted):
    model, data = fitted
    users = data.users.to_internal(["alice", "bob"])
    items, scores = model.recommend(users, 2, exclude=data.seen())
    alice, bob = (data.items.to_external(row) for row in items)
    assert alice == ["i3", "i2"]  # both unseen cluster-A items, cold i3 (closest to the profile) first
    assert bob[0] == "i7"  # the unseen cluster-B item
    assert scores[0, 0] > 0.95 and scores[1, 0] > 0.95


def test_ranks_cold_items_among_candidates(fitted):
    model, data = fitted
    cold = data.items.to_internal(["i3", "i7"])
    users = data.users.to_internal(["alice", "bob"])
    items, scores = model.recommend(users, 2, candidates=cold)
    assert data.items.to_external(items[0]) == ["i3", "i7"]
    assert data.items.to_external(items[1]) == ["i7", "i3"]
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_profile_is_normalised_mean_of_distinct_items(fitted):
    model, data = fitted
    carol = int(data.users.to_internal(["carol"])[0])
    unit = _VECTORS / np.linalg.norm(_VECTORS, axis=1, keepdims=True)
    expected = unit[2] + unit[5]
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(model.profiles[carol], expected, atol=1e-6)
    scores = model.score(np.array([carol]))
    np.testing.assert_allclose(scores[0], unit @ expected, atol=1e-6)
    assert scores.dtype == np.float32 and scores.shape == (1, 8)


def test_items_without_vectors_score_zero_and_add_nothing():
    vectors = _VECTORS.copy()
    vectors[[1, 3]] = 0.0  # no content for i1 (seen by alice) and i3 (cold)
    data = _data([("alice", 0), ("alice", 1), ("dave", 1)])
    model = ContentProfileModel().fit(data, vectors)
    alice, dave = data.users.to_internal(["alice", "dave"])
    unit0 = vectors[0] / np.linalg.norm(vectors[0])
    np.testing.assert_allclose(model.profiles[alice], unit0, atol=1e-6)  # i1 contributed nothing
    assert np.all(model.profiles[dave] == 0) and np.all(model.score(np.array([dave])) == 0)
    assert model.score(np.array([alice]))[0, 3] == 0.0


def test_needs_item_vectors_and_save_load(tmp_path, fitted):
    data = fitted[1]
    with pytest.raises(ValueError, match="needs item vectors"):
        ContentProfileModel().fit(data)
    model = fitted[0]
    assert model.wants_item_vectors()
    model.save(tmp_path / "m")
    loaded = ContentProfileModel.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.score(np.arange(data.n_users)), model.score(np.arange(data.n_users)))
