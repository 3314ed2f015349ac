"""A loaded model version answering with external ids: the one path of the API and batch scoring.

For a model with the retrieval capability (``Recommender.retrieval``) every list comes from
one path, the model's ``retrieve_rank`` with the version's FAISS index doing the retrieval:
the query vectors (a user's, or a history's) retrieve the best items by inner product, seen
items are dropped (vectorised over the batch), the model ranks what is left and the top k is
kept. With a candidate set (``candidates``) every candidate is scored exactly; a model
without the capability answers with its own exact ``recommend``. Unknown users and empty
histories get the popularity fallback.

``ServedModel.load`` verifies the version (every file listed in the manifest, with its
size and checksum; nothing unlisted) and reads it through ``training.model_artifact``, which
parses every file with its shapes and indices checked and checks that the parts fit each
other before anything is served, so a corrupt artifact is refused whole, with one line
naming the file. External string ids are converted here, at the edge.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import polars as pl
import scipy.sparse as sp

from tlrec.tables import Columns
from tlrec.training.artifacts import open_version
from tlrec.training.id_map import IdMap
from tlrec.training.index import VectorIndex
from tlrec.training.model_artifact import ModelArtifact
from tlrec.training.models import PopularityModel, Recommender
from tlrec.training.models.base import drop_excluded, masked_top_k, top_k
from tlrec.training.models.ncf_explain import ScoreExplanation
from tlrec.training.sequences import TIME_UNKNOWN, Sequences

logger = logging.getLogger(__name__)

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


@runtime_checkable
class ExplainsScores(Protocol):
    """A model that splits its scores over a history's items (``NCFModel``; see ``training.models.ncf_explain``)."""

    explanation_method: str

    def explain_user(self, user_idx: int, items: np.ndarray) -> ScoreExplanation: ...

    def explain_history(self, history: sp.csr_matrix, items: np.ndarray) -> ScoreExplanation: ...


@dataclass
class ScoreSplit:
    """One item's score split, with external ids: ``score = baseline + sum(contributions) + head
    = content + learned_id + head``.

    ``contributions``: ``(history item id, contribution, its content part)`` for every distinct
    history item, largest ``|contribution|`` first.
    """

    item_id: str
    score: float
    baseline: float
    head: float
    content: float
    learned_id: float
    contributions: list[tuple[str, float, float]]


class ExplanationUnavailable(ValueError):
    """The model cannot split this score (its reason is the message)."""


