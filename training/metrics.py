"""Ranking metrics (pure numpy / Python, known answers in tests/training/test_metrics.py).

Conventions for every ``*_at_k`` metric:

* ``recommended[u]`` is user u's ranked list, best first; only its first ``k``
  entries count. A list shorter than ``k`` is fine (missing slots are misses).
* ``relevant[u]`` is the set of user u's relevant items. Users with no relevant
  item are skipped; the result is the mean over the remaining users (0.0 if none).
* An item repeated in a list counts as a hit only at its first position.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
import polars as pl

from tlrec.tables import Columns

logger = logging.getLogger(__name__)

__all__ = [
    "bootstrap_diff",
    "catalog_coverage",
    "evaluate_rankings",
    "hit_rate_at_k",
    "map_at_k",
    "MRR_DEPTH",
    "ndcg_at_k",
    "ndcg_per_user",
    "next_item_metrics",
    "precision_at_k",
    "recall_at_k",
]


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")


def _hits(rec: Sequence[Any], rel: Collection[Any], k: int) -> np.ndarray:
    """Bool array ``[min(k, len(rec))]``: True where ``rec[i]`` is relevant (first occurrence)."""
    seen: set[Any] = set()
    out = np.zeros(min(k, len(rec)), dtype=bool)
    for i, item in enumerate(rec[:k]):
        if item in rel and item not in seen:
            out[i] = True
        seen.add(item)
    return out


def _mean_over_users(
    recommended: Sequence[Sequence[Any]],
    relevant: Sequence[Collection[Any]],
    k: int,
    per_user: Callable[[np.ndarray, int], float],
) -> float:
    """Mean of ``per_user(hits, n_relevant)`` over users with >= 1 relevant item."""
    _check_k(k)
    if len(recommended) != len(relevant):
        raise ValueError(
            f"recommended and relevant must have the same length, got {len(recommended)} "
            f"and {len(relevant)}"
        )
    total, n = 0.0, 0
    for rec, rel in zip(recommended, relevant):
        rel_set = rel if isinstance(rel, (set, frozenset)) else set(rel)
        if not rel_set:
            continue
        total += per_user(_hits(rec, rel_set, k), len(rel_set))
        n += 1
    return float(total / n) if n else 0.0


def recall_at_k(
    recommended: Sequence[Sequence[Any]], relevant: Sequence[Collection[Any]], k: int
) -> float:
    """Mean of ``|top_k ∩ rel| / min(|rel|, k)``.

    The denominator is capped at k (as in Steck's EASE and Liang et al.'s VAE-CF
    evaluations), so a perfect top-k list scores 1 even when a user has more than k
    relevant items.
    """
    return _mean_over_users(recommended, relevant, k, lambda h, r: h.sum() / min(r, k))


def precision_at_k(
    recommended: Sequence[Sequence[Any]], relevant: Sequence[Collection[Any]], k: int
) -> float:
    """Mean of ``|top_k ∩ rel| / k`` (k, not the list length, is the denominator)."""
    return _mean_over_users(recommended, relevant, k, lambda h, r: h.sum() / k)


def hit_rate_at_k(
    recommended: Sequence[Sequence[Any]], relevant: Sequence[Collection[Any]], k: int
) -> float:
    """Share of users with at least one relevant item in the top k."""
    return _mean_over_users(recommended, relevant, k, lambda h, r: float(h.any()))


def _ndcg(hits: np.ndarray, n_rel: int, k: int) -> float:
    discounts = 1.0 / np.log2(np.arange(2, k + 2))  # rank 1..k -> 1/log2(rank+1)
    dcg = float(discounts[: len(hits)][hits].sum())
    idcg = float(discounts[: min(n_rel, k)].sum())
    return dcg / idcg


def ndcg_at_k(
    recommended: Sequence[Sequence[Any]], relevant: Sequence[Collection[Any]], k: int
) -> float:
    """Mean NDCG@k with binary gains: DCG = sum over hits of 1/log2(rank+1), IDCG over min(|rel|, k)."""
    return _mean_over_users(recommended, relevant, k, lambda h, r: _ndcg(h, r, k))


def ndcg_per_user(
    recommended: Sequence[Sequence[Any]], relevant: Sequence[Collection[Any]], k: int
) -> np.ndarray:
    """NDCG@k of each user, float64 ``[n]`` (0 for a user with no relevant item): what ``ndcg_at_k`` averages."""
    _check_k(k)
    return np.array([_ndcg(_hits(rec, rel, k), len(rel), k) if rel else 0.0
                     for rec, rel in zip(recommended, relevant, strict=True)], np.float64)


#: Resamples of users behind every bootstrap interval.
BOOTSTRAP_DRAWS = 1000


def bootstrap_diff(a: np.ndarray, b: np.ndarray, seed: int = 0, draws: int = BOOTSTRAP_DRAWS) -> tuple[float, float, float]:
    """Mean of ``a - b`` (paired, ``[n]``) and its percentile 95% interval over resampled users."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if len(d) == 0:
        return 0.0, 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(draws, len(d)))].mean(axis=1)
    return float(d.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def _ap(hits: np.ndarray, n_rel: int, k: int) -> float:
    if not hits.any():
        return 0.0
    ranks = np.flatnonzero(hits) + 1  # 1-based positions of hits
    precisions = np.arange(1, len(ranks) + 1) / ranks  # precision at each hit position
    return float(precisions.sum()) / min(n_rel, k)


def map_at_k(
    recommended: Sequence[Sequence[Any]], relevant: Sequence[Collection[Any]], k: int
) -> float:
    """Mean AP@k, AP@k = (1 / min(|rel|, k)) * sum over hit positions i of precision@i."""
    return _mean_over_users(recommended, relevant, k, lambda h, r: _ap(h, r, k))


def catalog_coverage(recommended: Sequence[Sequence[Any]], n_items: int, k: int) -> float:
    """Distinct items across all top-k lists / ``n_items``."""
    _check_k(k)
    if isinstance(n_items, bool) or not isinstance(n_items, (int, np.integer)) or n_items < 1:
        raise ValueError(f"n_items must be an integer >= 1, got {n_items!r}")
    distinct: set[Any] = set()
    for rec in recommended:
        distinct.update(rec[:k])
    return len(distinct) / n_items


_METRICS: dict[str, Callable[[Sequence[Sequence[Any]], Sequence[Collection[Any]], int], float]] = {
    "recall": recall_at_k,
    "ndcg": ndcg_at_k,
    "hit_rate": hit_rate_at_k,
    "map": map_at_k,
}


def evaluate_rankings(
    recommended: dict[str, Sequence[str]],
    test: pl.DataFrame,
    ks: Sequence[int] = (10, 20),
    n_items: int | None = None,
) -> dict[str, float]:
    """All ranking metrics for users in ``test``.

    Args:
        recommended: external user id -> ranked external item ids, best first.
        test: held-out interactions with ``user_id`` and ``item_id``; each test
            user's relevant set is their distinct test items.
        ks: cut-offs.
        n_items: catalog size; when given, ``coverage@k`` is computed over every
            list in ``recommended``.

    Returns:
        ``{"recall@10", "ndcg@10", "hit_rate@10", "map@10", ["coverage@10"], ...,
        "users"}`` (the contract's keys; use :func:`precision_at_k` directly if
        needed). Test users missing from ``recommended`` count as zero hits;
        ``users`` is the number of users evaluated.
    """
    ks = list(ks)
    if not ks:
        raise ValueError("ks must name at least one cut-off")
    for k in ks:
        _check_k(k)
    C = Columns
    missing = [c for c in (C.USER, C.ITEM) if c not in test.columns]
    if missing:
        raise ValueError(f"test missing column(s) {', '.join(missing)} (found: {', '.join(test.columns)})")
    grouped = (
        test.select(pl.col(C.USER).cast(pl.String), pl.col(C.ITEM).cast(pl.String))
        .drop_nulls()
        .group_by(C.USER)
        .agg(pl.col(C.ITEM).unique())
        .sort(C.USER)
    )
    users = grouped[C.USER].to_list()
    relevant = [set(items) for items in grouped[C.ITEM].to_list()]
    recs = [list(recommended.get(u, ())) for u in users]
    n_missing = sum(1 for u in users if u not in recommended)
    if n_missing:
        logger.warning("%d of %d test users have no recommendations (counted as misses)",
                       n_missing, len(users))
    out: dict[str, float] = {}
    for k in ks:
        for name, fn in _METRICS.items():
            out[f"{name}@{k}"] = fn(recs, relevant, k)
        if n_items is not None:
            out[f"coverage@{k}"] = catalog_coverage(
                [list(v) for v in recommended.values()], n_items, k
            )
    out["users"] = len(users)
    return out


#: MRR counts a target found within this many items (``next_item_metrics``).
MRR_DEPTH = 100


def next_item_metrics(recommended: dict[str, Sequence[Any]], targets: dict[str, Any],
                      ks: Sequence[int] = (10,)) -> dict[str, float]:
    """Next-item metrics over the users of ``targets`` (user -> the one held-out next item).

    ``recommended``: user -> ranked items (at least ``max(ks)``, ideally ``MRR_DEPTH`` long).
    Returns ``hit_rate@k`` and ``ndcg@k`` for each ``k``, ``mrr`` (1/rank of the target
    within the first ``MRR_DEPTH`` items, else 0) and ``users``. A user missing from
    ``recommended`` counts as a miss.
    """
    for k in ks:
        _check_k(k)
    ranks = np.array([_rank_of(recommended.get(u, ()), t) for u, t in targets.items()], np.float64)  # 0 = missed
    out: dict[str, float] = {}
    for k in ks:
        found = (ranks > 0) & (ranks <= k)
        out[f"hit_rate@{k}"] = float(found.mean()) if len(ranks) else 0.0
        out[f"ndcg@{k}"] = float(np.where(found, 1.0 / np.log2(np.maximum(ranks, 1) + 1), 0.0).mean()) if len(ranks) else 0.0
    within = (ranks > 0) & (ranks <= MRR_DEPTH)
    out["mrr"] = float(np.where(within, 1.0 / np.maximum(ranks, 1), 0.0).mean()) if len(ranks) else 0.0
    out["users"] = float(len(ranks))
    return out


def _rank_of(ranked: Sequence[Any], target: Any) -> int:
    """1-based position of ``target`` in ``ranked`` (0 when absent)."""
    for i, item in enumerate(ranked, 1):
        if item == target:
            return i
    return 0
