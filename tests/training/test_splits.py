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
