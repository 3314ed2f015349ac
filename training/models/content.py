"""Content-only recommender: a user's profile is the mean of the vectors of the items they touched.

No collaborative signal at all, so an item nobody has interacted with yet is
scored exactly like any other: by the cosine between its content vector and the
user's profile. This is the yardstick ``tlrec encoders compare`` uses to ask
"how much does this pre-trained encoder know about *my* items?".

Items without a vector (all-zero or all-NaN rows: no input, or the input failed
to encode) score 0 for everyone and add nothing to a profile; a user none of
whose items has a vector gets a zero profile (every score 0).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from tlrec.training.interaction_data import InteractionData
from tlrec.training.models.base import ModelConfig, Recommender
from tlrec.training.validation import ValidationSplit

logger = logging.getLogger(__name__)


class ContentProfileConfig(ModelConfig):
    """``pooling="mean"``: a profile is the L2-normalised mean of the user's distinct items' vectors."""

    pooling: Literal["mean"] = "mean"


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; NaN rows and (near-)zero rows become zeros. float32."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > 1e-12, x / np.where(norms > 1e-12, norms, 1.0), 0.0).astype(np.float32)


class ContentProfileModel(Recommender):
    """Cosine between each user's content profile and each item's content vector.

    ``fit(data, item_vectors)`` needs ``item_vectors`` float32 ``[data.n_items, d]``
    (zero rows for items without content). ``score`` returns
    ``profiles[users] @ item_vectors[items].T``, both sides unit length, so
    scores are cosines in ``[-1, 1]``.
    """

    name = "content"
    config_class = ContentProfileConfig
    recommends_from_history = True
    recommends_for_cold_items = True

    config: ContentProfileConfig

    def wants_item_vectors(self) -> bool:
        return True

    def _fit(self, data: InteractionData, item_vectors: np.ndarray | None,
             validation: ValidationSplit | None = None) -> None:
        if item_vectors is None:
            raise ValueError(f"{self.name}: needs item vectors (float32 [n_items, d]); got none")
        self.item_vectors = _unit_rows(item_vectors)  # [n_items, d]
        seen = data.matrix(binary=True)  # [n_users, n_items], 1 per distinct interacted item
        self.profiles = _unit_rows(np.asarray(seen @ self.item_vectors))  # normalised sum == normalised mean
        empty = int((np.abs(self.profiles).sum(axis=1) == 0).sum())
        if empty:
            logger.info("%s: %d of %d users have no item with a vector (zero profile)", self.name, empty,
                        data.n_users)

    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        items = self.item_vectors if item_idx is None else self.item_vectors[item_idx]
        return (self.profiles[user_idx] @ items.T).astype(np.float32, copy=False)

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        profiles = _unit_rows(np.asarray(history @ self.item_vectors, dtype=np.float32))
        items = self.item_vectors if item_idx is None else self.item_vectors[item_idx]
        return (profiles @ items.T).astype(np.float32, copy=False)

    def _state(self) -> dict[str, torch.Tensor]:
        return {"item_vectors": torch.from_numpy(self.item_vectors), "profiles": torch.from_numpy(self.profiles)}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        from tlrec.training.artifacts import tensor_array

        self.item_vectors = tensor_array(state, "item_vectors", "float32", (self.n_items, None))
        self.profiles = tensor_array(state, "profiles", "float32", (self.n_users, self.item_vectors.shape[1]))
