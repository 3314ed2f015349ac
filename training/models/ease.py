"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data").

Closed form on the binary user x item matrix ``X``::

    G = X^T X + l2 * I,   P = G^-1,   B = -P / diag(P)  (column j divided by P_jj),   diag(B) = 0
    score(u) = X_u @ B

Only items with at least one training interaction ("active" items) enter ``G``:
for an item with none, the closed form gives a zero column of ``B`` anyway, so its
score is exactly 0 and it costs nothing. ``B`` is dense ``[n_active, n_active]``
float32 (``4 * n_active^2`` bytes; the fit needs about three float64 copies of that
transiently), so ``n_active`` is bounded by ``max_items`` (ValueError above it).

``l2=None`` tunes the regulariser (``Recommender.tune``): each value of ``l2_grid`` is fitted
on the validation split's training part (``training.validation.ValidationSplit``) and scored
by NDCG@10 of the held-out events with seen items excluded; ``refit`` solves again on all the
data with the best value. The choice is logged and kept as ``model.l2_`` (with every grid
score in ``model.tuning_``).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from scipy.linalg import lapack

from tlrec.errors import ConfigError
from tlrec.training.interaction_data import InteractionData, Weighting
from tlrec.training.models.base import ModelConfig, Recommender
from tlrec.training.validation import ValidationSplit

logger = logging.getLogger(__name__)


class EASEConfig(ModelConfig):
    """``l2``: the ridge weight (None = tune over ``l2_grid``); ``max_items`` bounds the dense matrix;
    ``weighting``: matrix entries (``InteractionData.weighted``); ``auto`` tries log-scaled counts
    beside binary on validation when the values are counts (``InteractionData.has_counts``)."""

    l2: float | None = Field(default=None, gt=0)
    weighting: Literal["auto", "binary", "log"] = "auto"
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
    """``B`` float32 ``[n, n]`` from a Gram matrix (not modified): Cholesky inverse in float32.

    Single precision halves the time of the two ``O(n^3)`` LAPACK calls; with ``l2`` added to the
    diagonal of a co-occurrence matrix the system is well conditioned (entries of ``B`` agree with
    a float64 solve to about 1e-6).
    """
    g = np.array(gram, dtype=np.float32, order="F")  # Fortran order: LAPACK works in place
    g[np.diag_indices_from(g)] += l2
    chol, info = lapack.spotrf(g, lower=0, clean=1, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"ease: Cholesky failed (info={info}) for l2={l2}")
    del g
    p, info = lapack.spotri(chol, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"ease: inversion failed (info={info}) for l2={l2}")
    del chol
    # spotri fills the upper triangle; the lower one is zero (clean=1): mirror it.
    p += np.triu(p, 1).T
    d = np.diag(p).copy()
    p /= -d[None, :]  # column j divided by -P_jj
    p[np.diag_indices_from(p)] = 0.0
    return p


