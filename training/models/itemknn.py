"""ItemKNN: cosine item-item similarity on the binary user x item matrix.

``sim[i, j] = |U_i ∩ U_j| / (sqrt(|U_i|) * sqrt(|U_j|) + shrinkage)`` where ``U_i`` is the
set of users who interacted with item ``i``; the diagonal is zero. Each item keeps
only its ``neighbors`` most similar items (row-wise top-k, as ``implicit``'s
``ItemItemRecommender`` does), so the matrix is sparse and ``n_items * neighbors``
at most. A user's score for item ``j`` is ``sum_i x_ui * sim[i, j]`` (``X_u @ sim``).

The similarity is computed in blocks of item rows (a dense ``[block, n_items]``
slab at a time, 64 MB plus temporaries), so memory stays bounded for any catalog
size; the stored result is always the sparse top-k matrix.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from tlrec.training.interaction_data import InteractionData
from tlrec.training.models.base import ModelConfig, Recommender
from tlrec.training.validation import ValidationSplit

logger = logging.getLogger(__name__)

_BLOCK_FLOATS = 1 << 24  # a dense similarity block holds at most this many float32 (64 MB)


class ItemKNNConfig(ModelConfig):
    """``neighbors``: similar items kept per item; ``shrinkage``: added to the cosine denominator."""

    neighbors: int = Field(default=100, ge=1)
    shrinkage: float = Field(default=0.0, ge=0.0)


def item_similarity(matrix: sp.csr_matrix, neighbors: int, shrinkage: float = 0.0) -> sp.csr_matrix:
    """Top-``neighbors`` cosine similarity per item row, float32 CSR ``[n_items, n_items]``.

    ``matrix`` is a binary user x item CSR ``[n_users, n_items]``. Only positive
    similarities are kept; the diagonal is zero.
    """
    x = matrix.tocsc().astype(np.float32)
    n_items = x.shape[1]
    counts = np.asarray(x.sum(axis=0)).ravel().astype(np.float32)
    norms = np.sqrt(counts)
    xt = x.T.tocsr()  # [n_items, n_users]
    block = max(1, min(n_items, _BLOCK_FLOATS // max(n_items, 1)))
    keep = min(neighbors, max(n_items - 1, 0))
    rows, cols, vals = [], [], []
    for start in range(0, n_items, block):
        stop = min(start + block, n_items)
        co = (xt[start:stop] @ x).toarray()  # [b, n_items] co-occurrence counts
        denom = norms[start:stop, None] * norms[None, :] + shrinkage
        with np.errstate(divide="ignore", invalid="ignore"):
            sim = np.where(denom > 0, co / np.where(denom > 0, denom, 1.0), 0.0).astype(np.float32)
        sim[np.arange(stop - start), np.arange(start, stop)] = 0.0
        if keep == 0:
            continue
        if keep < n_items:
            top = np.argpartition(-sim, keep - 1, axis=1)[:, :keep]
        else:
            top = np.tile(np.arange(n_items), (stop - start, 1))
        top_vals = np.take_along_axis(sim, top, axis=1)
        r = np.repeat(np.arange(start, stop), top.shape[1]).reshape(top.shape)
        ok = top_vals > 0
        rows.append(r[ok])
        cols.append(top[ok])
        vals.append(top_vals[ok])
    if rows:
        out = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n_items, n_items), dtype=np.float32,
        )
    else:
        out = sp.csr_matrix((n_items, n_items), dtype=np.float32)
    out.sort_indices()
    return out


class ItemKNNModel(Recommender):
    """Item-based collaborative filtering with sparse top-k cosine neighbours."""

    name = "itemknn"
    config_class = ItemKNNConfig
    recommends_from_history = True

    config: ItemKNNConfig

    def __init__(self, config: ItemKNNConfig | None = None) -> None:
        super().__init__(config)
        self.similarity: sp.csr_matrix | None = None
        self.user_items: sp.csr_matrix | None = None

    def _fit(self, data: InteractionData, item_vectors: np.ndarray | None,
             validation: ValidationSplit | None = None) -> None:
        self.user_items = data.matrix(binary=True)
        self.similarity = item_similarity(self.user_items, self.config.neighbors, self.config.shrinkage)
        logger.info("itemknn: %d items, %d similarity entries (<= %d per item)",
                    self.n_items, self.similarity.nnz, self.config.neighbors)

    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        assert self.similarity is not None and self.user_items is not None
        sim = self.similarity if item_idx is None else self.similarity[:, item_idx]
        return np.asarray((self.user_items[user_idx] @ sim).toarray(), dtype=np.float32)

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        assert self.similarity is not None
        sim = self.similarity if item_idx is None else self.similarity[:, item_idx]
        return np.asarray((history @ sim).toarray(), dtype=np.float32)

    def _state(self) -> dict[str, torch.Tensor]:
        assert self.similarity is not None and self.user_items is not None
        s, x = self.similarity, self.user_items
        return {
            "sim_indptr": torch.from_numpy(s.indptr.astype(np.int64)),
            "sim_indices": torch.from_numpy(s.indices.astype(np.int64)),
            "sim_data": torch.from_numpy(s.data.astype(np.float32)),
            "user_indptr": torch.from_numpy(x.indptr.astype(np.int64)),
            "user_indices": torch.from_numpy(x.indices.astype(np.int64)),
        }

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        from tlrec.training.artifacts import checked_csr, tensor_array

        n = self.n_items
        self.similarity = checked_csr(
            tensor_array(state, "sim_indptr", "int64"), tensor_array(state, "sim_indices", "int64"),
            tensor_array(state, "sim_data", "float32"), (n, n), "sim_indptr/sim_indices/sim_data",
        )
        self.user_items = checked_csr(
            tensor_array(state, "user_indptr", "int64"), tensor_array(state, "user_indices", "int64"), None,
            (self.n_users, n), "user_indptr/user_indices",
        )
