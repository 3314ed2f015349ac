"""Novelty and user-activity segments on hand-worked cases."""

from __future__ import annotations

import math

import polars as pl
import pytest

from tlrec.training.evaluate import activity_segments, evaluate_segments, novelty_at_k

TRAIN = pl.DataFrame({
    "user_id": ["a"] * 12 + ["b", "c", "c"],
    "item_id": [f"i{j}" for j in range(12)] + ["i0", "i0", "i1"],
})


def test_novelty_is_mean_self_information():
    # i0: 3 of 3 users -> 0 bits; i1: 2 of 3 -> log2(1.5); unseen item: 1 of 3 -> log2(3)
    recs = {"x": ["i0", "i1"], "y": ["new"]}
    expected = ((0.0 + math.log2(1.5)) / 2 + math.log2(3)) / 2
    assert novelty_at_k(recs, {"i0": 1.0, "i1": 2 / 3}, 2, n_train_users=3) == pytest.approx(expected)


def test_segments_follow_training_activity():
    seg = activity_segments(TRAIN, ["a", "b", "c", "zz"])
    assert seg == {"a": "regular", "b": "sparse", "c": "sparse", "zz": "cold"}


def test_evaluate_segments_splits_users():
    test = pl.DataFrame({"user_id": ["a", "b", "zz"], "item_id": ["i20", "i5", "i7"]})
    recs = {"a": ["i20", "i3"], "b": ["i9", "i8"], "zz": ["i7"]}
    res = evaluate_segments(recs, test, TRAIN, ks=(1, 2))
    assert res["all"]["users"] == 3 and res["all"]["hit_rate@1"] == pytest.approx(2 / 3)
    assert res["regular"]["hit_rate@1"] == 1.0 and res["sparse"]["hit_rate@1"] == 0.0
    assert res["cold"]["hit_rate@1"] == 1.0
    assert "heavy" not in res
