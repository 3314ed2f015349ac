"""Popularity: every user gets the most-interacted items. The baseline and the fallback."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from tlrec.training.interaction_data import InteractionData
from tlrec.training.models.base import ModelConfig, Recommender
from tlrec.training.validation import ValidationSplit


class PopularityConfig(ModelConfig):
    """``count="users"`` counts distinct users per item; ``"events"`` counts every event."""

    count: str = "users"


class PopularityModel(Recommender):
    """Scores an item by how many users interacted with it in training (same for all users)."""

    name = "popularity"
    config_class = PopularityConfig
    recommends_for_cold_users = True
    recommends_from_history = True
    recommends_for_cold_users = True

    config: PopularityConfig

    def _fit(self, data: InteractionData, item_vectors: np.ndarray | None,
             validation: ValidationSplit | None = None) -> None:
        matrix = data.matrix(binary=self.config.count == "users")
        counts = np.asarray(matrix.sum(axis=0)).ravel().astype(np.float32)
        self.item_scores = counts

    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        row = self.item_scores if item_idx is None else self.item_scores[item_idx]
        return np.broadcast_to(row, (len(user_idx), row.shape[0]))

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        return self._score(np.zeros(history.shape[0], np.int64), item_idx)

    def _state(self) -> dict[str, torch.Tensor]:
        return {"item_scores": torch.from_numpy(self.item_scores)}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        from tlrec.training.artifacts import tensor_array

        self.item_scores = tensor_array(state, "item_scores", "float32", (self.n_items,))
