"""Ranking metrics on a small example worked out by hand.

Users (k = 3):
  u1: rec [a, x, b, y, z], rel {a, b, c}  -> top3 [a, x, b], hits at ranks 1 and 3
      recall 2/3, precision 2/3, hit 1
      ndcg = (1 + 1/log2 4) / (1 + 1/log2 3 + 1/log2 4) = (1 + 0.5) / (1 + 0.6309 + 0.5) = 0.70392
      AP = (1/min(3,3)) * (1/1 + 2/3) = 5/9
  u2: rec [p, q], rel {q}                 -> list shorter than k; hit at rank 2
      recall 1, precision 1/3, hit 1, ndcg = (1/log2 3) / 1 = 0.63093, AP = (1/1) * (1/2) = 1/2
  u3: rec [a], rel {}                     -> skipped (no relevant items)
  u4: rec [m, n, o], rel {z}              -> all zero
Means over u1, u2, u4:
  recall (2/3 + 1 + 0)/3 = 5/9; precision (2/3 + 1/3 + 0)/3 = 1/3; hit rate 2/3
  ndcg (0.70392 + 0.63093)/3 = 0.44495; map (5/9 + 1/2)/3 = 19/54
Coverage@3 with 20 items: distinct in top-3 lists {a,x,b,p,q,m,n,o} = 8 -> 0.4
"""

from __future__ import annotations

import math

import polars as pl
import pytest

from tlrec.tables import Columns
from tlrec.training.metrics import (
    catalog_coverage,
    evaluate_rankings,
    hit_rate_at_k,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)

REC = [["a", "x", "b", "y", "z"], ["p", "q"], ["a"], ["m", "n", "o"]]
REL = [{"a", "b", "c"}, {"q"}, set(), {"z"}]

NDCG_U1 = (1 + 0.5) / (1 + 1 / math.log2(3) + 0.5)
NDCG_U2 = 1 / math.log2(3)


def test_known_answers() -> None:
    assert NDCG_U1 == pytest.approx(0.70392, abs=1e-5)
    assert recall_at_k(REC, REL, 3) == pytest.approx(5 / 9)
    assert precision_at_k(REC, REL, 3) == pytest.approx(1 / 3)
    assert hit_rate_at_k(REC, REL, 3) == pytest.approx(2 / 3)
    assert ndcg_at_k(REC, REL, 3) == pytest.approx((NDCG_U1 + NDCG_U2) / 3)
    assert ndcg_at_k(REC, REL, 3) == pytest.approx(0.44495, abs=1e-5)
    assert map_at_k(REC, REL, 3) == pytest.approx(19 / 54)
    assert catalog_coverage(REC, n_items=20, k=3) == pytest.approx(0.4)


def test_single_user_cases() -> None:
    # k = 1: u1's top1 is a hit
    assert recall_at_k([REC[0]], [REL[0]], 1) == pytest.approx(1.0)  # 1 hit / min(3 relevant, k=1)
    assert ndcg_at_k([REC[0]], [REL[0]], 1) == pytest.approx(1.0)
    assert map_at_k([REC[0]], [REL[0]], 1) == pytest.approx(1.0)  # (1/min(3,1)) * 1
    # k larger than the list: missing slots are misses, precision still divides by k
    assert precision_at_k([["q"]], [{"q"}], 10) == pytest.approx(0.1)
    assert recall_at_k([["q"]], [{"q"}], 10) == pytest.approx(1.0)
    assert ndcg_at_k([["q"]], [{"q"}], 10) == pytest.approx(1.0)
    # perfect ranking of 2 relevant items
    assert ndcg_at_k([["a", "b", "c"]], [{"a", "b"}], 3) == pytest.approx(1.0)
    assert map_at_k([["a", "b", "c"]], [{"a", "b"}], 3) == pytest.approx(1.0)
    # a repeated item counts once
    assert recall_at_k([["a", "a", "a"]], [{"a", "b"}], 3) == pytest.approx(0.5)
    # empty recommendation list
    assert hit_rate_at_k([[]], [{"a"}], 5) == 0.0


def test_no_relevant_users_gives_zero() -> None:
    assert recall_at_k([["a"], ["b"]], [set(), []], 5) == 0.0


@pytest.mark.parametrize("fn", [recall_at_k, precision_at_k, hit_rate_at_k, ndcg_at_k, map_at_k])
def test_validation(fn) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="k must"):
        fn(REC, REL, 0)
    with pytest.raises(ValueError, match="k must"):
        fn(REC, REL, 2.5)
    with pytest.raises(ValueError, match="same length"):
        fn(REC, REL[:2], 3)
    with pytest.raises(ValueError):
        catalog_coverage(REC, n_items=10, k=0)
    with pytest.raises(ValueError):
        catalog_coverage(REC, n_items=0, k=3)


def test_evaluate_rankings() -> None:
    test = pl.DataFrame(
        {
            Columns.USER: ["u1", "u1", "u1", "u2", "u4", "u5", "u1"],
            Columns.ITEM: ["a", "b", "c", "q", "z", "k", "a"],  # duplicate (u1, a) counts once
        }
    )
    recommended = {"u1": REC[0], "u2": REC[1], "u3": REC[2], "u4": REC[3]}  # u5 missing -> misses
    out = evaluate_rankings(recommended, test, ks=(3,), n_items=20)
    assert set(out) == {
        "recall@3", "ndcg@3", "hit_rate@3", "map@3", "coverage@3", "users",
    }
    assert out["users"] == 4  # u1, u2, u4, u5
    # same sums as the module docstring, now over 4 users
    assert out["recall@3"] == pytest.approx((2 / 3 + 1) / 4)
    assert out["hit_rate@3"] == pytest.approx(2 / 4)
    assert out["ndcg@3"] == pytest.approx((NDCG_U1 + NDCG_U2) / 4)
    assert out["map@3"] == pytest.approx((5 / 9 + 1 / 2) / 4)
    assert out["coverage@3"] == pytest.approx(0.4)

    default = evaluate_rankings(recommended, test)
    assert "recall@10" in default and "ndcg@20" in default and "coverage@10" not in default
    with pytest.raises(ValueError):
        evaluate_rankings(recommended, test, ks=(0,))
