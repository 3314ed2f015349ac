"""Artifacts -> answers: FAISS retrieve, NCF rank, filter. Used by the API and batch scoring.

``ServedModel.load`` verifies the version (every file listed in the manifest, with its
size and checksum; nothing unlisted), parses every file with its shapes and indices
checked, and checks that the parts fit each other before anything is served, so a
corrupt artifact is refused whole, with one line naming the file. External string ids
are converted here, at the edge.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp

from tlrec.training.artifacts import ArtifactError, open_version, read_json
from tlrec.training.data import DataError, IdMap
from tlrec.training.models import NCFModel, PopularityModel, Recommender, get_model_class
from tlrec.training.models.base import CONFIG_FILE, top_k
from tlrec.training.train import FALLBACK_DIR, ITEMS_FILE, MODEL_DIR, SEEN_FILE, USERS_FILE, load_seen
from tlrec.serving.index import VectorIndex

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
MIN_RETRIEVE = 200
# exact indexes answer small batches with one BLAS product + argpartition (see ``_search``)
# while the score matrix stays under this many entries (16 MB); larger batches go to FAISS
NUMPY_SEARCH_MAX_SCORES = 1 << 22
Source = Literal["model", "history", "popular"]


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


def _id_map(path: Path) -> IdMap:
    """An artifact's id map; ``ArtifactError`` naming the file if it is not a JSON list of unique strings."""
    try:
        return IdMap.load(path)
    except DataError as exc:
        raise ArtifactError(f"{path}: {str(exc).removeprefix(f'{path.name}: ')}") from None


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
    def load(cls, artifacts: Path) -> "ServedModel":
        """Load the version ``artifacts`` names (a version dir, or a root with ``current``).

        Always verified first (``open_version``): every file of the version listed in its
        manifest, present, of the listed size and sha256, and nothing unlisted. Every file
        is then read through the verified version, so one the manifest does not list is
        refused, and parsed with its dtypes, shapes and indices checked; the parts must
        agree with each other (model, fallback, id maps, seen matrix, index). Raises
        ``ArtifactError``: one line ``<file>: <what is wrong>``.
        """
        version = open_version(Path(artifacts))
        version_dir = version.path
        model_dir = version_dir / MODEL_DIR
        config_path = version.file(MODEL_DIR, CONFIG_FILE)
        meta = read_json(config_path)
        name = meta.get("model") if isinstance(meta, dict) else None
        try:
            model_class = get_model_class(str(name))
        except ValueError as exc:
            raise ArtifactError(f"{config_path}: {exc}") from None
        model = model_class.load(model_dir, version)
        fallback = PopularityModel.load(version_dir / FALLBACK_DIR, version)
        items = _id_map(version.file(ITEMS_FILE))
        users = _id_map(version.file(USERS_FILE))
        seen = load_seen(version.file(SEEN_FILE))
        if model.n_items != len(items):
            raise ArtifactError(f"{version_dir / ITEMS_FILE}: {len(items)} items, but {config_path} says "
                                f"{model.n_items}")
        if model.n_users != len(users):
            raise ArtifactError(f"{version_dir / USERS_FILE}: {len(users)} users, but {config_path} says "
                                f"{model.n_users}")
        if fallback.n_items != len(items):
            raise ArtifactError(f"{version_dir / FALLBACK_DIR / CONFIG_FILE}: fallback over {fallback.n_items} "
                                f"items, but {ITEMS_FILE} holds {len(items)}")
        if seen.shape != (len(users), len(items)):
            raise ArtifactError(f"{version_dir / SEEN_FILE}: shape {list(seen.shape)}, expected "
                                f"[{len(users)}, {len(items)}] (users x items)")
        index = None
        if isinstance(model, NCFModel):
            index = VectorIndex.load(version.file(INDEX_FILE))
            if index.dim != model.item_vectors().shape[1] or index.ntotal != model.n_items:
                raise ArtifactError(
                    f"{version_dir / INDEX_FILE}: index holds {index.ntotal} x {index.dim}, "
                    f"model expects {model.n_items} x {model.item_vectors().shape[1]}"
                )
        logger.info("loaded artifact %s (%s, %d users, %d items)", version.name, model.name, len(users), len(items))
        return cls(version.name, model, fallback, items, users, seen, index, version.manifest)

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
        indptr, indices = self.seen.indptr, self.seen.indices
        counts = indptr[users + 1] - indptr[users] if exclude_seen else np.zeros(len(users), np.int64)
        cand = self._retrieve(self.model.user_vectors(users), max(MIN_RETRIEVE, 4 * k), counts)
        if exclude_seen:  # csr row slices and a reused item mask: no scipy indexing, no sorting
            mask = np.zeros(self.seen.shape[1], dtype=bool)
            for r, u in enumerate(users):
                row_seen = indices[indptr[u] : indptr[u + 1]]
                mask[row_seen] = True
                cand[r, mask[cand[r]] & (cand[r] >= 0)] = -1
                mask[row_seen] = False
        scores = self.model.rank(users, cand)
        pos, top_scores = top_k(scores, k, np.arange(cand.shape[1]))
        items = np.where(pos >= 0, np.take_along_axis(cand, np.maximum(pos, 0), 1), -1)
        return items, top_scores

    def _retrieve(self, queries: np.ndarray, depth: int, extra: np.ndarray) -> np.ndarray:
        """FAISS top ``depth + extra[r]`` for each query row (int64 ``[n, depth + max(extra)]``, -1 padded).

        Each row gets exactly its own depth (deep enough to survive dropping its ``extra`` seen
        items), so a user's list does not depend on who else is in the batch.
        """
        _, cand = self._search(queries, depth + int(extra.max(initial=0)))
        own = depth + np.asarray(extra, np.int64)
        cand[np.arange(cand.shape[1])[None, :] >= own[:, None]] = -1
        return cand

    def history_matrix(
        self, histories: Sequence[Sequence[str]], weights: Sequence[Sequence[float] | None] | None = None
    ) -> tuple[sp.csr_matrix, int]:
        """csr ``[n, n_items]`` of ad-hoc histories (external item ids oldest first, optional weights, default 1).

        Each weight is multiplied by the model's recency weight for its position
        (``Recommender.history_weights``). Unknown item ids are ignored (they still count as
        positions); returns the matrix and how many ids were unknown.
        """
        rows, cols, vals, unknown = [], [], [], 0
        for r, ids in enumerate(histories):
            idx = self.items.to_internal(list(ids), missing="ignore")
            w = np.ones(len(idx), np.float32) if weights is None or weights[r] is None else np.asarray(weights[r], np.float32)
            if len(w) != len(idx):
                raise ValueError(f"history {r}: {len(idx)} item ids but {len(w)} weights")
            w = w * self.model.history_weights(len(idx))  # the model's recency, by position
            ok = idx >= 0
            unknown += int((~ok).sum())
            rows.extend([r] * int(ok.sum()))
            cols.extend(idx[ok].tolist())
            vals.extend(w[ok].tolist())
        matrix = sp.csr_matrix((vals, (rows, cols)), shape=(len(histories), len(self.items)), dtype=np.float32)
        matrix.sum_duplicates()
        return matrix, unknown

    def recommend_history(
        self,
        histories: Sequence[Sequence[str]],
        k: int,
        weights: Sequence[Sequence[float] | None] | None = None,
        exclude_history: bool = True,
        candidates: Sequence[str] | None = None,
        user_ids: Sequence[str] | None = None,
    ) -> list[Recommendations]:
        """Top-k for ad-hoc histories of external item ids, without retraining (new or anonymous users).

        ``user_ids`` (optional, one per history) names the users in the answers; a known
        user's learned part is used where the model has one (NCF). A history with no known
        item gets popular items (source "popular"); the others come from the model
        (source "history"), or from the fallback when the model cannot use histories.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        names = list(user_ids) if user_ids is not None else [""] * len(histories)
        matrix, _ = self.history_matrix(histories, weights)
        cand_idx = None
        if candidates is not None:
            cand_idx = self.items.to_internal(list(candidates), missing="ignore")
            cand_idx = np.unique(cand_idx[cand_idx >= 0])
        has_items = np.diff(matrix.indptr) > 0
        use_model = has_items & self.model.recommends_from_history
        out: list[Recommendations | None] = [None] * len(histories)
        if use_model.any():
            rows = np.flatnonzero(use_model)
            h = matrix[rows]
            if isinstance(self.model, NCFModel) and self.index is not None and cand_idx is None:
                known = self.users.to_internal([names[r] for r in rows], missing="ignore") if user_ids else None
                p = self.model.history_vectors(h, known)
                counts = np.diff(h.indptr) if exclude_history else np.zeros(len(rows), np.int64)
                cand = self._retrieve(p, max(MIN_RETRIEVE, 4 * k), counts)
                if exclude_history:
                    for r in range(len(rows)):
                        cand[r, np.isin(cand[r], h.indices[h.indptr[r] : h.indptr[r + 1]])] = -1
                pos, scores = top_k(self.model.rank_vectors(p, cand), k, np.arange(cand.shape[1]))
                items = np.where(pos >= 0, np.take_along_axis(cand, np.maximum(pos, 0), 1), -1)
            else:
                items, scores = self.model.recommend_history(h, k, exclude_history, cand_idx)
            for r, row_items, row_scores in zip(rows, items, scores):
                out[r] = self._to_external(names[r], row_items, row_scores, "history")
        rest = np.flatnonzero(~use_model)
        if len(rest):
            items, scores = self.fallback.recommend_history(matrix[rest], k, exclude_history, cand_idx)
            for r, row_items, row_scores in zip(rest, items, scores):
                out[r] = self._to_external(names[r], row_items, row_scores, "popular")
        return [r for r in out if r is not None]

    def _to_external(self, user_id: str, items: np.ndarray, scores: np.ndarray, source: Source) -> Recommendations:
        ok = items >= 0
        return Recommendations(user_id, self.items.to_external(items[ok]), [float(s) for s in scores[ok]], source)

    def similar_items(self, item_id: str, k: int) -> list[tuple[str, float]]:
        """Items nearest to ``item_id`` in the item-tower space (NCF only); KeyError if unknown."""
        if self.index is None or not isinstance(self.model, NCFModel):
            raise ValueError(f"model {self.model.name!r} has no item vectors")
        idx = self.items.to_internal([item_id])
        scores, ids = self._search(self.model.item_vectors()[idx], k + 1)
        pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0 and i != idx[0]][:k]
        return [(self.items.to_external([i])[0], s) for i, s in pairs]

    # ------------------------------------------------------------------ serving helpers
    def seen_items(self, user_id: str) -> list[str]:
        """External ids of the items ``user_id`` has in the training data, oldest first where the
        model keeps the order (empty for unknown users)."""
        (u,) = self.users.to_internal([user_id], missing="ignore")
        if u < 0:
            return []
        seen = self.seen.indices[self.seen.indptr[u] : self.seen.indptr[u + 1]]
        ordered = self.model.ordered_history(int(u))
        if ordered is not None:  # oldest first, as histories are weighed by position
            seen = np.concatenate([np.setdiff1d(seen, ordered), ordered])
        return self.items.to_external(seen)

    def popular(
        self,
        k: int,
        user_id: str | None = None,
        exclude_items: Sequence[str] = (),
        candidates: Sequence[str] | None = None,
    ) -> Recommendations:
        """The fallback answer, cheap enough for any deadline: the k most popular items.

        Drops ``user_id``'s seen items (when given and known) and ``exclude_items``; ranks
        only among ``candidates`` when given. Source "popular".
        """
        order = self._popular_order()
        if candidates is not None:
            cand = self.items.to_internal(list(candidates), missing="ignore")
            order = order[np.isin(order, cand[cand >= 0])]
        drop = self.items.to_internal(list(exclude_items), missing="ignore") if exclude_items else np.empty(0, np.int64)
        if user_id is not None:
            (u,) = self.users.to_internal([user_id], missing="ignore")
            if u >= 0:
                drop = np.concatenate([drop, self.seen.indices[self.seen.indptr[u] : self.seen.indptr[u + 1]]])
        if len(drop):
            order = order[~np.isin(order, drop)]
        top = order[:k]
        scores = self.fallback.item_scores[top] if hasattr(self.fallback, "item_scores") else np.zeros(len(top))
        return self._to_external(user_id or "", top, np.asarray(scores, np.float32), "popular")

    def _popular_order(self) -> np.ndarray:
        order = getattr(self, "_popular_cache", None)
        if order is None:
            scores = np.asarray(self.fallback.item_scores, np.float32)
            order = np.argsort(-scores, kind="stable").astype(np.int64)
            self._popular_cache = order
        return order

    def _search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``VectorIndex.search`` semantics (top ``n`` by inner product, best first, float32/int64 ``[m, n]``).

        An exact (flat) index answers small batches here, from its own vectors: one BLAS
        product and an argpartition. Same candidates as FAISS (ties aside), measured 2x
        faster in the served path on a 10,000 x 65 index (0.19 vs 0.39 ms per query), where
        FAISS's per-query loop and heap dominate. Approximate indexes and large batches
        (over ``NUMPY_SEARCH_MAX_SCORES`` scores) go to FAISS.
        """
        vectors = self._flat_vectors()
        q = np.ascontiguousarray(queries, dtype=np.float32)
        too_big = vectors is None or q.shape[0] * vectors.shape[0] > NUMPY_SEARCH_MAX_SCORES
        if too_big or q.ndim != 2 or q.shape[1] != vectors.shape[1]:
            return self.index.search(q, n)
        total = vectors.shape[0]
        n = max(1, min(n, total))
        scores = (vectors @ q.T).T  # [m, total]; this order is 2x faster than q @ vectors.T for m > 1
        part = np.argpartition(scores, total - n, axis=1)[:, total - n :] if n < total else \
            np.tile(np.arange(total), (len(q), 1))
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        return np.take_along_axis(part_scores, order, 1), np.take_along_axis(part, order, 1).astype(np.int64)

    def _flat_vectors(self) -> np.ndarray | None:
        """float32 ``[ntotal, dim]`` view of an exact (flat inner-product) index's own vectors (no copy).

        None for other indexes. The view lives as long as the index, which is never modified.
        """
        cached = getattr(self, "_flat_cache", False)
        if cached is False:
            import faiss

            inner = self.index.index if self.index is not None else None
            cached = None
            if isinstance(inner, faiss.IndexFlat) and inner.metric_type == faiss.METRIC_INNER_PRODUCT:
                flat = faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * inner.d)
                cached = np.asarray(flat, dtype=np.float32).reshape(inner.ntotal, inner.d)
            self._flat_cache = cached
        return cached

    def warm_up(self) -> None:
        """Run every served path once (first calls of torch/FAISS are slow), so the first request is not."""
        self._popular_order()
        users = self.users.to_external(np.arange(min(1, len(self.users))))
        if users:
            self.recommend(users, 10)
        first = self.items.to_external(np.arange(min(2, len(self.items))))
        if first:
            self.recommend_history([first], 10, user_ids=users[:1] or None)
            if self.index is not None:
                self.similar_items(first[0], 10)
