"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data").

Closed form on the binary user x item matrix ``X``::

    G = X^T X + l2 * I,   P = G^-1,   B = -P / diag(P)  (column j divided by P_jj),   diag(B) = 0
    score(u) = X_u @ B

Only items with at least one training interaction ("active" items) enter ``G``:
for an item with none, the closed form gives a zero column of ``B`` anyway, so its
score is exactly 0 and it costs nothing. ``B`` is dense ``[n_active, n_active]``
float32 (``4 * n_active^2`` bytes; the fit needs about three float64 copies of that
transiently), so ``n_active`` is bounded by ``max_items`` (ValueError above it).

``l2=None`` tunes the regulariser: each value of ``l2_grid`` is fitted on a per-user
temporal split of the training data (``training.splits.temporal_split``, the last
``val_fraction`` of each user's events held out) and scored by NDCG@10 of the held-out
events with seen items excluded; the best value is refitted on all the data. The
choice is logged and kept as ``model.l2_`` (with every grid score in ``model.tuning_``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from pydantic import Field
from scipy.linalg import lapack

from tlrec.errors import ConfigError
from tlrec.training.interaction_data import InteractionData
from tlrec.training.metrics import ndcg_at_k
from tlrec.training.models.base import ModelConfig, Recommender, relevant_by_user, top_k
from tlrec.training.splits import temporal_split

logger = logging.getLogger(__name__)


class EASEConfig(ModelConfig):
    """``l2``: the ridge weight (None = tune over ``l2_grid``); ``max_items`` bounds the dense matrix."""

    l2: float | None = Field(default=None, gt=0)
    l2_grid: list[float] = Field(default_factory=lambda: [50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0], min_length=1)
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    max_items: int = Field(default=30_000, ge=1)


def gram_matrix(matrix: sp.spmatrix) -> np.ndarray:
    """``X^T X`` as dense float64 ``[n, n]`` for a sparse ``X`` ``[m, n]``, built in column blocks
    (so the sparse intermediate never holds more than about 16M entries)."""
    x = sp.csc_matrix(matrix, dtype=np.float64)
    xt = x.T.tocsr()
    n = x.shape[1]
    gram = np.empty((n, n), dtype=np.float64)
    block = max(1, (1 << 24) // max(n, 1))
    for start in range(0, n, block):
        stop = min(start + block, n)
        gram[:, start:stop] = (xt @ x[:, start:stop]).toarray()
    return gram


def ease_solve(gram: np.ndarray, l2: float) -> np.ndarray:
    """``B`` float32 ``[n, n]`` from a Gram matrix (not modified): Cholesky inverse in float64."""
    g = np.array(gram, dtype=np.float64, order="F")  # Fortran order: LAPACK works in place
    g[np.diag_indices_from(g)] += l2
    chol, info = lapack.dpotrf(g, lower=0, clean=1, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"ease: Cholesky failed (info={info}) for l2={l2}")
    del g
    p, info = lapack.dpotri(chol, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"ease: inversion failed (info={info}) for l2={l2}")
    del chol
    # dpotri fills the upper triangle; the lower one is zero (clean=1): mirror it.
    p += np.triu(p, 1).T
    d = np.diag(p).copy()
    p /= -d[None, :]  # column j divided by -P_jj
    p[np.diag_indices_from(p)] = 0.0
    return p.astype(np.float32)


def ease_weights(matrix: sp.spmatrix, l2: float) -> np.ndarray:
    """The EASE item-item matrix ``B`` float32 ``[n, n]`` for a user x item matrix ``[m, n]``."""
    return ease_solve(gram_matrix(matrix), l2)


def holdout_ndcg(
    score_fn: Callable[[np.ndarray], np.ndarray],
    fit_data: InteractionData,
    val: pl.DataFrame,
    k: int = 10,
    max_users: int = 2000,
    seed: int = 0,
) -> float:
    """NDCG@k on held-out events ``val`` of scores ``score_fn(users) -> [n, n_items]``.

    Items seen in ``fit_data`` are excluded; at most ``max_users`` users (a seeded
    sample) are scored, 512 at a time.
    """
    rel = relevant_by_user(val, fit_data)
    if not rel:
        return 0.0
    users = np.fromiter(rel.keys(), dtype=np.int64)
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    seen = fit_data.seen()
    recs: list[list[int]] = []
    all_items = np.arange(fit_data.n_items)
    for s in range(0, len(users), 512):
        chunk = users[s : s + 512]
        scores = np.array(score_fn(chunk), dtype=np.float32, copy=True)
        mask = seen[chunk].tocoo()
        scores[mask.row, mask.col] = -np.inf
        items, _ = top_k(scores, k, all_items)
        recs.extend(r.tolist() for r in items)
    return ndcg_at_k(recs, [rel[int(u)] for u in users], k)


class EASEModel(Recommender):
    """EASE: a closed-form linear item-item autoencoder, tuned ``l2`` by default."""

    name = "ease"
    config_class = EASEConfig
    recommends_from_history = True

    config: EASEConfig

    def __init__(self, config: EASEConfig | None = None) -> None:
        super().__init__(config)
        self.weights: np.ndarray | None = None  # B, [n_active, n_active]
        self.active: np.ndarray | None = None  # item ids of B's rows/columns
        self.user_items: sp.csr_matrix | None = None  # [n_users, n_active] binary
        self.l2_: float | None = None
        self.tuning_: dict[float, float] = {}

    # ------------------------------------------------------------------ fit
    def _fit(self, data: InteractionData, item_vectors: np.ndarray | None) -> None:
        cfg = self.config
        matrix = data.matrix(binary=True)
        active = np.flatnonzero(np.asarray(matrix.sum(axis=0)).ravel() > 0)
        self._check_size(len(active))
        l2 = cfg.l2 if cfg.l2 is not None else self._tune(data)
        self.weights = ease_weights(matrix[:, active], float(l2))
        self.active = active
        self.user_items = matrix[:, active].tocsr()
        self.l2_ = float(l2)

    def _check_size(self, n_active: int) -> None:
        if n_active > self.config.max_items:
            gb = 4 * n_active**2 / 1e9
            raise ConfigError(
                f"ease: {n_active} items with interactions exceed max_items={self.config.max_items} "
                f"(the dense item x item matrix would take {gb:.1f} GB as float32, about 6x that while "
                f"fitting); raise max_items if memory allows, or use itemknn"
            )

    def _tune(self, data: InteractionData) -> float:
        cfg = self.config
        grid = sorted(float(v) for v in cfg.l2_grid)
        fit_part, val_part = temporal_split(data.interactions, test_fraction=cfg.val_fraction)
        if val_part.height == 0:
            choice = grid[len(grid) // 2]
            logger.warning("ease: no validation events (every user has < 2); using l2=%g untuned", choice)
            self.tuning_ = {}
            return choice
        fit_data = InteractionData.build(fit_part, data.items, users=data.users)
        matrix = fit_data.matrix(binary=True)
        active = np.flatnonzero(np.asarray(matrix.sum(axis=0)).ravel() > 0)
        xa = matrix[:, active].tocsr()
        gram = gram_matrix(xa)
        scores: dict[float, float] = {}
        for value in grid:  # one Cholesky per value on the shared Gram matrix
            b = ease_solve(gram, value)

            def score_fn(users: np.ndarray, b: np.ndarray = b) -> np.ndarray:  # type: ignore[assignment]
                out = np.zeros((len(users), fit_data.n_items), np.float32)
                out[:, active] = xa[users] @ b
                return out

            scores[value] = holdout_ndcg(score_fn, fit_data, val_part, k=10)
            logger.info("ease: l2=%g validation NDCG@10=%.4f", value, scores[value])
            del b
        best = max(grid, key=lambda v: (scores[v], -v))  # ties -> the smaller l2
        logger.info("ease: chose l2=%g (validation NDCG@10 %.4f; grid %s)", best, scores[best],
                    ", ".join(f"{v:g}: {s:.4f}" for v, s in scores.items()))
        self.tuning_ = scores
        return best

    # -------------------------------------------------------------- scoring
    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        assert self.user_items is not None
        return self._score_rows(self.user_items[user_idx], item_idx)

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        assert self.active is not None
        return self._score_rows(history[:, self.active], item_idx)

    def _score_rows(self, x: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        """Scores for user rows ``x`` (csr ``[n, n_active]``): ``x @ B`` placed into item columns."""
        assert self.weights is not None and self.active is not None
        user_idx = np.arange(x.shape[0])
        if item_idx is None:
            out = np.zeros((len(user_idx), self.n_items), np.float32)
            out[:, self.active] = x @ self.weights
            return out
        pos = np.full(self.n_items, -1, np.int64)
        pos[self.active] = np.arange(len(self.active))
        cand = pos[item_idx]
        ok = cand >= 0
        out = np.zeros((len(user_idx), len(item_idx)), np.float32)
        if ok.any():
            out[:, ok] = x @ self.weights[:, cand[ok]]
        return out

    # ------------------------------------------------------------ save/load
    def _state(self) -> dict[str, torch.Tensor]:
        assert self.weights is not None and self.active is not None and self.user_items is not None
        x = self.user_items
        return {
            "weights": torch.from_numpy(self.weights),
            "active": torch.from_numpy(self.active.astype(np.int64)),
            "user_indptr": torch.from_numpy(x.indptr.astype(np.int64)),
            "user_indices": torch.from_numpy(x.indices.astype(np.int64)),
            "l2": torch.tensor([self.l2_], dtype=torch.float64),
        }

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        from tlrec.training.artifacts import checked_csr, tensor_array

        active = tensor_array(state, "active", "int64", (None,))
        if len(active) and (active.min() < 0 or active.max() >= self.n_items or (np.diff(active) <= 0).any()):
            raise ValueError(f"tensor 'active': item ids must be increasing, in [0, {self.n_items})")
        self.weights = tensor_array(state, "weights", "float32", (len(active), len(active)))
        self.active = active
        self.user_items = checked_csr(
            tensor_array(state, "user_indptr", "int64"), tensor_array(state, "user_indices", "int64"), None,
            (self.n_users, len(active)), "user_indptr/user_indices",
        )
        self.l2_ = float(tensor_array(state, "l2", "float64", (1,))[0])