class ServedModel:
    """A loaded artifact version: model, fallback, FAISS index (retrieval models), id maps, seen items."""

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
        #: lists without a candidate set come from ``model.retrieve_rank`` over the FAISS index (``_retrieve``)
        self.retrieves = index is not None and model.retrieval
        #: similar items of a model without an index (a blend with NCF) are searched exactly in this space
        self._item_space = None if self.retrieves else model.item_space()

    @classmethod
    def load(cls, artifacts: Path) -> "ServedModel":
        """Load the version ``artifacts`` names (a version dir, or a root with ``current``).

        Always verified first (``open_version``): every file of the version listed in its
        manifest, present, of the listed size and sha256, and nothing unlisted. The files
        are then read through the verified version (``ModelArtifact.read``), so one the
        manifest does not list is refused, and parsed with their dtypes, shapes and indices
        checked; the parts must agree with each other (model, fallback, id maps, seen
        matrix, index). Raises ``ArtifactError``: one line ``<file>: <what is wrong>``.
        """
        version = open_version(Path(artifacts))
        art = ModelArtifact.read(version)
        logger.info("loaded artifact %s (%s, %d users, %d items)", version.name, art.model.name, len(art.users),
                    len(art.items))
        return cls(version.name, art.model, art.fallback, art.items, art.users, art.seen, art.index, version.manifest)

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
        items, scores, known = self._top_k(user_ids, k, exclude_seen, candidates)
        out = self._answers(user_ids, items, scores, "model")
        for row in np.flatnonzero(~known):
            out[row].source = "popular"
        return out

    def recommend_frame(
        self,
        user_ids: Sequence[str],
        k: int,
        exclude_seen: bool = True,
        candidates: Sequence[str] | None = None,
    ) -> tuple[pl.DataFrame, int]:
        """``recommend``'s lists in long format, built from arrays (batch scoring): the frame and how many
        users were unknown (answered with popular items).

        Columns ``user_id, item_id`` (String), ``score`` (Float64), ``rank`` (Int32, 1 = best); users in input
        order, each user's rows best first.
        """
        items, scores, known = self._top_k(user_ids, k, exclude_seen, candidates)
        ok = items >= 0
        rows = np.repeat(np.arange(len(user_ids)), ok.sum(axis=1))
        ranks = np.broadcast_to(np.arange(1, items.shape[1] + 1, dtype=np.int32), items.shape)
        frame = pl.DataFrame({
            Columns.USER: pl.Series(list(user_ids), dtype=pl.String).gather(rows),
            Columns.ITEM: self._item_id_series().gather(items[ok]),
            Columns.SCORE: scores[ok].astype(np.float64),
            Columns.RANK: ranks[ok],
        })
        return frame, int((~known).sum())

    def _top_k(self, user_ids: Sequence[str], k: int, exclude_seen: bool,
               candidates: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Internal items int64 ``[n, k]`` (-1 padded at the end), scores float32 ``[n, k]`` and a bool ``[n]``
        mask of the known users (the others got the popularity fallback)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        user_idx = self.users.to_internal(list(user_ids), missing="ignore")
        cand_idx = None
        if candidates is not None:
            cand_idx = self.items.to_internal(list(candidates), missing="ignore")
            cand_idx = np.unique(cand_idx[cand_idx >= 0])
        known = user_idx >= 0
        items = np.full((len(user_idx), k), -1, np.int64)
        scores = np.full((len(user_idx), k), -np.inf, np.float32)
        if known.any():
            got, got_scores = self._model_top_k(user_idx[known], k, exclude_seen, cand_idx)
            items[known, : got.shape[1]], scores[known, : got.shape[1]] = got, got_scores
        if (~known).any():
            got, got_scores = self.fallback.recommend(np.zeros(int((~known).sum()), np.int64), k, None, cand_idx)
            items[~known, : got.shape[1]], scores[~known, : got.shape[1]] = got, got_scores
        return items, scores, known

    def _item_id_series(self) -> pl.Series:
        """The external item ids as a polars String series, by internal id (built once)."""
        series = getattr(self, "_item_id_cache", None)
        if series is None:
            series = self._item_id_cache = pl.Series(self.items.external.tolist(), dtype=pl.String)
        return series

    def _model_top_k(
        self, users: np.ndarray, k: int, exclude_seen: bool, candidates: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if candidates is not None or not self.retrieves:  # exact: every candidate (or item) scored
            return self.model.recommend(users, k, exclude=self.seen if exclude_seen else None, candidates=candidates)
        queries = self.model.query_vectors(users)
        return self.model.retrieve_rank(queries, k, self.seen[users] if exclude_seen else None, self._retrieve)

    def _retrieve(self, queries: np.ndarray, depth: int, exclude: sp.csr_matrix | None) -> np.ndarray:
        """``Retrieve`` over the FAISS index: each row's best ``depth`` items outside ``exclude`` (int64, -1 padded).

        The search goes ``depth`` + the most excluded items any row has deep, so every row keeps
        ``depth`` survivors; the excluded items are then dropped for the whole batch at once
        (``drop_excluded``). A row's survivors lie within its own top ``depth`` + its own count
        of excluded items, so a user's list does not depend on who else is in the batch.
        """
        most = int(np.diff(exclude.indptr).max(initial=0)) if exclude is not None else 0
        _, cand = self._search(queries, depth + most)
        return drop_excluded(cand, exclude, depth)

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
        events: Sequence[Sequence[str | None] | None] | None = None,
        timestamps: Sequence[Sequence[int | None] | None] | None = None,
    ) -> list[Recommendations]:
        """Top-k for ad-hoc histories of external item ids, without retraining (new or anonymous users).

        ``user_ids`` (optional, one per history) names the users in the answers; a known
        user's learned part is used where the model keeps one (``history_vectors``). A history with no known
        item gets popular items (source "popular"); the others come from the model
        (source "history"), or from the fallback when the model cannot use histories.
        A model that reads sequences (``Recommender.reads_sequences``: the next-item model) reads
        each history in order with its ``events`` and ``timestamps`` (optional, per item; unknown
        items are skipped) instead of the weighted matrix.
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
            if self.retrieves and self.model.reads_sequences:
                queries = self.model.sequence_vectors(self.sequences(
                    [histories[r] for r in rows], None if events is None else [events[r] for r in rows],
                    None if timestamps is None else [timestamps[r] for r in rows]))
                exclude = h if exclude_history else None
                if cand_idx is None:
                    items, scores = self.model.retrieve_rank(queries, k, exclude, self._retrieve)
                else:
                    items, scores = self._rank_candidates(queries, k, exclude, cand_idx)
            elif self.retrieves and cand_idx is None:
                known = self.users.to_internal([names[r] for r in rows], missing="ignore") if user_ids else None
                queries = self.model.history_vectors(h, known)
                items, scores = self.model.retrieve_rank(queries, k, h if exclude_history else None, self._retrieve)
            else:
                items, scores = self.model.recommend_history(h, k, exclude_history, cand_idx)
            for r, rec in zip(rows, self._answers([names[r] for r in rows], items, scores, "history")):
                out[r] = rec
        rest = np.flatnonzero(~use_model)
        if len(rest):
            items, scores = self.fallback.recommend_history(matrix[rest], k, exclude_history, cand_idx)
            for r, rec in zip(rest, self._answers([names[r] for r in rest], items, scores, "popular")):
                out[r] = rec
        return [r for r in out if r is not None]

    def sequences(self, histories: Sequence[Sequence[str]], events: Sequence[Sequence[str | None] | None] | None,
                  timestamps: Sequence[Sequence[int | None] | None] | None) -> Sequences:
        """Ad-hoc ``Sequences`` of external item ids oldest first (unknown items skipped), with the model's
        event codes and the timestamps (None = unknown) where sent."""
        vocab = self.model.event_vocabulary
        items, codes, stamps = [], [], []
        for r, ids in enumerate(histories):
            idx = self.items.to_internal(list(ids), missing="ignore")
            ok = idx >= 0
            ev = events[r] if events is not None else None
            ts = timestamps[r] if timestamps is not None else None
            if (ev is not None and len(ev) != len(idx)) or (ts is not None and len(ts) != len(idx)):
                raise ValueError(f"history {r}: {len(idx)} item ids but {len(ev or ts or [])} events or timestamps")
            items.append(idx[ok])
            codes.append(None if ev is None else vocab.codes(list(ev))[ok])
            stamps.append(None if ts is None else np.array([TIME_UNKNOWN if t is None else t for t in ts],
                                                           np.int64)[ok])
        return Sequences.from_lists(items, codes, stamps)

    def _rank_candidates(self, queries: np.ndarray, k: int, exclude: sp.csr_matrix | None,
                         candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-k among ``candidates`` (int64 ``[m]``) for each query, scored by the model's ranking."""
        scores = self.model.rank_vectors(queries, np.broadcast_to(candidates, (len(queries), len(candidates))))
        return masked_top_k(scores, k, exclude, candidates)

    def _to_external(self, user_id: str, items: np.ndarray, scores: np.ndarray, source: Source) -> Recommendations:
        return self._answers([user_id], items[None, :], scores[None, :], source)[0]

    def _answers(self, names: Sequence[str], items: np.ndarray, scores: np.ndarray,
                 source: Source) -> list[Recommendations]:
        """One ``Recommendations`` per row of ``items``/``scores`` ``[n, k]`` (item -1 = none), ids converted at once."""
        ok = items >= 0
        ids = self.items.to_external(items[ok])
        values = scores[ok].tolist()
        out, start = [], 0
        for name, count in zip(names, ok.sum(axis=1).tolist()):
            out.append(Recommendations(name, ids[start : start + count], values[start : start + count], source))
            start += count
        return out

    @property
    def has_item_space(self) -> bool:
        """True when ``similar_items`` can answer (the model has an item space: ``Recommender.item_space``)."""
        return self.retrieves or self._item_space is not None

    def similar_items(self, item_id: str, k: int) -> list[tuple[str, float]]:
        """Items nearest to ``item_id`` in the model's item space; KeyError if unknown.

        Retrieval models search their FAISS index; other models with an item space (a blend with
        NCF) are searched exactly. ValueError for a model without one.
        """
        if not self.has_item_space:
            raise ValueError(f"model {self.model.name!r} has no item vectors")
        idx = self.items.to_internal([item_id])
        if self.retrieves:
            scores, ids = self._search(self.model.item_vectors()[idx], k + 1)
        else:
            assert self._item_space is not None
            ids, scores = top_k(self._item_space[idx] @ self._item_space.T, k + 1, np.arange(len(self.items)))
        pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0 and i != idx[0]][:k]
        return [(self.items.to_external([i])[0], s) for i, s in pairs]

    # ------------------------------------------------------------------ explanations
    @property
    def explanation_method(self) -> str | None:
        """What ``explain`` figures are (one line), or None when the model cannot explain its scores."""
        return self.model.explanation_method if isinstance(self.model, ExplainsScores) else None

    def explain(self, user_id: str, item_ids: Sequence[str], fresh: Sequence[str] = ()) -> list[ScoreSplit]:
        """Split the scores ``recommend`` (no ``fresh`` items) or ``recommend_history`` (the user's items plus
        ``fresh``, as serving builds that history) gives ``item_ids`` for ``user_id``; one per known item, in order.

        Raises ``ExplanationUnavailable`` (the reason) for a model that cannot, or a user with no history.
        """
        model = self.model
        if not isinstance(model, ExplainsScores) or model.reads_sequences:
            raise ExplanationUnavailable(f"model {model.name!r} does not split its scores")
        idx = self.items.to_internal(list(item_ids), missing="ignore")
        idx = idx[idx >= 0]
        (user,) = self.users.to_internal([user_id], missing="ignore")
        if fresh:
            history, _ = self.history_matrix([self.seen_items(user_id) + list(fresh)])
            split = model.explain_history(history, idx)
        elif user >= 0:
            split = model.explain_user(int(user), idx)
        else:
            raise ExplanationUnavailable(f"no history for user {user_id[:64]!r}")
        names = self.items.to_external(split.history)
        out = []
        for r, item in enumerate(self.items.to_external(split.items)):
            order = np.argsort(-np.abs(split.contributions[r]), kind="stable")
            parts = [(names[j], float(split.contributions[r, j]), float(split.contribution_content[r, j]))
                     for j in order]
            out.append(ScoreSplit(item, float(split.score[r]), float(split.baseline[r]), float(split.head[r]),
                                  float(split.content[r]), float(split.learned_id[r]), parts))
        return out

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
        product and an argpartition, the same candidates as FAISS (ties aside) without its
        per-query loop and heap (figures: ``bench/results/api_load.md``). Approximate indexes and large batches
        (over ``NUMPY_SEARCH_MAX_SCORES`` scores) go to FAISS.
        """
        vectors = self._flat_vectors()
        q = np.ascontiguousarray(queries, dtype=np.float32)
        too_big = vectors is None or q.shape[0] * vectors.shape[0] > NUMPY_SEARCH_MAX_SCORES
        if too_big or q.ndim != 2 or q.shape[1] != vectors.shape[1]:
            return self.index.search(q, n)
        total = vectors.shape[0]
        n = max(1, min(n, total))
        scores = (vectors @ q.T).T  # [m, total]; this order is faster than q @ vectors.T for m > 1
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
            if self.has_item_space:
                self.similar_items(first[0], 10)
