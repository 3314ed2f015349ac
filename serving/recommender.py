"""Artifacts -> answers: FAISS retrieve, NCF rank, filter. Used by the API and batch scoring.

``ServedModel.load`` verifies every file's checksum against the manifest and that the
index fits the model before anything is served, so a corrupt artifact is refused
whole. External string ids are converted here, at the edge.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp

from training.artifacts import ArtifactError, resolve_version, safe_join, verify
from training.data import IdMap
from training.models import NCFModel, PopularityModel, Recommender, get_model_class
from training.models.base import top_k
from training.train import FALLBACK_DIR, ITEMS_FILE, MODEL_DIR, SEEN_FILE, USERS_FILE, load_seen
from serving.index import IndexFileError, VectorIndex

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
MIN_RETRIEVE = 200
Source = Literal["model", "popular"]


@dataclass
class Recommendations:
    """One user's ranked list, best first; ``source`` says whether the model or the fallback answered."""

    user_id: str
    item_ids: list[str]
    scores: list[float]
    source: Source
    ranks: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.ranks:
            self.ranks = list(range(1, len(self.item_ids) + 1))


class ServedModel:
    """A loaded artifact version: model, fallback, FAISS index (NCF), id maps, seen items."""

    def __init__(
        self,
        version: str,
        model: Recommender,
        fallback: PopularityModel,
        items: IdMap,
        users: IdMap,
        seen: sp.csr_matrix,
        index: VectorIndex | None,
        manifest: dict,
    ) -> None:
        self.version = version
        self.model = model
        self.fallback = fallback
        self.items = items
        self.users = users
        self.seen = seen
        self.index = index
        self.manifest = manifest

    @classmethod
    def load(cls, artifacts: Path, check: bool = True) -> "ServedModel":
        """Load the version ``artifacts`` names (a version dir, or a root with ``current``).

        ``check`` verifies sha256 of every file. Raises ``ArtifactError`` (one line,
        naming the file) for a missing, corrupt or mismatched artifact.
        """
        version_dir = resolve_version(Path(artifacts))
        manifest = verify(version_dir) if check else json.loads((version_dir / "manifest.json").read_text())
        try:
            meta = json.loads(safe_join(version_dir, MODEL_DIR, "config.json").read_text())
            model = get_model_class(meta["model"]).load(safe_join(version_dir, MODEL_DIR))
            fallback = PopularityModel.load(safe_join(version_dir, FALLBACK_DIR))
            items = IdMap.load(safe_join(version_dir, ITEMS_FILE))
            users = IdMap.load(safe_join(version_dir, USERS_FILE))
            seen = load_seen(safe_join(version_dir, SEEN_FILE))
        except ArtifactError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ArtifactError(f"{version_dir}: cannot load artifact ({str(exc).splitlines()[0][:160]})") from None
        if (model.n_items, model.n_users) != (len(items), len(users)) or seen.shape != (len(users), len(items)):
            raise ArtifactError(f"{version_dir}: model, id maps and seen matrix disagree on sizes")
        index = None
        if isinstance(model, NCFModel):
            try:
                index = VectorIndex.load(safe_join(version_dir, INDEX_FILE))
            except IndexFileError as exc:
                raise ArtifactError(str(exc)) from None
            if index.dim != model.item_vectors().shape[1] or index.ntotal != model.n_items:
                raise ArtifactError(
                    f"{version_dir / INDEX_FILE}: index holds {index.ntotal} x {index.dim}, "
                    f"model expects {model.n_items} x {model.item_vectors().shape[1]}"
                )
        logger.info("loaded artifact %s (%s, %d users, %d items)", version_dir.name, model.name, len(users), len(items))
        return cls(version_dir.name, model, fallback, items, users, seen, index, manifest)

    def recommend(
        self,
        user_ids: Sequence[str],
        k: int,
        exclude_seen: bool = True,
        candidates: Sequence[str] | None = None,
    ) -> list[Recommendations]:
        """Top-k for each user, in input order. Unknown users get popular items (source "popular").

        ``candidates``: rank only among these item ids (unknown ids are ignored).
        ``exclude_seen``: drop items the user has in the training interactions.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        user_idx = self.users.to_internal(list(user_ids), missing="ignore")
        cand_idx = None
        if candidates is not None:
            cand_idx = self.items.to_internal(list(candidates), missing="ignore")
            cand_idx = np.unique(cand_idx[cand_idx >= 0])
        known = user_idx >= 0
        out: list[Recommendations | None] = [None] * len(user_ids)
        if known.any():
            items, scores = self._model_top_k(user_idx[known], k, exclude_seen, cand_idx)
            for pos, row_items, row_scores in zip(np.flatnonzero(known), items, scores):
                out[pos] = self._to_external(user_ids[pos], row_items, row_scores, "model")
        if (~known).any():
            items, scores = self.fallback.recommend(np.zeros(int((~known).sum()), np.int64), k, None, cand_idx)
            for pos, row_items, row_scores in zip(np.flatnonzero(~known), items, scores):
                out[pos] = self._to_external(user_ids[pos], row_items, row_scores, "popular")
        return [r for r in out if r is not None]

    def _model_top_k(
        self, users: np.ndarray, k: int, exclude_seen: bool, candidates: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        exclude = self.seen if exclude_seen else None
        if candidates is not None or self.index is None or not isinstance(self.model, NCFModel):
            return self.model.recommend(users, k, exclude=exclude, candidates=candidates)
        # FAISS retrieve (enough to survive the seen filter), then NCF rank.
        n_seen = np.diff(self.seen.indptr)[users].max() if exclude_seen else 0
        _, cand = self.index.search(self.model.user_vectors(users), max(MIN_RETRIEVE, 4 * k) + int(n_seen))
        if exclude_seen:
            rows = self.seen[users]
            for r in range(len(users)):
                row_seen = rows.indices[rows.indptr[r] : rows.indptr[r + 1]]
                cand[r, np.isin(cand[r], row_seen)] = -1
        scores = self.model.rank(users, cand)
        pos, top_scores = top_k(scores, k, np.arange(cand.shape[1]))
        items = np.where(pos >= 0, np.take_along_axis(cand, np.maximum(pos, 0), 1), -1)
        return items, top_scores

    def _to_external(self, user_id: str, items: np.ndarray, scores: np.ndarray, source: Source) -> Recommendations:
        ok = items >= 0
        return Recommendations(user_id, self.items.to_external(items[ok]), [float(s) for s in scores[ok]], source)

    def similar_items(self, item_id: str, k: int) -> list[tuple[str, float]]:
        """Items nearest to ``item_id`` in the item-tower space (NCF only); KeyError if unknown."""
        if self.index is None or not isinstance(self.model, NCFModel):
            raise ValueError(f"model {self.model.name!r} has no item vectors")
        idx = self.items.to_internal([item_id])
        scores, ids = self.index.search(self.model.item_vectors()[idx], k + 1)
        pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0 and i != idx[0]][:k]
        return [(self.items.to_external([i])[0], s) for i, s in pairs]
