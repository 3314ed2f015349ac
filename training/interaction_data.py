"""Interactions indexed for training: user and item id maps plus the sparse matrices models fit on."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from tlrec.tables import DEFAULT_VALUE, Columns, DataError
from tlrec.training.id_map import IdMap

logger = logging.getLogger(__name__)

__all__ = ["InteractionData", "Weighting"]

#: How interactions become matrix entries: 1 per user-item pair, or log-scaled counts (``InteractionData.weighted``).
Weighting = Literal["binary", "log"]


@dataclass
class InteractionData:
    """Interactions indexed for training: items = the whole catalog (so items
    without interactions have indices).

    ``interactions`` has user_id, item_id, timestamp, event, value plus
    ``user_idx`` and ``item_idx`` (Int64) in ``users`` / ``items``.
    """

    interactions: pl.DataFrame
    users: IdMap
    items: IdMap

    @classmethod
    def build(
        cls, interactions: pl.DataFrame, items: IdMap, users: IdMap | None = None
    ) -> InteractionData:
        """Index ``interactions`` by ``items`` (and ``users``).

        Rows whose item is not in ``items`` (or whose user is not in ``users``,
        when given) are dropped with a warning. Without ``users`` the map is
        built from the remaining rows in order of first appearance (which is
        sorted order for the output of :func:`training.data.load_interactions`).
        """
        C = Columns
        missing = [c for c in (C.USER, C.ITEM) if c not in interactions.columns]
        if missing:
            raise DataError(
                f"interactions missing column(s) {missing} (found: {', '.join(interactions.columns)})"
            )
        df = interactions.drop([c for c in (C.USER_IDX, C.ITEM_IDX) if c in interactions.columns])
        df = df.with_columns(pl.col(C.USER).cast(pl.String), pl.col(C.ITEM).cast(pl.String))
        item_idx = items.to_internal(df[C.ITEM], missing="ignore")
        keep = item_idx >= 0
        n_drop_items = int((~keep).sum())
        if users is not None:
            user_idx = users.to_internal(df[C.USER], missing="ignore")
            keep &= user_idx >= 0
        n_drop = int((~keep).sum())
        if n_drop:
            logger.warning(
                "dropped %d of %d interactions (%d with unknown items, %d with unknown users)",
                n_drop, df.height, n_drop_items, n_drop - n_drop_items,
            )
            df = df.filter(pl.Series(keep))
            item_idx = item_idx[keep]
        if users is None:
            users = IdMap.from_values(df[C.USER])
            user_idx = users.to_internal(df[C.USER])
        else:
            user_idx = user_idx[keep]
        df = df.with_columns(
            pl.Series(C.USER_IDX, user_idx, dtype=pl.Int64),
            pl.Series(C.ITEM_IDX, item_idx, dtype=pl.Int64),
        )
        return cls(interactions=df, users=users, items=items)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def matrix(self, binary: bool = True) -> sp.csr_matrix:
        """User x item matrix, float32 ``[n_users, n_items]``.

        ``binary=True``: 1 wherever the user has any interaction with the item;
        else the sum of ``value`` over the pair's interactions.
        """
        df = self.interactions
        rows = df[Columns.USER_IDX].to_numpy().astype(np.int64, copy=False)
        cols = df[Columns.ITEM_IDX].to_numpy().astype(np.int64, copy=False)
        if binary or Columns.VALUE not in df.columns:
            data = np.ones(len(rows), dtype=np.float32)
        else:
            data = df[Columns.VALUE].cast(pl.Float64).fill_null(DEFAULT_VALUE).to_numpy()
        mat = sp.coo_matrix(
            (data, (rows, cols)), shape=(self.n_users, self.n_items)
        ).tocsr()  # sums duplicates
        mat.sum_duplicates()
        if binary:
            mat.data[:] = 1.0
        return mat.astype(np.float32)

    def weighted(self, weighting: Weighting) -> sp.csr_matrix:
        """User x item matrix float32 ``[n_users, n_items]``: ``"binary"`` 1 per pair, ``"log"`` the pair's
        summed ``value`` as confidence, ``1 + log(max(value, 1))`` (1 for one play, ~3.3 for ten, ~5.6 for 100)."""
        if weighting == "binary":
            return self.matrix(binary=True)
        mat = self.matrix(binary=False)
        mat.data = (1.0 + np.log(np.maximum(mat.data, 1.0))).astype(np.float32)
        return mat

    def has_counts(self) -> bool:
        """True when ``value`` looks like counts with a heavy tail (plays, views): integers >= 0 whose
        per-pair sums reach at least 4x their median at the 99th percentile. Ratings and binary data do not."""
        if Columns.VALUE not in self.interactions.columns or self.interactions.height == 0:
            return False
        values = self.interactions[Columns.VALUE].cast(pl.Float64).fill_null(DEFAULT_VALUE).to_numpy()
        if (values < 0).any() or not np.allclose(values, np.round(values)):
            return False
        sums = self.matrix(binary=False).data
        return bool(np.quantile(sums, 0.99) >= 4 * max(float(np.median(sums)), 1.0))

    def seen(self) -> sp.csr_matrix:
        """Same as ``matrix(binary=True)``: which items each user has interacted with."""
        return self.matrix(binary=True)
