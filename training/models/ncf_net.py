"""The NCF network (``NCFNet``: item and user towers, ranking head) and the inputs it reads.

``UserHistories`` holds every user's training items in time order, ``recency_weights`` weighs
a history by position, ``row_normalised`` makes the sparse L2-normalised history rows the user
tower takes. The model around the network is ``ncf.NCFModel``; its training, ``ncf_fit``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from torch import nn

from tlrec.tables import Columns
from tlrec.training.interaction_data import InteractionData

if TYPE_CHECKING:
    from tlrec.training.models.ncf import NCFConfig

__all__ = ["NCFNet", "UserHistories", "native_bf16", "recency_weights", "row_normalised"]


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 matrix products in hardware (avx512_bf16 or AMX tiles)."""
    cpu = torch.cpu
    checks = (getattr(cpu, "_is_avx512_bf16_supported", None), getattr(cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in checks)


class NCFNet(nn.Module):
    """Towers and ranking head over ``n_items`` items (content ``[n_items, c]`` or ``None``)."""

    def __init__(self, n_items: int, content: torch.Tensor | None, cfg: NCFConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.dim = d
        # above full_softmax_items a step's softmax runs over a sample of the items: sparse gradients
        # (and a lazy Adam, ``ncf_fit.NetAdam``), so a step costs the rows it touches, not the catalog
        sparse = n_items > cfg.full_softmax_items
        self.item_emb = nn.Embedding(n_items, d + 1, sparse=sparse)  # output side, last unit the bias
        self.hist_emb = nn.Embedding(n_items, d, sparse=sparse)  # input side
        nn.init.normal_(self.item_emb.weight, std=0.05)
        nn.init.normal_(self.hist_emb.weight, std=0.05)
        self.hist_bias = nn.Parameter(torch.zeros(d))
        self.register_buffer("content", content if content is not None else torch.zeros(n_items, 0))
        self.register_buffer("seen_mask", torch.ones(n_items))
        c = self.content.shape[1]
        # content -> hidden layer -> output + input vectors, added to the ids' (warm items)
        self.content_hidden = (
            nn.Sequential(nn.Linear(c, cfg.content_hidden), nn.GELU()) if c > 0 else None
        )
        self.warm_out = nn.Linear(cfg.content_hidden, 2 * d + 1) if c > 0 else None
        # new items' output vectors from content alone, trained afterwards to land where ids put warm items
        self.cold = (
            nn.Sequential(nn.Linear(c, cfg.content_hidden), nn.GELU(), nn.Linear(cfg.content_hidden, d + 1))
            if c > 0
            else None
        )
        self.head = nn.Sequential(nn.Linear(d, cfg.head_hidden), nn.ReLU(), nn.Linear(cfg.head_hidden, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        # what new items are served with: the new-item tower, blended with their content neighbours'
        # learned vectors (set after training; until then the tower alone)
        self.register_buffer("new_item_vecs", torch.zeros(n_items, d + 1 if c > 0 else 0))
        self.register_buffer("new_items_ready", torch.zeros(()))
        self.register_buffer("head_on", torch.ones(()))  # 0 when validation found the head did not help
        self.register_buffer("half_life", torch.zeros(()))  # recency half-life in items; 0 = none
        # the content layers' products in bfloat16 while training (``NCFConfig.bf16``)
        self.train_bf16 = native_bf16() if cfg.bf16 == "auto" else bool(cfg.bf16)

    def items(self, items: torch.Tensor, id_keep: torch.Tensor | None = None,
              content: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Output and input vectors of ``items`` (int64 ``[m]``): ``q [m, d + 1]`` and ``v [m, d]``.

        ``id_keep`` (``[m]`` 0/1) overrides the seen mask (item-id dropout while training). An
        item without its id (new, or dropped) gets the new-item output vector, from content
        alone (computed for those rows only). ``content`` (``[n_items, c]``) replaces the stored
        content (fine-tuning passes fresh rows).
        """
        keep = (self.seen_mask[items] if id_keep is None else id_keep)[:, None]
        q = self.item_emb(items) * keep
        v = self.hist_emb(items) * keep
        if self.content_hidden is not None and self.warm_out is not None and self.cold is not None:
            rows = (self.content if content is None else content)[items]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.training and self.train_bf16):
                c = self.warm_out(self.content_hidden(rows)).float()
            q = q + c[:, : self.dim + 1]
            v = v + c[:, self.dim + 1 :]
            without_id = torch.nonzero(keep[:, 0] == 0).squeeze(1)
            if len(without_id):
                q_new = (self.new_item_vecs[items[without_id]] if bool(self.new_items_ready)
                         else self.cold(rows[without_id]))
                q = q.index_copy(0, without_id, q_new)
        return q, v

    def users(self, history: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``[b, d + 1]`` from ``history`` (sparse ``[b, m]``, rows L2-normalised) over input vectors ``v [m, d]``."""
        h = torch.sparse.mm(history, v) if history.is_sparse else history @ v
        p = torch.tanh(h + self.hist_bias)
        return torch.cat([p, torch.ones_like(p[:, :1])], dim=1)

    def head_score(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Ranking-head term for broadcastable ``p [..., d+1]`` and ``q [..., d+1]`` (0 when switched off)."""
        return self.head(p[..., :-1] * q[..., :-1]).squeeze(-1) * self.head_on


class UserHistories:
    """Every user's training items, oldest first (repeats collapsed to their last time).

    ``indptr`` int64 ``[n_users + 1]`` and ``items`` int64 ``[nnz]`` in csr layout;
    only the most recent ``max_history`` items of a user are kept.
    """

    def __init__(self, data: InteractionData, max_history: int) -> None:
        df = (
            data.interactions.select(Columns.USER_IDX, Columns.ITEM_IDX, Columns.TIMESTAMP)
            .group_by(Columns.USER_IDX, Columns.ITEM_IDX)
            .agg(pl.col(Columns.TIMESTAMP).max())
            .sort(Columns.USER_IDX, Columns.TIMESTAMP, Columns.ITEM_IDX)
            .with_columns(pl.int_range(pl.len()).reverse().over(Columns.USER_IDX).alias("_from_end"))
            .filter(pl.col("_from_end") < max_history)
        )
        users = df[Columns.USER_IDX].to_numpy().astype(np.int64)
        self.items = df[Columns.ITEM_IDX].to_numpy().astype(np.int64)
        self.indptr = np.zeros(data.n_users + 1, np.int64)
        np.add.at(self.indptr, users + 1, 1)
        np.cumsum(self.indptr, out=self.indptr)
        self.n_users, self.n_items = data.n_users, data.n_items
        self._matrices: dict[float | None, sp.csr_matrix] = {}

    def matrix(self, half_life: float | None = None) -> sp.csr_matrix:
        """csr float32 ``[n_users, n_items]`` (indices oldest first): 1 per item, or ``recency_weights`` with
        ``half_life``. Built once per half-life (validation asks for each often); do not modify it."""
        if half_life not in self._matrices:
            weights = np.concatenate([recency_weights(int(n), half_life) for n in np.diff(self.indptr)]) \
                if len(self.items) else np.ones(0, np.float32)
            self._matrices[half_life] = sp.csr_matrix((weights, self.items, self.indptr),
                                                      shape=(self.n_users, self.n_items))
        return self._matrices[half_life]


def recency_weights(n: int, half_life: float | None) -> np.ndarray:
    """float32 ``[n]`` weights of a history listed oldest first: the newest 1, halving every ``half_life`` items."""
    if not half_life:
        return np.ones(n, np.float32)
    return np.power(0.5, np.arange(n - 1, -1, -1) / half_life).astype(np.float32)


def row_normalised(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int,
                   weights: np.ndarray | None = None) -> torch.Tensor:
    """Sparse float32 ``[n_rows, n_cols]`` whose rows have unit L2 norm (empty rows stay zero)."""
    w = np.ones(len(rows), np.float32) if weights is None else np.asarray(weights, np.float32)
    totals = np.sqrt(np.bincount(rows, weights=w * w, minlength=n_rows)).astype(np.float32)
    values = w / np.maximum(totals[rows], 1e-12)
    index = torch.from_numpy(np.vstack([rows, cols]).astype(np.int64))
    return torch.sparse_coo_tensor(index, torch.from_numpy(values), (n_rows, n_cols), check_invariants=False).coalesce()
