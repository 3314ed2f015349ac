"""The propensity model on planted data where the true probability of every pair is known."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tlrec.tables import Columns
from tlrec.training.probability_metrics import probability_metrics
from tlrec.training.propensity import PropensityConfig, PropensityModel

N_USERS, N_ITEMS, PER_USER = 300, 120, 40


def true_probability(taste: np.ndarray, genre: np.ndarray, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """0.85 when the user's taste matches the item's genre, 0.15 otherwise."""
    return np.where(taste[users] == genre[items], 0.85, 0.15)


@pytest.fixture(scope="module")
def world() -> dict:
    rng = np.random.default_rng(0)
    taste = rng.integers(0, 2, N_USERS)
    genre = rng.integers(0, 2, N_ITEMS)
    content = rng.normal(0, 0.3, (N_ITEMS, 16)).astype(np.float32)
    content[:, 0] += np.where(genre == 1, 1.0, -1.0)  # the pre-trained vector knows the genre
    new_items = np.arange(N_ITEMS - 20, N_ITEMS)  # no examples: only content can place them
    users = np.repeat(np.arange(N_USERS), PER_USER)
    items = rng.integers(0, N_ITEMS - 20, len(users))
    p = true_probability(taste, genre, users, items)
    labels = (rng.random(len(users)) < p).astype(np.float32)
    examples = pl.DataFrame({Columns.USER_IDX: users, Columns.ITEM_IDX: items,
                             Columns.TIMESTAMP: np.tile(np.arange(PER_USER), N_USERS)})
    model = PropensityModel(PropensityConfig(progress=False, epochs=30)).fit(
        examples, labels, N_USERS, N_ITEMS, content)
    return {"taste": taste, "genre": genre, "model": model, "new_items": new_items, "rng": rng}


def test_calibrated_probabilities_match_the_truth(world: dict) -> None:
    rng = world["rng"]
    users = rng.integers(0, N_USERS, 4000)
    items = rng.integers(0, N_ITEMS - 20, 4000)
    truth = true_probability(world["taste"], world["genre"], users, items)
    p = world["model"].predict(users, items)
    assert np.abs(p - truth).mean() < 0.06
    outcomes = (rng.random(len(truth)) < truth).astype(float)
    assert probability_metrics(outcomes, p)["ece"] < 0.05


def test_new_items_get_probabilities_from_content(world: dict) -> None:
    rng = world["rng"]
    users = rng.integers(0, N_USERS, 2000)
    items = rng.choice(world["new_items"], 2000)
    truth = true_probability(world["taste"], world["genre"], users, items)
    p = world["model"].predict(users, items)
    assert np.abs(p - truth).mean() < 0.12  # far better than a constant (0.35 off)


def test_unknown_users_get_the_item_level_probability(world: dict) -> None:
    items = np.arange(N_ITEMS - 20)
    p = world["model"].predict(np.full(len(items), -1), items)
    assert np.isfinite(p).all() and (np.abs(p - 0.5) < 0.2).all()  # no taste known: near the base rate


def test_saved_model_loads_to_the_same_probabilities(world: dict, tmp_path) -> None:
    model = world["model"]
    model.save(tmp_path / "m")
    loaded = PropensityModel.load(tmp_path / "m")
    users, items = np.arange(N_USERS), np.arange(N_USERS) % N_ITEMS
    np.testing.assert_allclose(loaded.predict(users, items), model.predict(users, items), rtol=1e-6)
    assert loaded.calibrator.kind == model.calibrator.kind and loaded.epochs_ == model.epochs_


def test_a_corrupt_or_inconsistent_saved_model_is_one_line_naming_the_file(world: dict, tmp_path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from tlrec.training.artifacts import ArtifactError

    world["model"].save(tmp_path / "m")
    weights = tmp_path / "m" / "weights.safetensors"
    state = load_file(weights)
    state["examples.items"] = torch.full_like(state["examples.items"], N_ITEMS)  # past the catalog
    save_file(state, weights)
    with pytest.raises(ArtifactError, match=r"weights\.safetensors: examples index .* outside"):
        PropensityModel.load(tmp_path / "m")
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ArtifactError, match=r"weights\.safetensors: not a readable safetensors file"):
        PropensityModel.load(tmp_path / "m")


def test_recent_rate_reads_only_the_examples_before_in_time() -> None:
    from tlrec.training.propensity_features import FEATURES, RECENT, LabelledHistory

    # one user: RECENT likes, then RECENT dislikes (given out of time order); a second user for the overall rate
    n = 2 * RECENT
    labels = np.r_[np.ones(RECENT), np.zeros(RECENT), [1.0, 0.0]].astype(np.float32)
    times = np.r_[np.arange(n), [0, 1]]
    order = np.r_[np.random.default_rng(0).permutation(n), [n, n + 1]]
    users = np.r_[np.zeros(n, np.int64), [1, 1]]
    hist = LabelledHistory(users[order], np.arange(n + 2)[order] % 5, labels[order], 2, 5, None, times[order])
    recent = hist.own_features()[:, FEATURES.index("user_recent_rate")]
    at = {int(t): r for t, r, u in zip(times[order], recent, users[order]) if u == 0}
    assert at[RECENT] > 1.0  # right after the likes: the recent rate is high
    assert at[n - 1] < at[RECENT] and at[n - 1] < 0  # the dislikes before it pull it down; never its own label
    asked_later = hist.features(np.array([0]), np.array([0]))[0, FEATURES.index("user_recent_rate")]
    assert asked_later < at[n - 1]  # after the history: the last RECENT examples, all dislikes
