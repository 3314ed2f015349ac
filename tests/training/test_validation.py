"""training/validation.py: whether time order carries signal, and the shared validation split."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tlrec.errors import UsageError
from tlrec.tables import Columns
from tlrec.training.id_map import IdMap
from tlrec.training.interaction_data import InteractionData
from tlrec.training.splits import random_split, temporal_split
from tlrec.training.validation import HOPELESS_SHARE, ValidationSplit, time_signal

C = Columns
N_ITEMS = 300  # a cycle of items
N_USERS = 150
EVENTS = 40


def _interactions(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={C.USER: pl.String, C.ITEM: pl.String, C.TIMESTAMP: pl.Int64},
                        orient="row").with_columns(pl.lit("view").alias(C.EVENT), pl.lit(1.0).alias(C.VALUE))


def _sequential() -> pl.DataFrame:
    """Each user walks the item cycle from a random start, one step per event: their most
    recent items are next to the items they visit next, their oldest items are far away."""
    rng = np.random.default_rng(0)
    rows = []
    t = 0
    for u in range(N_USERS):
        start = int(rng.integers(0, N_ITEMS))
        for j in range(EVENTS):
            t += 1
            rows.append((f"u{u:03d}", f"i{(start + j) % N_ITEMS:03d}", t))
    return _interactions(rows)


def _shuffled_times(df: pl.DataFrame) -> pl.DataFrame:
    """Same events, timestamps permuted across rows: the order within a user is noise."""
    return df.with_columns(pl.col(C.TIMESTAMP).shuffle(seed=1))


def _data(df: pl.DataFrame) -> InteractionData:
    return InteractionData.build(df, IdMap([f"i{i:03d}" for i in range(N_ITEMS)]))


@pytest.fixture(scope="module")
def sequential() -> pl.DataFrame:
    return _sequential()


# ------------------------------------------------------------------ time_signal
def test_time_signal_finds_sequential_order(sequential):
    has_time, reason = time_signal(sequential)
    assert has_time, reason
    assert "carries signal" in reason and f"over {N_USERS} users" in reason


def test_time_signal_none_when_timestamps_are_shuffled(sequential):
    has_time, reason = time_signal(_shuffled_times(sequential))
    assert not has_time, reason
    assert "no signal" in reason


def test_time_signal_none_when_all_timestamps_tie(sequential):
    has_time, reason = time_signal(sequential.with_columns(pl.lit(5, dtype=pl.Int64).alias(C.TIMESTAMP)))
    assert not has_time
    assert "tie" in reason


def test_time_signal_none_without_users_of_four_events():
    df = _interactions([(f"u{u}", f"i{(u + j) % N_ITEMS:03d}", 10 * u + j) for u in range(50) for j in range(3)])
    has_time, reason = time_signal(df)
    assert not has_time
    assert "4+" in reason


def test_time_signal_is_deterministic(sequential):
    assert time_signal(sequential, seed=3) == time_signal(sequential, seed=3)


# ------------------------------------------------------------------ ValidationSplit.of
def test_auto_split_follows_the_time_signal(sequential):
    by_time = ValidationSplit.of(_data(sequential))
    assert by_time.by == "time" and "carries signal" in by_time.reason
    shuffled = _shuffled_times(sequential)
    at_random = ValidationSplit.of(_data(shuffled))
    assert at_random.by == "random" and "no signal" in at_random.reason


def test_auto_time_split_holds_out_each_users_last_events(sequential):
    split = ValidationSplit.of(_data(sequential), fraction=0.1)
    _, expected = temporal_split(sequential, test_fraction=0.1)
    assert split.val.select(C.USER, C.ITEM).rows() == expected.select(C.USER, C.ITEM).rows()
    assert split.val.height == N_USERS * 4  # ceil(0.1 * 40) per user


def test_forced_split(sequential):
    data = _data(_shuffled_times(sequential))
    forced = ValidationSplit.of(data, fraction=0.2, by="time")
    assert forced.by == "time" and forced.reason == "time split requested"
    _, expected = temporal_split(data.interactions, test_fraction=0.2)
    assert sorted(forced.val.select(C.USER, C.ITEM).rows()) == sorted(expected.select(C.USER, C.ITEM).rows())

    data = _data(sequential)  # time carries signal, but random is asked for
    forced = ValidationSplit.of(data, fraction=0.2, by="random", seed=4)
    assert forced.by == "random" and forced.reason == "random split requested"
    _, expected = random_split(data.interactions, test_fraction=0.2, seed=4)
    assert sorted(forced.val.select(C.USER, C.ITEM).rows()) == sorted(expected.select(C.USER, C.ITEM).rows())
    assert forced.to_dict()["by"] == "random" and forced.to_dict()["fraction"] == 0.2


@pytest.mark.parametrize("bad", ["timestamp", "", None, "Random"])
def test_bad_by_is_a_usage_error(sequential, bad):
    with pytest.raises(UsageError, match="auto, time, random or last"):
        ValidationSplit.of(_data(sequential), by=bad)


@pytest.mark.parametrize("by", ["time", "random"])
def test_held_out_events_are_not_in_fit_data(sequential, by):
    data = _data(sequential)
    split = ValidationSplit.of(data, fraction=0.25, by=by)
    fit_pairs = set(split.fit_data.interactions.select(C.USER, C.ITEM).iter_rows())
    val_pairs = set(split.val.select(C.USER, C.ITEM).iter_rows())
    assert val_pairs and not fit_pairs & val_pairs
    assert len(fit_pairs) + len(val_pairs) == sequential.height
    # shared id maps; relevant sets and the seen matrix match
    assert split.fit_data.items is data.items and split.fit_data.users is data.users
    assert split.fit_data.n_users == data.n_users and split.fit_data.n_items == data.n_items
    seen = split.seen
    for u, items in split.relevant.items():
        assert not set(seen[u].indices) & items
    assert sum(len(v) for v in split.relevant.values()) == len(val_pairs)
    assert np.array_equal(split.users, np.sort(np.array(list(split.relevant), np.int64)))


def test_scored_users_are_capped(sequential, monkeypatch):
    import tlrec.training.validation as validation

    monkeypatch.setattr(validation, "MAX_USERS", 25)
    a = ValidationSplit.of(_data(sequential), by="random", seed=2)
    b = ValidationSplit.of(_data(sequential), by="random", seed=2)
    assert len(a.users) == 25 and len(a.relevant) == N_USERS
    assert np.array_equal(a.users, b.users) and np.all(np.diff(a.users) > 0)
    assert set(a.users.tolist()) <= set(a.relevant)
    assert a.to_dict()["users"] == N_USERS and a.to_dict()["users_scored"] == 25


def test_empty_when_every_user_has_one_event():
    df = _interactions([(f"u{u}", f"i{u:03d}", u) for u in range(20)])
    split = ValidationSplit.of(_data(df))
    assert split.empty and split.val.height == 0 and len(split.users) == 0
    assert split.fit_data.interactions.height == 20
    assert split.score_function(lambda users: np.zeros((len(users), N_ITEMS))) == 0.0


def test_hopeless():
    split = ValidationSplit.of(_data(_sequential()), by="random")
    assert split.bar == 0.0
    assert not split.hopeless(0.0)  # nothing finished yet: nothing is hopeless
    split.bar = 0.4
    assert split.hopeless(0.4 * HOPELESS_SHARE - 1e-6)
    assert not split.hopeless(0.4 * HOPELESS_SHARE)
    assert not split.hopeless(0.5)


# ------------------------------------------------------------------ scoring
@pytest.fixture(scope="module")
def random_split_of_sequential(sequential) -> ValidationSplit:
    return ValidationSplit.of(_data(sequential), fraction=0.1, by="random")


def _oracle(split: ValidationSplit, sign: float):
    def scores(users: np.ndarray) -> np.ndarray:
        out = np.zeros((len(users), split.fit_data.n_items), np.float32)
        for r, u in enumerate(users):
            out[r, list(split.relevant[int(u)])] = sign
        return out
    return scores


def test_score_function_known_answers(random_split_of_sequential):
    split = random_split_of_sequential
    assert split.score_function(_oracle(split, 1.0)) == pytest.approx(1.0)
    assert split.score_function(_oracle(split, -1.0)) == pytest.approx(0.0)


def test_score_function_excludes_seen_items(random_split_of_sequential):
    """Seen items scored highest are skipped: the held-out items next in line still give NDCG 1."""
    split = random_split_of_sequential
    oracle = _oracle(split, 1.0)

    def seen_first(users: np.ndarray) -> np.ndarray:
        return oracle(users) + 5.0 * split.seen[users].toarray()

    assert split.score_function(seen_first) == pytest.approx(1.0)


def test_ndcg_per_user_known_answer(random_split_of_sequential):
    split = random_split_of_sequential
    u = int(split.users[0])
    rel = sorted(split.relevant[u])
    others = [i for i in range(N_ITEMS) if i not in rel][:10]
    # first relevant item at rank 2, the rest missing; -1 slots are ignored
    ranked = np.array([[others[0], rel[0], *others[1:9], -1]], np.int64)
    idcg = sum(1 / np.log2(r + 2) for r in range(min(len(rel), 10)))
    got = split.ndcg_per_user(ranked, users=np.array([u]))
    assert got == pytest.approx([(1 / np.log2(3)) / idcg])


def test_score_model_matches_score_function(random_split_of_sequential):
    from tlrec.training.models import ItemKNNModel

    split = random_split_of_sequential
    model = ItemKNNModel().fit(split.fit_data)
    assert split.score_model(model) == pytest.approx(split.score_function(model.score), abs=1e-9)
    tuned = ItemKNNModel().tune(split)
    assert tuned.validation_ndcg_ == pytest.approx(split.score_model(model))
    assert tuned.validation_ndcg_ > 0.5  # neighbours on the cycle predict the held-out items
