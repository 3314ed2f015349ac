"""Tests for training/splits.py on hand-worked examples."""

from __future__ import annotations

import polars as pl
import pytest

from tlrec.tables import Columns
from tlrec.training.splits import cold_item_split, global_temporal_split, temporal_split

C = Columns


def frame(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={C.USER: pl.String, C.ITEM: pl.String, C.TIMESTAMP: pl.Int64}, orient="row"
    )


def pairs(df: pl.DataFrame) -> set[tuple[str, str]]:
    return set(df.select(C.USER, C.ITEM).iter_rows())


def test_temporal_split_last_fraction_per_user() -> None:
    df = frame(
        [
            # user a: 5 events, rows out of time order; 0.4 * 5 = 2 -> a4, a5 to test
            ("a", "a3", 30), ("a", "a1", 10), ("a", "a5", 50), ("a", "a2", 20), ("a", "a4", 40),
            # user b: 3 events; ceil(0.4 * 3) = 2 -> b2, b3 (one stays in train)
            ("b", "b1", 1), ("b", "b2", 2), ("b", "b3", 3),
            # user c: 1 event < min_events -> all train
            ("c", "c1", 7),
            # user d: 2 events; ceil(0.8) = 1 -> d2
            ("d", "d2", 9), ("d", "d1", 8),
        ]
    )
    train, test = temporal_split(df, test_fraction=0.4)
    assert pairs(test) == {("a", "a4"), ("a", "a5"), ("b", "b2"), ("b", "b3"), ("d", "d2")}
    assert pairs(train) == {("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1"), ("c", "c1"), ("d", "d1")}
    assert train.columns == df.columns and test.columns == df.columns
    # rows keep input order
    assert test[C.ITEM].to_list() == ["a5", "a4", "b2", "b3", "d2"]


def test_temporal_split_min_events_and_at_least_one_train() -> None:
    df = frame([("u", "x", 1), ("u", "y", 2), ("u", "z", 3)])
    train, test = temporal_split(df, test_fraction=0.9)  # ceil(2.7) = 3, capped at n - 1 = 2
    assert train[C.ITEM].to_list() == ["x"] and test[C.ITEM].to_list() == ["y", "z"]
    train, test = temporal_split(df, test_fraction=0.5, min_events=4)
    assert train.height == 3 and test.height == 0


def test_temporal_split_ties_keep_file_order() -> None:
    # ts 1, 2, 2, 2; 0.5 * 4 = 2 to test: among the tied events the last two in file order
    df = frame([("u", "p", 2), ("u", "q", 1), ("u", "r", 2), ("u", "s", 2)])
    train, test = temporal_split(df, test_fraction=0.5)
    assert test[C.ITEM].to_list() == ["r", "s"]
    assert train[C.ITEM].to_list() == ["p", "q"]


def test_temporal_split_no_float_rounding_surprise() -> None:
    # 0.1 * 30 == 3.0000000000000004 in floating point; the answer must still be 3
    df = frame([("u", f"i{t}", t) for t in range(30)])
    _, test = temporal_split(df, test_fraction=0.1)
    assert test[C.ITEM].to_list() == ["i27", "i28", "i29"]


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, 0.0, 1.0])
def test_fraction_validation(bad: float) -> None:
    df = frame([("u", "x", 1), ("u", "y", 2)])
    with pytest.raises(ValueError, match="test_fraction"):
        temporal_split(df, test_fraction=bad)
    with pytest.raises(ValueError, match="fraction"):
        cold_item_split(df, fraction=bad)
    with pytest.raises(ValueError, match="test_fraction"):
        global_temporal_split(df, test_fraction=bad)


def _cold_frame() -> pl.DataFrame:
    rows = []
    for u in range(6):
        for i in range(10):
            if (u + i) % 3 != 0:
                rows.append((f"u{u}", f"item{i:02d}", u * 100 + i))
    return frame(rows)


def test_cold_item_split_deterministic_and_clean() -> None:
    df = _cold_frame()
    train, test, cold = cold_item_split(df, fraction=0.3, seed=7)
    assert len(cold) == 3  # round(0.3 * 10)
    assert cold == sorted(cold)
    assert set(train[C.ITEM]).isdisjoint(cold)
    assert set(test[C.ITEM]) == set(cold)
    assert train.height + test.height == df.height
    # every interaction of a cold item is in test
    assert test.height == df.filter(pl.col(C.ITEM).is_in(cold)).height

    # same seed -> same items, whatever the row order; another seed -> (here) different items
    shuffled = df.sample(fraction=1.0, shuffle=True, seed=123)
    assert cold_item_split(shuffled, fraction=0.3, seed=7)[2] == cold
    assert cold_item_split(df, fraction=0.3, seed=8)[2] != cold


def test_cold_item_split_needs_two_items() -> None:
    with pytest.raises(ValueError, match="2 distinct items"):
        cold_item_split(frame([("u", "x", 1), ("v", "x", 2)]))


