"""A weighted blend of fitted models, with items no component has seen routed to a content model.

Scores of different models live on different scales (EASE's regression outputs, NCF's inner
products, ItemKNN's similarity sums), so each component's scores are first **standardised
per user** over the *warm* items (those with at least one training interaction):
``z_m(u, i) = (s_m(u, i) - mean_u) / std_u``. The blend is ``sum_m w_m z_m(u, i)`` with the
weights ``w`` (non-negative, summing to 1) learned on validation by ``training.selection``.

**Cold items** (no training interaction, e.g. added to the catalog after training) are scored
only by the component named in ``cold_items_from`` (a model with ``recommends_for_cold_items``,
such as NCF's content path), standardised the same way plus ``cold_offset`` (chosen on
validation by ``training.selection``: how far below a warm item of the same standardised score
a new item should rank), so a new item competes with warm ones on that component's scale; a
component may be in the blend only for that (weight 0). Without such a component, cold items
rank last.

The blend is not a retrieval model: it scores every item exactly (``Recommender.recommend``),
which costs one score row per component and user. Similar items come from the item space of its
first component that has one (``item_space``: NCF's item tower). Ad-hoc histories go to every component's
``score_history`` unweighted (``history_weights`` is 1 per item); when a component reads order (SASRec),
the blend weighs a history by position and each component gets that order with its own position weights.

Saved as one ``config.json`` (each component's model name, weight and config) and one
``weights.safetensors`` (each component's tensors under ``<position>.`` plus the warm-item mask).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tlrec.tables import Columns
from tlrec.training.interaction_data import InteractionData
from tlrec.training.models.base import ConfigFlag, ModelConfig, Recommender
from tlrec.training.validation import ValidationSplit

logger = logging.getLogger(__name__)

__all__ = ["BlendComponent", "BlendConfig", "BlendModel", "reweighted_by_order", "standardise"]

#: Standardised score given to items that no component can score (ranked last, still finite).
UNSCORED = -1e4
#: A component in the blend only to score cold items (weight 0) is scored on the cold items and on
#: at most this many warm items (a fixed random sample), whose scores give its per-user mean and std:
#: a user's list then costs that component ~(cold + 512) items instead of the whole catalog (the
#: sampled std is within ~3% of the full one).
ROUTER_SCALE_ITEMS = 512


class BlendComponent(BaseModel):
    """One model of a blend: its registry name, weight and config (JSON round-trip)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    weight: float = Field(ge=0)
    config: dict[str, Any] = Field(default_factory=dict)


class BlendConfig(ModelConfig):
    """``components`` with weights summing to 1; ``cold_items_from``: the component that scores cold items,
    ``cold_offset``: added to their standardised scores (<= 0)."""

    components: list[BlendComponent] = Field(
        default_factory=lambda: [BlendComponent(model="itemknn", weight=0.5),
                                 BlendComponent(model="popularity", weight=0.5)], min_length=1)
    cold_items_from: str | None = None
    cold_offset: float = Field(default=0.0, le=0.0)

    @model_validator(mode="after")
    def _check(self) -> BlendConfig:
        total = sum(c.weight for c in self.components)
        if not 0.999 <= total <= 1.001:
            raise ValueError(f"component weights must sum to 1, got {total:g}")
        names = [c.model for c in self.components]
        if len(set(names)) != len(names):
            raise ValueError(f"each model may appear once, got {names}")
        if "blend" in names:
            raise ValueError("a blend cannot hold a blend")
        if self.cold_items_from is not None and self.cold_items_from not in names:
            raise ValueError(f"cold_items_from {self.cold_items_from!r} is not a component ({', '.join(names)})")
        return self


def reweighted_by_order(history: sp.csr_matrix, weights_of: Callable[[int], np.ndarray]) -> sp.csr_matrix:
    """``history`` (csr ``[n, n_items]``) with each row's items, ordered by their weights (lowest = oldest),
    weighted ``weights_of(len(row))`` by position instead: the order survives, the model's own weighting applies."""
    out = history.astype(np.float32, copy=True)
    out.sum_duplicates()
    for r in range(out.shape[0]):
        lo, hi = out.indptr[r], out.indptr[r + 1]
        order = np.argsort(out.data[lo:hi], kind="stable")
        out.data[lo + order] = weights_of(int(hi - lo))
    return out


