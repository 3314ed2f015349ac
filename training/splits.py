"""Train/test splits that respect time (and a cold-item split for transfer learning).

All splits take the interactions table of :func:`training.data.load_interactions`
(at least ``user_id``, ``item_id``, ``timestamp``) and return frames with the
same columns, rows in input order.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import polars as pl

from tlrec.errors import UsageError
from tlrec.tables import Columns, DataError

logger = logging.getLogger(__name__)

__all__ = ["cold_item_split", "cold_user_split", "global_temporal_split", "leave_last_out", "random_split", "temporal_split"]

_ROW = "__split_row"
# Guards ceil() against float error: 0.1 * 30 == 3.0000000000000004 must give 3.
_EPS = 1e-9


def _check_fraction(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1:
        raise UsageError(f"{name} must be a number with 0 < {name} < 1, got {value!r}")


def _check_columns(df: pl.DataFrame, *cols: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(
            f"interactions missing column(s) {', '.join(missing)} (found: {', '.join(df.columns)})"
        )


def temporal_split(
    interactions: pl.DataFrame, test_fraction: float = 0.2, min_events: int = 2
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-user leave-last-out by time.

    For each user with ``n >= min_events`` events, sorted by timestamp (ties
    keep input order), the last ``ceil(test_fraction * n)`` events go to test,
    but at least one stays in train. Users with fewer events stay in train.

    Returns:
        ``(train, test)``, each with the input columns, rows in input order.

    Raises:
        ValueError: ``test_fraction`` not in (0, 1), ``min_events < 1`` or a
            missing column.
    """
    _check_fraction("test_fraction", test_fraction)
    _check_min_events(min_events)
    n = pl.len().over(Columns.USER)
    n_test = pl.min_horizontal((test_fraction * n - _EPS).ceil().cast(pl.Int64), n - 1)
    train, test = _split_last(interactions, n_test, min_events)
    logger.info("temporal split: %d train / %d test interactions, %d users in test",
                train.height, test.height, test[Columns.USER].n_unique() if test.height else 0)
    return train, test


def leave_last_out(interactions: pl.DataFrame, min_events: int = 2) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each user's last event by time goes to test (users with ``>= min_events`` events; ties keep
    input order): the next-item protocol. Returns ``(train, test)``, rows in input order."""
    _check_min_events(min_events)
    train, test = _split_last(interactions, pl.lit(1, pl.Int64), min_events)
    logger.info("leave-last-out split: %d train / %d test interactions", train.height, test.height)
    return train, test


def _check_min_events(min_events: int) -> None:
    if isinstance(min_events, bool) or not isinstance(min_events, int) or min_events < 1:
        raise ValueError(f"min_events must be an integer >= 1, got {min_events!r}")


def _split_last(interactions: pl.DataFrame, n_test: pl.Expr, min_events: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The last ``n_test`` events by time of each user with ``>= min_events`` events to test."""
    C = Columns
    _check_columns(interactions, C.USER, C.TIMESTAMP)
    n = pl.len().over(C.USER)
    n_test = pl.when(n >= min_events).then(n_test).otherwise(0)
    flagged = (
        interactions.with_row_index(_ROW)
        .sort([C.USER, C.TIMESTAMP, _ROW])
        .with_columns((pl.int_range(pl.len()).over(C.USER) >= n.cast(pl.Int64) - n_test).alias("__test"))
        .sort(_ROW)
    )
    is_test = flagged["__test"]
    cols = interactions.columns
    return flagged.filter(~is_test).select(cols), flagged.filter(is_test).select(cols)


