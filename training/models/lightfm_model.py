"""LightFM (Kula 2015): factorisation with WARP loss, pure or hybrid with item features.

* ``features="none"``: plain matrix factorisation; each item is its own (identity)
  feature. Trained on every catalog column, so items without interactions are only
  ever sampled as negatives; they get no meaningful score.
* ``features="vectors"``: hybrid. The item vectors passed to ``fit(data, item_vectors)``
  (pre-trained encoder vectors, or any content matrix such as multi-hot genres) are
  row-normalised (L2; zero rows stay zero) and appended to the identity features, so
  an item's embedding is ``e_id + sum_f v_f * e_f``. Warm items (>= 1 training
  interaction) keep their own identity embedding; cold items get the content part
  only (their identity feature is dropped). Training uses the warm items' columns
  only, so cold items are never sampled as WARP negatives (which would push down
  the content features they share with warm items). ``recommends_for_cold_items``
  is True on such an instance only.

Serving does not need LightFM or pickle: the learned arrays (``user_embeddings``,
``user_biases``, ``item_embeddings`` and ``item_biases`` per feature) and the item
feature matrix (CSR) are saved in safetensors, and scores are recomputed in numpy::

    score(u, i) = user_embeddings[u] . (F[i] @ item_embeddings) + F[i] @ item_biases + user_biases[u]

Determinism: given ``seed`` the initialisation and the epoch shuffles are fixed, but
LightFM's Hogwild SGD with ``num_threads > 1`` is not reproducible run to run. Use
``num_threads=1`` where bit-for-bit repeats matter.

Early stopping (``Recommender.tune``, and ``fit`` with ``val_fraction > 0``): train on the
validation split's training part, keep the epoch with the best validation NDCG@10 (patience
``patience``), then ``refit`` on all of the data for that many epochs.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from tlrec.errors import ConfigError
from tlrec.training.interaction_data import InteractionData
from tlrec.training.models.base import ConfigFlag, ModelConfig, Recommender
from tlrec.training.validation import ValidationSplit

logger = logging.getLogger(__name__)


class LightFMConfig(ModelConfig):
    """Hyper-parameters (LightFM's names). ``features="vectors"`` selects the hybrid model."""

    no_components: int = Field(default=64, ge=1)
    loss: Literal["warp", "bpr", "warp-kos", "logistic"] = "warp"
    learning_schedule: Literal["adagrad", "adadelta"] = "adagrad"
    epochs: int = Field(default=30, ge=1)
    learning_rate: float = Field(default=0.05, gt=0)
    item_alpha: float = Field(default=0.0, ge=0)
    user_alpha: float = Field(default=0.0, ge=0)
    max_sampled: int = Field(default=10, ge=1)
    features: Literal["none", "vectors"] = "none"
    val_fraction: float = Field(default=0.0, ge=0, lt=1)
    patience: int = Field(default=3, ge=1)
    num_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    seed: int = 0


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise rows of float32 ``[n, d]``; all-zero rows stay zero."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


class LightFMModel(Recommender):
    """LightFM WARP; hybrid (identity + content features) with ``features="vectors"``."""

    name = "lightfm"
    config_class = LightFMConfig
    recommends_from_history = True
    recommends_for_cold_items = ConfigFlag(lambda c: c.features == "vectors")  # type: ignore[assignment]
    stops_early = True

    config: LightFMConfig

    def __init__(self, config: LightFMConfig | None = None) -> None:
        super().__init__(config)
        self.params: dict[str, np.ndarray] = {}
        self.item_features: sp.csr_matrix | None = None  # [n_items, n_features]
        self._item_repr: np.ndarray | None = None
        self._item_bias: np.ndarray | None = None
        self.best_epoch_: int | None = None

    # ------------------------------------------------------------------ fit
    def wants_item_vectors(self) -> bool:
        return self.config.features == "vectors"

    def chooses_on_validation(self) -> bool:
        return self.config.val_fraction > 0

    def _fit(self, data: InteractionData, item_vectors: np.ndarray | None,
             validation: ValidationSplit | None = None) -> None:
        cfg = self.config
        content = None
        if cfg.features == "vectors":
            if item_vectors is None:
                raise ConfigError("lightfm: features='vectors' needs item_vectors passed to fit(data, item_vectors)")
            content = normalise_rows(item_vectors)
        if validation is not None:
            self.best_epoch_ = self._train(data, content, cfg.epochs, val=validation)
            logger.info("lightfm: best validation epoch %d of %d", self.best_epoch_, cfg.epochs)
        else:  # a refit: the epochs chosen on validation, else the configured ones
            self._train(data, content, self.best_epoch_ or cfg.epochs, val=None)

    def _train(self, data: InteractionData, content: np.ndarray | None, epochs: int,
               val: ValidationSplit | None) -> int:
        """Fit a fresh LightFM for up to ``epochs``; sets the scoring arrays; returns the epochs used."""
        from lightfm import LightFM  # the compiled extension is only needed for fitting

        cfg = self.config
        matrix = data.matrix(binary=True)
        n_items = data.n_items
        if content is not None:
            warm = np.flatnonzero(np.asarray(matrix.sum(axis=0)).ravel() > 0)
            identity = sp.csr_matrix(
                (np.ones(len(warm), np.float32), (warm, np.arange(len(warm)))), shape=(n_items, len(warm))
            )
            full = sp.hstack([identity, sp.csr_matrix(content)], format="csr", dtype=np.float32)
            train_features = full[warm]
            interactions = matrix[:, warm].tocoo()
        else:
            full = sp.identity(n_items, dtype=np.float32, format="csr")
            train_features = None
            interactions = matrix.tocoo()
        model = LightFM(
            no_components=cfg.no_components, loss=cfg.loss, learning_schedule=cfg.learning_schedule,
            learning_rate=cfg.learning_rate, item_alpha=cfg.item_alpha, user_alpha=cfg.user_alpha,
            max_sampled=cfg.max_sampled, random_state=np.random.RandomState(cfg.seed),
        )
        best: tuple[float, int, dict[str, np.ndarray] | None] = (-1.0, 0, None)
        bad = 0
        for epoch in range(1, epochs + 1):
            model.fit_partial(interactions, item_features=train_features, epochs=1, num_threads=cfg.num_threads)
            if val is None:
                continue
            self._set_params(_params_of(model), full)
            score = val.score_function(lambda users: self._score(users, None))
            logger.info("lightfm: epoch %d validation NDCG@10=%.4f", epoch, score)
            if score > best[0]:
                best, bad = (score, epoch, _params_of(model)), 0
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
            if epoch >= 3 * cfg.patience and val.hopeless(best[0]):
                logger.info("lightfm: stopped at epoch %d: validation NDCG@10 %.4f is far below the best "
                            "candidate's %.4f", epoch, best[0], val.bar)
                break
        if val is not None and best[2] is not None:
            self._set_params(best[2], full)
            return best[1]
        self._set_params(_params_of(model), full)
        return epochs

    # -------------------------------------------------------------- scoring
    def _set_params(self, params: dict[str, np.ndarray], features: sp.csr_matrix) -> None:
        self.params = params
        self.item_features = features.tocsr()
        self._item_repr = np.asarray(self.item_features @ params["item_embeddings"], dtype=np.float32)
        self._item_bias = np.asarray(self.item_features @ params["item_biases"], dtype=np.float32).ravel()

    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        assert self._item_repr is not None and self._item_bias is not None
        items = self._item_repr if item_idx is None else self._item_repr[item_idx]
        bias = self._item_bias if item_idx is None else self._item_bias[item_idx]
        users = self.params["user_embeddings"][user_idx]
        out = users @ items.T
        out += bias[None, :]
        out += self.params["user_biases"][user_idx][:, None]
        return out.astype(np.float32, copy=False)

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        """Fold-in: the user vector is the weighted mean of the history's item representations."""
        assert self._item_repr is not None and self._item_bias is not None
        weights = np.asarray(history.sum(axis=1), np.float32)
        users = np.asarray(history @ self._item_repr, np.float32) / np.maximum(weights, 1e-9)
        items = self._item_repr if item_idx is None else self._item_repr[item_idx]
        bias = self._item_bias if item_idx is None else self._item_bias[item_idx]
        return (users @ items.T + bias[None, :]).astype(np.float32, copy=False)

    # ------------------------------------------------------------ save/load
    def _state(self) -> dict[str, torch.Tensor]:
        assert self.item_features is not None
        f = self.item_features
        state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.params.items()}
        state.update({
            "features_indptr": torch.from_numpy(f.indptr.astype(np.int64)),
            "features_indices": torch.from_numpy(f.indices.astype(np.int64)),
            "features_data": torch.from_numpy(f.data.astype(np.float32)),
            "features_shape": torch.tensor(f.shape, dtype=torch.int64),
        })
        return state

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        from tlrec.training.artifacts import checked_csr, tensor_array

        rows, n_features = (int(v) for v in tensor_array(state, "features_shape", "int64", (2,)))
        if rows != self.n_items:
            raise ValueError(f"tensor 'features_shape': {rows} rows, expected {self.n_items} (items)")
        features = checked_csr(
            tensor_array(state, "features_indptr", "int64"), tensor_array(state, "features_indices", "int64"),
            tensor_array(state, "features_data", "float32"), (rows, n_features), "features_*",
        )
        user_emb = tensor_array(state, "user_embeddings", "float32", (self.n_users, None))
        dim = user_emb.shape[1]
        params = {"user_embeddings": user_emb,
                  "user_biases": tensor_array(state, "user_biases", "float32", (self.n_users,)),
                  "item_embeddings": tensor_array(state, "item_embeddings", "float32", (n_features, dim)),
                  "item_biases": tensor_array(state, "item_biases", "float32", (n_features,))}
        self._set_params(params, features)


_PARAMS = ("user_embeddings", "user_biases", "item_embeddings", "item_biases")


def _params_of(model: Any) -> dict[str, np.ndarray]:
    """Copies of a fitted LightFM's learned arrays (float32)."""
    return {k: np.array(getattr(model, k), dtype=np.float32, copy=True) for k in _PARAMS}