def test_global_temporal_split() -> None:
    df = frame([(f"u{t % 3}", f"i{t}", t) for t in [5, 1, 9, 3, 7, 2, 10, 4, 8, 6]])
    train, test = global_temporal_split(df, test_fraction=0.2)
    # the 0.8 quantile ("higher") of 1..10 is 9: events at 9 and 10 go to test
    assert sorted(test[C.TIMESTAMP].to_list()) == [9, 10]
    assert train[C.TIMESTAMP].max() < test[C.TIMESTAMP].min()
    assert train.height == 8

    same = frame([("u", "a", 5), ("v", "b", 5), ("w", "c", 5)])
    train, test = global_temporal_split(same)
    assert train.height == 3 and test.height == 0


# ------------------------------------------------------------------ random_split
def _random_frame() -> pl.DataFrame:
    """Users with 1..9 events (so some fall under min_events), timestamps out of row order."""
    rows = []
    for u in range(12):
        n = 1 + u % 9
        for j in range(n):
            rows.append((f"u{u:02d}", f"u{u:02d}-i{j}", (7 * j + 3 * u) % 11 + 100 * j))
    return frame(rows)


def _per_user_counts(df: pl.DataFrame) -> dict[str, int]:
    return dict(df.group_by(C.USER).len().iter_rows())


@pytest.mark.parametrize("fraction, min_events", [(0.2, 2), (0.5, 2), (0.1, 3), (0.9, 4)])
def test_random_split_counts_equal_temporal_split(fraction: float, min_events: int) -> None:
    from tlrec.training.splits import random_split

    df = _random_frame()
    t_train, t_test = temporal_split(df, test_fraction=fraction, min_events=min_events)
    r_train, r_test = random_split(df, test_fraction=fraction, min_events=min_events, seed=3)
    assert _per_user_counts(r_test) == _per_user_counts(t_test)
    assert _per_user_counts(r_train) == _per_user_counts(t_train)
    assert r_train.height + r_test.height == df.height
    assert pairs(r_train) | pairs(r_test) == pairs(df) and not pairs(r_train) & pairs(r_test)
    assert r_train.columns == df.columns and r_test.columns == df.columns


def test_random_split_is_seeded() -> None:
    from tlrec.training.splits import random_split

    df = _random_frame()
    _, a = random_split(df, test_fraction=0.5, seed=1)
    _, b = random_split(df, test_fraction=0.5, seed=1)
    assert a.equals(b)
    others = [pairs(random_split(df, test_fraction=0.5, seed=s)[1]) for s in range(2, 6)]
    assert any(o != pairs(a) for o in others)  # the seed matters
    # rows keep input order
    order = {p: i for i, p in enumerate(df.select(C.USER, C.ITEM).iter_rows())}
    got = [order[p] for p in a.select(C.USER, C.ITEM).iter_rows()]
    assert got == sorted(got)


def test_random_split_does_not_follow_time() -> None:
    """Unlike temporal_split, the held-out events are not always each user's last ones."""
    from tlrec.training.splits import random_split

    df = frame([(f"u{u}", f"i{j}", j) for u in range(30) for j in range(10)])
    _, t_test = temporal_split(df, test_fraction=0.2)
    _, r_test = random_split(df, test_fraction=0.2, seed=0)
    assert pairs(r_test) != pairs(t_test)
    assert r_test[C.TIMESTAMP].min() < 8


def test_random_split_ignores_row_order_within_a_user() -> None:
    from tlrec.training.splits import random_split

    df = _random_frame()
    _, test = random_split(df, test_fraction=0.5, seed=11)
    # shuffle only within users (users stay in the same blocks), then the whole frame
    within = df.with_row_index("r").sort([C.USER, pl.col("r").shuffle(seed=5).over(C.USER)]).drop("r")
    assert not within.equals(df)
    _, test_within = random_split(within, test_fraction=0.5, seed=11)
    assert pairs(test_within) == pairs(test)
    shuffled = df.sample(fraction=1.0, shuffle=True, seed=123)
    _, test_shuffled = random_split(shuffled, test_fraction=0.5, seed=11)
    assert pairs(test_shuffled) == pairs(test)


def test_random_split_min_events_stay_in_train() -> None:
    from tlrec.training.splits import random_split

    df = _random_frame()
    counts = _per_user_counts(df)
    train, test = random_split(df, test_fraction=0.5, min_events=4, seed=0)
    small = {u for u, n in counts.items() if n < 4}
    assert small and not small & set(test[C.USER])
    assert {u for u, n in _per_user_counts(train).items() if u in small} == small
    assert all(_per_user_counts(train)[u] == counts[u] for u in small)
    # every user with enough events keeps at least one in train
    assert set(_per_user_counts(train)) == set(counts)
    with pytest.raises(ValueError, match="test_fraction"):
        random_split(df, test_fraction=1.0)
    with pytest.raises(ValueError, match="min_events"):
        random_split(df, min_events=0)