def random_split(
    interactions: pl.DataFrame, test_fraction: float = 0.2, min_events: int = 2, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-user random hold-out: the split to use when time order carries no signal.

    For each user with ``n >= min_events`` events, ``ceil(test_fraction * n)`` events drawn
    at random (a seeded polars hash of user, item and timestamp: independent of row order, stable
    for a given polars version) go to test, at least one
    staying in train; users with fewer events stay in train. Same counts as
    :func:`temporal_split`, so the two can be compared.

    Returns:
        ``(train, test)``, each with the input columns, rows in input order.
    """
    _check_fraction("test_fraction", test_fraction)
    _check_min_events(min_events)
    C = Columns
    _check_columns(interactions, C.USER)
    n = pl.len().over(C.USER)
    n_test = (
        pl.when(n >= min_events)
        .then(pl.min_horizontal((test_fraction * n - _EPS).ceil().cast(pl.Int64), n - 1))
        .otherwise(0)
    )
    # a seeded hash of each event's content: the draw does not depend on row order
    key = [pl.col(c).cast(pl.String) for c in (C.USER, C.ITEM, C.TIMESTAMP) if c in interactions.columns]
    flagged = (
        interactions.with_row_index(_ROW)
        .with_columns(pl.concat_str(key, separator="\x1f").hash(seed=seed).alias("__noise"))
        .sort([C.USER, "__noise", _ROW])
        .with_columns((pl.int_range(pl.len()).over(C.USER) < n_test).alias("__test"))
        .sort(_ROW)
    )
    is_test = flagged["__test"]
    cols = interactions.columns
    train, test = flagged.filter(~is_test).select(cols), flagged.filter(is_test).select(cols)
    logger.info("random split: %d train / %d test interactions, %d users in test",
                train.height, test.height, test[C.USER].n_unique() if test.height else 0)
    return train, test


def cold_item_split(
    interactions: pl.DataFrame, fraction: float = 0.2, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """Hold out a seeded share of items with ALL their interactions (cold-start test).

    ``round(fraction * n_items)`` of the distinct interacted items (at least 1,
    at most ``n_items - 1``) are drawn with ``np.random.default_rng(seed)`` from
    the sorted item ids, so the choice does not depend on row order.

    Returns:
        ``(train, test, cold_item_ids)``: train has no interaction with a cold
        item, test has all of them; ``cold_item_ids`` sorted.

    Raises:
        ValueError: ``fraction`` not in (0, 1), fewer than 2 distinct items, or a
            missing column.
    """
    return _hold_out(interactions, Columns.ITEM, "item", fraction, seed)


def cold_user_split(
    interactions: pl.DataFrame, fraction: float = 0.2, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """Hold out a seeded share of users with ALL their interactions (new users: answered from the
    history they bring). As :func:`cold_item_split`, by user; returns ``(train, test, cold_user_ids)``."""
    return _hold_out(interactions, Columns.USER, "user", fraction, seed)


def _hold_out(interactions: pl.DataFrame, column: str, what: str, fraction: float, seed: int
              ) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    _check_fraction("fraction", fraction)
    _check_columns(interactions, column)
    ids = np.array(sorted(interactions[column].cast(pl.String).unique().to_list()), dtype=object)
    n = len(ids)
    if n < 2:
        raise DataError(f"cold_{what}_split needs at least 2 distinct {what}s, got {n}")
    n_cold = min(max(1, math.floor(fraction * n + 0.5)), n - 1)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(n, size=n_cold, replace=False)
    cold = sorted(ids[chosen].tolist())
    is_cold = interactions[column].cast(pl.String).is_in(pl.Series(cold, dtype=pl.String).implode())
    train = interactions.filter(~is_cold)
    test = interactions.filter(is_cold)
    logger.info("cold-%s split: %d of %d %ss cold, %d train / %d test interactions",
                what, n_cold, n, what, train.height, test.height)
    return train, test, cold


def global_temporal_split(
    interactions: pl.DataFrame, test_fraction: float = 0.2
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split at one global time cutoff: the ``1 - test_fraction`` quantile of timestamps.

    Events at or after the cutoff go to test. If that would leave train empty
    (many events share the earliest timestamp) only events strictly after the
    cutoff go to test; if all timestamps are equal, test is empty (with a warning).

    Returns:
        ``(train, test)``, rows in input order.
    """
    _check_fraction("test_fraction", test_fraction)
    C = Columns
    _check_columns(interactions, C.TIMESTAMP)
    ts = interactions[C.TIMESTAMP]
    if ts.len() == 0:
        return interactions.clear(), interactions.clear()
    cutoff = ts.quantile(1 - test_fraction, interpolation="higher")
    is_test = ts >= cutoff
    if bool(is_test.all()):
        is_test = ts > cutoff
    if not bool(is_test.any()):
        logger.warning("global temporal split: all timestamps equal (%s); test is empty", cutoff)
    train = interactions.filter(~is_test)
    test = interactions.filter(is_test)
    logger.info(
        "global temporal split at %s: %d train / %d test interactions",
        cutoff, train.height, test.height,
    )
    return train, test