def ease_weights(matrix: sp.spmatrix, l2: float) -> np.ndarray:
    """The EASE item-item matrix ``B`` float32 ``[n, n]`` for a user x item matrix ``[m, n]``."""
    return ease_solve(gram_matrix(matrix), l2)


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
        self.user_items: sp.csr_matrix | None = None  # [n_users, n_active], entries by ``weighting_``
        self.l2_: float | None = None
        self.weighting_: Weighting | None = None  # chosen (or configured) matrix entries
        self.tuning_: dict[float, float] = {}

    # ------------------------------------------------------------------ fit
    def chooses_on_validation(self) -> bool:
        return self.config.l2 is None

    def _fit(self, data: InteractionData, item_vectors: np.ndarray | None,
             validation: ValidationSplit | None = None) -> None:
        cfg = self.config
        seen = data.seen()
        active = np.flatnonzero(np.diff(seen.tocsc().indptr) > 0)
        self._check_size(len(active))
        if validation is not None:
            weightings: list[Weighting] = [cfg.weighting] if cfg.weighting != "auto" else \
                ["binary", "log"] if data.has_counts() else ["binary"]
            best: tuple[float, Weighting, float, np.ndarray, sp.csr_matrix] | None = None
            for weighting in weightings:
                xa = data.weighted(weighting)[:, active].tocsr()
                l2, b, score = self._tune(xa, active, validation)
                if len(weightings) > 1:
                    logger.info("ease: %s weighting: validation NDCG@10 %.4f (l2=%g)", weighting, score, l2)
                if best is None or score > best[0]:
                    best = (score, weighting, l2, b, xa)
            assert best is not None
            _, self.weighting_, l2, self.weights, xa = best
        else:
            self.weighting_ = self.weighting_ or ("log" if cfg.weighting == "log" else "binary")
            if cfg.l2 is None and self.l2_ is None:
                self.l2_ = sorted(cfg.l2_grid)[len(cfg.l2_grid) // 2]
                logger.warning("ease: no validation events; using l2=%g untuned", self.l2_)
            l2 = float(cfg.l2 if cfg.l2 is not None else self.l2_)  # type: ignore[arg-type]
            xa = data.weighted(self.weighting_)[:, active].tocsr()
            self.weights = ease_weights(xa, l2)
        self.active = active
        self.user_items = xa
        self.l2_ = float(l2)

    def _check_size(self, n_active: int) -> None:
        if n_active > self.config.max_items:
            gb = 4 * n_active**2 / 1e9
            raise ConfigError(
                f"ease: {n_active} items with interactions exceed max_items={self.config.max_items} "
                f"(the dense item x item matrix would take {gb:.1f} GB as float32, about 6x that while "
                f"fitting); raise max_items if memory allows, or use itemknn"
            )

    def _tune(self, xa: sp.csr_matrix, active: np.ndarray,
              validation: ValidationSplit) -> tuple[float, np.ndarray, float]:
        """The best ``(l2, B, score)`` of ``l2_grid`` on ``validation``, one Cholesky per value tried on one Gram
        matrix (a configured ``l2`` is the only value tried).

        The validation score is taken as unimodal in ``l2``: the search starts in the middle of the
        sorted grid and walks towards the better neighbour until the score drops.
        """
        grid = [float(self.config.l2)] if self.config.l2 is not None else sorted(float(v) for v in self.config.l2_grid)
        gram = gram_matrix(xa)
        n_items = validation.fit_data.n_items
        scores: dict[float, float] = {}
        best: dict[float, np.ndarray] = {}  # the best value so far and its B

        def evaluate(pos: int) -> float:
            value = grid[pos]
            if value not in scores:
                b = ease_solve(gram, value)

                def score_fn(users: np.ndarray) -> np.ndarray:
                    out = np.zeros((len(users), n_items), np.float32)
                    out[:, active] = xa[users] @ b
                    return out

                scores[value] = validation.score_function(score_fn)
                logger.info("ease: l2=%g validation NDCG@10=%.4f", value, scores[value])
                if not best or (scores[value], -value) > max((scores[v], -v) for v in best):
                    best.clear()
                    best[value] = b
            return scores[value]

        pos = (len(grid) - 1) // 2
        evaluate(pos)
        for step in (-1, 1):  # walk down, else up, while the neighbour is better
            while 0 <= pos + step < len(grid) and evaluate(pos + step) > scores[grid[pos]]:
                pos += step
        (chosen, weights), = best.items()  # ties went to the smaller l2
        logger.info("ease: chose l2=%g (validation NDCG@10 %.4f; tried %s)", chosen, scores[chosen],
                    ", ".join(f"{v:g}: {scores[v]:.4f}" for v in sorted(scores)))
        self.tuning_ = dict(sorted(scores.items()))
        return chosen, weights, scores[chosen]

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
            "user_data": torch.from_numpy(x.data.astype(np.float32)),
            "l2": torch.tensor([self.l2_], dtype=torch.float64),
        }

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        from tlrec.training.artifacts import checked_csr, tensor_array

        active = tensor_array(state, "active", "int64", (None,))
        if len(active) and (active.min() < 0 or active.max() >= self.n_items or (np.diff(active) <= 0).any()):
            raise ValueError(f"tensor 'active': item ids must be increasing, in [0, {self.n_items})")
        self.weights = tensor_array(state, "weights", "float32", (len(active), len(active)))
        self.active = active
        user_data = tensor_array(state, "user_data", "float32") if "user_data" in state else None  # binary before
        self.user_items = checked_csr(
            tensor_array(state, "user_indptr", "int64"), tensor_array(state, "user_indices", "int64"), user_data,
            (self.n_users, len(active)), "user_indptr/user_indices/user_data",
        )
        self.l2_ = float(tensor_array(state, "l2", "float64", (1,))[0])