def standardise(scores: np.ndarray, warm: np.ndarray) -> np.ndarray:
    """Scores float32 ``[n, n_items]`` standardised per row over the ``warm`` columns (bool ``[n_items]``), in place."""
    part = scores[:, warm] if not warm.all() else scores
    mean = part.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    std = part.std(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    scores -= mean
    scores /= np.maximum(std, 1e-6)
    return scores


class BlendModel(Recommender):
    """``sum_m w_m z_m``: per-user standardised scores of fitted models, cold items from a content model."""

    name = "blend"
    config_class = BlendConfig
    recommends_from_history = True
    recommends_for_cold_items = ConfigFlag(lambda c: c.cold_items_from is not None)  # type: ignore[assignment]

    config: BlendConfig

    def __init__(self, config: BlendConfig | None = None) -> None:
        super().__init__(config)
        self.components: list[Recommender] = []
        self.warm: np.ndarray | None = None  # bool [n_items]: items with a training interaction

    @classmethod
    def of(cls, models: Sequence[Recommender], weights: Sequence[float], cold_items_from: str | None,
           data: InteractionData) -> BlendModel:
        """A blend of already fitted ``models`` (all on ``data``) with ``weights`` (summing to 1)."""
        config = BlendConfig(components=[BlendComponent(model=m.name, weight=float(w),
                                                        config=m.config.model_dump(mode="json"))
                                         for m, w in zip(models, weights, strict=True)],
                             cold_items_from=cold_items_from)
        blend = cls(config)
        blend.components = list(models)
        blend.n_users, blend.n_items = data.n_users, data.n_items
        blend.warm = _warm_items(data)
        blend.is_fitted = True
        return blend

    # ------------------------------------------------------------------ fit
    def wants_item_vectors(self) -> bool:
        return any(m.wants_item_vectors() for m in self._built())

    def _built(self) -> list[Recommender]:
        if not self.components:
            from tlrec.training.models import get_model_class

            self.components = []
            for c in self.config.components:
                model_class = get_model_class(c.model)
                self.components.append(model_class(model_class.config_class.model_validate(c.config)))
        return self.components

    def _fit(self, data: InteractionData, item_vectors: np.ndarray | None,
             validation: ValidationSplit | None = None) -> None:
        """Fit every component on ``data`` (each tuned on ``validation`` when given); the weights stay."""
        for model in self._built():
            vectors = item_vectors if model.wants_item_vectors() else None
            if validation is not None:
                model.tune(validation, vectors)
            else:
                model.fit(data, vectors)
        self.warm = _warm_items(data)

    def _refit(self, data: InteractionData, item_vectors: np.ndarray | None) -> None:
        for model in self._built():
            model.refit(data, item_vectors if model.wants_item_vectors() else None)
        self.warm = _warm_items(data)

    # -------------------------------------------------------------- scoring
    def standardised(self, rows: Callable[[Recommender, np.ndarray | None], np.ndarray]) -> list[np.ndarray]:
        """Each component's scores ``rows(model, items) -> [n, len(items)]`` (all items: None) standardised,
        cold columns routed.

        Returns one float32 ``[n, n_items]`` per component, in config order. A weight-0 component
        (the cold-item router, or one the blend ignores) is scored on the columns it is used for
        only (``_router_columns``); its other columns hold 0.
        """
        assert self.warm is not None
        cold = ~self.warm
        names = [c.model for c in self.config.components]
        router = names.index(self.config.cold_items_from) if self.config.cold_items_from else None
        out = []
        for i, (part, model) in enumerate(zip(self.config.components, self.components)):
            if part.weight > 0:
                out.append(standardise(np.array(rows(model, None), dtype=np.float32, copy=True), self.warm))
            elif i == router and cold.any():
                out.append(self._routed_only(rows(model, self._router_columns()).astype(np.float32)))
            else:
                out.append(np.zeros((0, 0), np.float32))  # not used: weight 0, routes nothing
        if cold.any():
            if router is not None:
                out[router][:, cold] += np.float32(self.config.cold_offset)
            for i, z in enumerate(out):
                if i != router and z.size:
                    z[:, cold] = out[router][:, cold] if router is not None else UNSCORED
        return out

    def _router_columns(self) -> np.ndarray:
        """The items a weight-0 router is scored on: the cold ones, then up to ``ROUTER_SCALE_ITEMS`` warm ones
        (a fixed sample, seed 0; every warm item when there are no more), int64."""
        assert self.warm is not None
        cached = getattr(self, "_router_columns_cache", None)
        if cached is None or cached[0] is not self.warm:  # built for the warm items of an earlier fit
            warm = np.flatnonzero(self.warm)
            if len(warm) > ROUTER_SCALE_ITEMS:
                warm = np.sort(np.random.default_rng(0).choice(warm, ROUTER_SCALE_ITEMS, replace=False))
            cached = self._router_columns_cache = (self.warm, np.concatenate([np.flatnonzero(~self.warm), warm]))
        return cached[1]

    def _routed_only(self, scores: np.ndarray) -> np.ndarray:
        """float32 ``[n, n_items]`` from a router's scores ``[n, len(_router_columns())]``: its cold columns
        standardised by the sampled warm ones' mean and std (every other column 0)."""
        assert self.warm is not None
        n_cold = int((~self.warm).sum())
        sample = scores[:, n_cold:]
        mean = sample.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
        std = np.maximum(sample.std(axis=1, keepdims=True, dtype=np.float64).astype(np.float32), 1e-6)
        out = np.zeros((len(scores), self.n_items), np.float32)
        out[:, ~self.warm] = (scores[:, :n_cold] - mean) / std
        return out

    def combine(self, parts: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
        """``sum_m w_m z_m`` float32 ``[n, n_items]`` of standardised parts (``standardised``)."""
        total = np.zeros_like(next(z for z, w in zip(parts, weights, strict=True) if w > 0))
        for z, w in zip(parts, weights, strict=True):
            if w > 0:
                total += np.float32(w) * z
        return total

    def _blend(self, rows: Callable[[Recommender, np.ndarray | None], np.ndarray],
               item_idx: np.ndarray | None) -> np.ndarray:
        weights = [c.weight for c in self.config.components]
        scores = self.combine(self.standardised(rows), weights)
        return scores if item_idx is None else scores[:, item_idx]

    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        return self._blend(lambda m, items: m._score(user_idx, items), item_idx)

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        if not self._reads_order():
            return self._blend(lambda m, items: m._score_history(history, items), item_idx)
        return self._blend(lambda m, items: m._score_history(reweighted_by_order(history, m.history_weights), items),
                           item_idx)

    def _reads_order(self) -> bool:
        """True when a component reads a history's order (a sequence model)."""
        return any(m.reads_sequences for m in self._built())

    def ordered_history(self, user_idx: int) -> np.ndarray | None:
        """A known user's training items oldest first, from the first component that keeps the order
        (a sequence model before the others); None if none does."""
        for model in sorted(self._built(), key=lambda m: not m.reads_sequences):
            if (ordered := model.ordered_history(user_idx)) is not None:
                return ordered
        return None

    def history_weights(self, n: int) -> np.ndarray:
        """Positions ``1..n`` when a component reads order (``_score_history`` hands each component the
        order, weighted its own way), else 1 per item."""
        if self._reads_order():
            return np.arange(1, n + 1, dtype=np.float32)
        return super().history_weights(n)

    def item_space(self) -> np.ndarray | None:
        """The item space of the first component that has one (NCF's item tower), for similar items."""
        return next((space for m in self.components if (space := m.item_space()) is not None), None)

    # ------------------------------------------------------------ save/load
    def _state(self) -> dict[str, torch.Tensor]:
        assert self.warm is not None
        state = {"warm": torch.from_numpy(self.warm.astype(np.int64))}
        for i, model in enumerate(self.components):
            state.update({f"{i}.{k}": v for k, v in model._state().items()})
        return state

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        from tlrec.training.artifacts import tensor_array

        warm = tensor_array(state, "warm", "int64", (self.n_items,))
        if ((warm != 0) & (warm != 1)).any():
            raise ValueError("tensor 'warm': values must be 0 or 1")
        self.warm = warm.astype(bool)
        self.components = []
        for i, model in enumerate(self._built()):
            prefix = f"{i}."
            model.n_users, model.n_items = self.n_users, self.n_items
            model._load_state({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
            model.is_fitted = True


def _warm_items(data: InteractionData) -> np.ndarray:
    """bool ``[n_items]``: items with at least one interaction in ``data``."""
    return np.bincount(data.interactions[Columns.ITEM_IDX].to_numpy(), minlength=data.n_items) > 0
