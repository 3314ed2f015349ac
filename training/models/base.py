"""One interface for every recommender model.

Models work on internal contiguous ids only (see ``training.data.IdMap``); external
string ids live at the edges (``serving``, ``services``). A model is fitted on an
``InteractionData`` whose item index is the whole catalog, so items with no
interactions still have a row and, for content-aware models, a score.

Public methods validate and delegate to private ``_fit`` / ``_score`` (the RecTools
pattern). A model saves to a directory as ``config.json`` (its pydantic config, JSON
round-trip) and ``weights.safetensors``; nothing is pickled.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from safetensors.torch import save_file

from tlrec.training.artifacts import ArtifactError, VerifiedVersion, first_line, load_tensors, read_json, tensor_array
from tlrec.training.data import Columns, DataError, InteractionData

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"


class ModelConfig(BaseModel):
    """Base of every model's config: unknown keys are an error, JSON round-trips."""

    model_config = ConfigDict(extra="forbid")


class NotFittedError(RuntimeError):
    """Raised when a model is used before ``fit`` or ``load``."""


class Recommender(ABC):
    """Base class: ``fit`` returns self; ``score`` and ``recommend`` work on internal ids.

    Capability flags tell callers what the model can do:
    ``recommends_for_cold_items`` (items without training interactions get meaningful
    scores, e.g. through content), ``recommends_for_cold_users`` and
    ``recommends_from_history`` (an ad-hoc history of item ids, e.g. a new or anonymous
    user, or a known user's newest events, gets recommendations without retraining).
    """

    name: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]]
    recommends_for_cold_items: ClassVar[bool] = False
    recommends_for_cold_users: ClassVar[bool] = False
    recommends_from_history: ClassVar[bool] = False

    def __init__(self, config: ModelConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class()
        self.n_users = 0
        self.n_items = 0
        self.is_fitted = False

    # ----------------------------------------------------------------- fitting
    def fit(self, data: InteractionData, item_vectors: np.ndarray | None = None) -> Self:
        """Fit on ``data``; ``item_vectors`` is float32 ``[data.n_items, d]`` content (optional).

        Raises ValueError on empty data or vectors whose shape does not match the catalog.
        """
        if data.interactions.height == 0:
            raise DataError(f"{self.name}: no interactions to fit on")
        if item_vectors is not None:
            item_vectors = np.asarray(item_vectors, dtype=np.float32)
            if item_vectors.ndim != 2 or item_vectors.shape[0] != data.n_items:
                raise ValueError(
                    f"{self.name}: item vectors have shape {item_vectors.shape}, "
                    f"expected [{data.n_items}, d] (one row per catalog item)"
                )
            if not np.isfinite(item_vectors).all():
                raise ValueError(f"{self.name}: item vectors contain NaN or inf")
        self.n_users, self.n_items = data.n_users, data.n_items
        self._fit(data, item_vectors)
        self.is_fitted = True
        return self

    @abstractmethod
    def _fit(self, data: InteractionData, item_vectors: np.ndarray | None) -> None: ...

    def wants_item_vectors(self) -> bool:
        """True when this model (as configured) uses pre-trained item vectors in ``fit``."""
        return False

    # ----------------------------------------------------------------- scoring
    def score(self, user_idx: np.ndarray, item_idx: np.ndarray | None = None) -> np.ndarray:
        """Scores float32 ``[len(user_idx), n_items]`` (or ``[len(user_idx), len(item_idx)]``).

        Higher is better. ``user_idx`` are internal user ids in ``[0, n_users)``.
        """
        self._check_fitted()
        users = np.asarray(user_idx, dtype=np.int64)
        if users.size and (users.min() < 0 or users.max() >= self.n_users):
            raise IndexError(f"{self.name}: user index out of range [0, {self.n_users})")
        items = None if item_idx is None else np.asarray(item_idx, dtype=np.int64)
        return self._score(users, items)

    @abstractmethod
    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray: ...

    def recommend(
        self,
        user_idx: np.ndarray,
        k: int,
        exclude: sp.csr_matrix | None = None,
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for each user, best first.

        Args:
            user_idx: int ``[n]`` internal user ids.
            k: list length, >= 1.
            exclude: optional csr ``[n_users, n_items]``; non-zeros are never recommended.
            candidates: optional int ``[m]`` item ids; rank only among them.
        Returns:
            ``(items, scores)``, int64 and float32 ``[n, k]``; where fewer than k items
            are allowed, the tail is padded with item -1 and score -inf.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        users = np.asarray(user_idx, dtype=np.int64)
        scores = self.score(users, candidates).astype(np.float32, copy=True)
        return masked_top_k(scores, k, None if exclude is None else exclude[users], candidates)

    # ------------------------------------------------------------- histories
    def score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None = None) -> np.ndarray:
        """Scores float32 ``[n, n_items]`` (or ``[n, len(item_idx)]``) for ad-hoc histories.

        ``history`` is csr ``[n, n_items]``: one row per (possibly unknown) user, the item's
        weight as value (1.0 = one interaction). An empty row gets the model's prior.
        Raises NotImplementedError when ``recommends_from_history`` is False.
        """
        self._check_fitted()
        if not self.recommends_from_history:
            raise NotImplementedError(f"{self.name}: cannot recommend from an ad-hoc history")
        history = sp.csr_matrix(history, dtype=np.float32)
        if history.shape[1] != self.n_items:
            raise ValueError(f"{self.name}: history has {history.shape[1]} item columns, expected {self.n_items}")
        items = None if item_idx is None else np.asarray(item_idx, dtype=np.int64)
        return self._score_history(history, items)

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def recommend_history(
        self,
        history: sp.csr_matrix,
        k: int,
        exclude_history: bool = True,
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k for ad-hoc histories (csr ``[n, n_items]``); same return as ``recommend``.

        ``exclude_history`` drops the items in each history from its list.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        history = sp.csr_matrix(history, dtype=np.float32)
        scores = self.score_history(history, candidates).astype(np.float32, copy=True)
        return masked_top_k(scores, k, history if exclude_history else None, candidates)

    # --------------------------------------------------------------- save/load
    def history_weights(self, n: int) -> np.ndarray:
        """float32 ``[n]`` weights of an ad-hoc history of ``n`` items listed oldest first (here all 1).

        Models that weigh recent items more (NCF's chosen recency) override this; serving
        applies it to every history it builds.
        """
        return np.ones(n, np.float32)

    def ordered_history(self, user_idx: int) -> np.ndarray | None:
        """A known user's training items, int64, oldest first; None if the model keeps no order."""
        return None

    def save(self, directory: Path) -> None:
        """Write ``config.json`` and ``weights.safetensors`` into ``directory``."""
        self._check_fitted()
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"model": self.name, "n_users": self.n_users, "n_items": self.n_items,
                "config": self.config.model_dump(mode="json")}
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        save_file({k: v.contiguous() for k, v in self._state().items()}, directory / WEIGHTS_FILE)

    @classmethod
    def load(cls, directory: Path, verified: VerifiedVersion | None = None) -> Self:
        """Inverse of ``save``; the config is validated (unknown keys are an error).

        ``verified``: the verified artifact version ``directory`` lies in; the files are
        then taken from it (``VerifiedVersion.check``: listed in the manifest, unchanged).
        Every tensor is checked (dtype, shape against ``n_users``/``n_items``, finite,
        sparse indices in range) before the model is returned. Raises ``ArtifactError``
        (a ``ValueError``), one line naming the file and what is wrong.
        """
        config_path, weights_path = Path(directory) / CONFIG_FILE, Path(directory) / WEIGHTS_FILE
        if verified is not None:
            config_path, weights_path = verified.check(config_path), verified.check(weights_path)
        meta = read_json(config_path)
        if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
            raise ArtifactError(f"{config_path}: not a model config (expected an object with 'model' and 'config')")
        if meta.get("model") != cls.name:
            raise ArtifactError(f"{config_path}: holds model {meta.get('model')!r}, not {cls.name!r}")
        try:
            model = cls(cls.config_class.model_validate(meta["config"]))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "config"
            raise ArtifactError(f"{config_path}: {where}: {first['msg']} (written by another tlrec "
                                "version? retrain the model)") from None
        sizes = [meta.get("n_users"), meta.get("n_items")]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes):
            raise ArtifactError(f"{config_path}: n_users and n_items must be integers >= 0, got {sizes}")
        model.n_users, model.n_items = sizes
        state = load_tensors(weights_path)
        for key in state:
            try:
                tensor_array(state, key, finite=True)
            except ValueError as exc:
                raise ArtifactError(f"{weights_path}: {exc}") from None
        try:
            model._load_state(state)
        except ArtifactError:
            raise
        except KeyError as exc:
            key = str(exc.args[0]) if exc.args else ""
            raise ArtifactError(f"{weights_path}: tensor {key!r} missing (written by another tlrec version? "
                                "retrain the model)") from None
        except (ValueError, RuntimeError, IndexError, TypeError) as exc:  # wrong shapes, dtypes, indices
            raise ArtifactError(f"{weights_path}: {first_line(exc, 200)} (written by another tlrec version, or "
                                "corrupt? retrain the model)") from None
        model.is_fitted = True
        return model

    @abstractmethod
    def _state(self) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def _load_state(self, state: dict[str, torch.Tensor]) -> None: ...

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{self.name}: call fit() or load() first")


def masked_top_k(
    scores: np.ndarray, k: int, exclude: sp.csr_matrix | None, candidates: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of ``scores`` ``[n, m]`` after masking ``exclude`` (csr ``[n, n_items]``, non-zeros dropped).

    Columns are all items (``candidates`` None) or the given ``candidates`` ``[m]``.
    ``scores`` is modified in place.
    """
    item_ids = np.arange(scores.shape[1], dtype=np.int64) if candidates is None else np.asarray(candidates, np.int64)
    if exclude is not None:
        seen = (exclude[:, item_ids] if candidates is not None else exclude).tocoo()
        scores[seen.row, seen.col] = -np.inf
    return top_k(scores, k, item_ids)


def top_k(scores: np.ndarray, k: int, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of ``scores`` ``[n, m]``; columns map to ``item_ids`` ``[m]``.

    Returns int64 items and float32 scores ``[n, k]`` best first; -inf scores become
    item -1 (not recommendable); ties are broken by lower column index.
    """
    n, m = scores.shape
    kk = min(k, m)
    if kk == 0:
        return np.full((n, k), -1, np.int64), np.full((n, k), -np.inf, np.float32)
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < m else np.tile(np.arange(m), (n, 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    # stable order: by score desc, then column asc
    order = np.lexsort((part, -part_scores), axis=1)
    cols = np.take_along_axis(part, order, axis=1)
    top_scores = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    items = item_ids[cols]
    items[~np.isfinite(top_scores)] = -1
    if kk < k:
        items = np.pad(items, ((0, 0), (0, k - kk)), constant_values=-1)
        top_scores = np.pad(top_scores, ((0, 0), (0, k - kk)), constant_values=-np.inf)
    return items, top_scores


def relevant_by_user(val: pl.DataFrame, data: InteractionData) -> dict[int, set[int]]:
    """Held-out events as internal ``user -> item set``, restricted to users and items in ``data``."""
    users = data.users.to_internal(val[Columns.USER], missing="ignore")
    items = data.items.to_internal(val[Columns.ITEM], missing="ignore")
    rel: dict[int, set[int]] = {}
    for u, i in zip(users.tolist(), items.tolist()):
        if u >= 0 and i >= 0:
            rel.setdefault(u, set()).add(i)
    return rel
