"""One interface for every recommender model.

Models work on internal contiguous ids only (see ``training.id_map.IdMap``); external
string ids live at the edges (``serving``, ``services``). A model is fitted on an
``InteractionData`` whose item index is the whole catalog, so items with no
interactions still have a row and, for content-aware models, a score.

Public methods validate and delegate to private ``_fit`` / ``_score`` (the RecTools
pattern). A model saves to a directory as ``config.json`` (its pydantic config, JSON
round-trip) and ``weights.safetensors``; nothing is pickled.

A model with the **retrieval** capability (``Recommender.retrieval``) scores by an inner
product between query vectors (users, or ad-hoc histories) and item vectors, which an index
can search, and re-ranks a candidate set. Its ``recommend`` and ``recommend_history`` then
run one path, :meth:`Recommender.retrieve_rank`: retrieve each row's ``retrieval_depth`` best
items by inner product outside the excluded (seen) items, rank them, keep the top k. Serving
runs the same path with its FAISS index doing the retrieval (``drop_excluded`` drops the seen
items from the index's answers, vectorised over the batch).
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Literal, Self

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from safetensors.torch import save_file

from tlrec.tables import DataError
from tlrec.training.artifacts import (
    ArtifactError,
    VerifiedVersion,
    first_line,
    load_tensors,
    read_json,
    tensor_array,
)
from tlrec.training.interaction_data import InteractionData
from tlrec.training.sequences import EventVocabulary, Sequences
from tlrec.training.validation import SplitBy, ValidationSplit

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
#: Retrieval models rank the best ``max(MIN_RETRIEVE, RETRIEVE_PER_K * k)`` items by inner product.
MIN_RETRIEVE = 200
RETRIEVE_PER_K = 4
#: Size in bits of the (row, item) table ``drop_excluded`` looks candidates up in, per block of rows (1 MiB).
EXCLUDE_TABLE_BITS = 1 << 23

#: ``retrieve(queries [n, d], depth, exclude csr [n, n_items] | None) -> candidates int64 [n, <= depth]``:
#: each row's best ``depth`` items by inner product that ``exclude`` does not hold, best first, -1 padded.
Retrieve = Callable[[np.ndarray, int, "sp.csr_matrix | None"], np.ndarray]


@contextmanager
def deterministic_torch() -> Iterator[None]:
    """Torch's deterministic kernels for the block (the previous setting after it).

    With more than one thread some CPU kernels (attention's dropout, for one) otherwise give
    different weights run to run from the same seed; with this, the same inputs and the same
    thread count give the same model (``tlrec train --ray-address`` relies on it). Ops without a
    deterministic kernel warn instead of failing.
    """
    was, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)


class ModelConfig(BaseModel):
    """Base of every model's config: unknown keys are an error, JSON round-trips."""

    model_config = ConfigDict(extra="forbid")


class ConfigFlag:
    """A capability that depends on how an instance is configured: ``flag(config)`` on an instance,
    False on the class (unknown until configured)."""

    def __init__(self, flag: Callable[[ModelConfig], bool]) -> None:
        self.flag = flag

    def __get__(self, obj: Recommender | None, objtype: type | None = None) -> bool:
        return obj is not None and self.flag(obj.config)


class NotFittedError(RuntimeError):
    """Raised when a model is used before ``fit`` or ``load``."""


class Recommender(ABC):
    """Base class: ``fit`` returns self; ``score`` and ``recommend`` work on internal ids.

    Capability flags tell callers what the model can do:
    ``recommends_for_cold_items`` (items without training interactions get meaningful
    scores, e.g. through content), ``recommends_for_cold_users`` and
    ``recommends_from_history`` (an ad-hoc history of item ids, e.g. a new or anonymous
    user, or a known user's newest events, gets recommendations without retraining),
    ``retrieval`` (query vectors, item vectors and a ranking of candidate sets:
    ``query_vectors``, ``history_vectors``, ``item_vectors``, ``rank_vectors``; the model
    implements the private hooks ``_query_vectors``, ``_history_vectors``, ``_item_vectors``
    and ``_rank_vectors``), and ``finetunes_text`` (``set_text_finetuning`` before ``fit``).
    """

    name: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]]
    recommends_for_cold_items: ClassVar[bool] = False
    recommends_for_cold_users: ClassVar[bool] = False
    recommends_from_history: ClassVar[bool] = False
    retrieval: ClassVar[bool] = False
    finetunes_text: ClassVar[bool] = False
    #: reads a history's order, event types and times (``sequence_vectors``), not only its items
    reads_sequences: ClassVar[bool] = False
    #: an iterative fit that ends early when its validation score is hopeless against the best
    #: closed-form candidate's (``ValidationSplit.hopeless``); model selection runs these last
    stops_early: ClassVar[bool] = False
    #: a retrieval model whose ``rank_vectors`` is the inner product the index searches: its lists
    #: are the retrieval's top k (nothing deeper to re-rank)
    ranks_by_inner_product: bool = False

    def __init__(self, config: ModelConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class()
        self.n_users = 0
        self.n_items = 0
        self.is_fitted = False
        #: NDCG@10 on the held-out events of the last ``tune`` (None: not tuned)
        self.validation_ndcg_: float | None = None

    # ----------------------------------------------------------------- fitting
    def fit(self, data: InteractionData, item_vectors: np.ndarray | None = None,
            validation: ValidationSplit | None = None) -> Self:
        """Fit on ``data``; ``item_vectors`` is float32 ``[data.n_items, d]`` content (optional).

        A model that chooses settings on held-out events (``chooses_on_validation``) runs
        ``tune`` on ``validation`` (made from ``data`` by ``ValidationSplit.of`` when not given)
        and then ``refit`` on all of ``data`` with what it chose; other models fit on ``data``.
        Raises ``DataError`` on empty data, ValueError on vectors whose shape does not match.
        """
        if self.chooses_on_validation():
            split = validation if validation is not None else ValidationSplit.of(
                data, self.validation_fraction(), by=self.validation_by())
            if not split.empty:
                return self.tune(split, item_vectors).refit(data, item_vectors)
            logger.warning("%s: no held-out events to choose settings on (every user has < 2); using the "
                           "configured defaults", self.name)
        vectors = self._prepare(data, item_vectors)
        with deterministic_torch():
            self._fit(data, vectors, None)
        self.is_fitted = True
        return self

    def tune(self, validation: ValidationSplit, item_vectors: np.ndarray | None = None) -> Self:
        """Fit on ``validation.fit_data``, choosing settings on its held-out events.

        Sets ``validation_ndcg_``: NDCG@10 of the fitted model on the held-out events (seen
        items excluded), the figure ``training.selection`` compares models by.
        """
        vectors = self._prepare(validation.fit_data, item_vectors)
        with deterministic_torch():
            self._fit(validation.fit_data, vectors, validation)
        self.is_fitted = True
        self.validation_ndcg_ = validation.score_model(self)
        return self

    def refit(self, data: InteractionData, item_vectors: np.ndarray | None = None) -> Self:
        """Take all of ``data`` (what ``tune`` fitted on plus the held-out events) with the chosen settings."""
        vectors = self._prepare(data, item_vectors)
        with deterministic_torch():
            self._refit(data, vectors)
        self.is_fitted = True
        return self

    def _prepare(self, data: InteractionData, item_vectors: np.ndarray | None) -> np.ndarray | None:
        """Check ``data`` and ``item_vectors``; set the sizes. Returns the vectors as float32."""
        if data.interactions.height == 0:
            raise DataError(f"{self.name}: no interactions to fit on")
        if item_vectors is not None:
            # writeable: torch takes the array as is (Ray hands read-only arrays to its tasks)
            item_vectors = np.require(item_vectors, np.float32, ["W"])
            if item_vectors.ndim != 2 or item_vectors.shape[0] != data.n_items:
                raise ValueError(
                    f"{self.name}: item vectors have shape {item_vectors.shape}, "
                    f"expected [{data.n_items}, d] (one row per catalog item)"
                )
            if not np.isfinite(item_vectors).all():
                raise ValueError(f"{self.name}: item vectors contain NaN or inf")
        self.n_users, self.n_items = data.n_users, data.n_items
        return item_vectors

    @abstractmethod
    def _fit(self, data: InteractionData, item_vectors: np.ndarray | None,
             validation: ValidationSplit | None) -> None:
        """Fit on ``data``; with ``validation`` (whose ``fit_data`` is ``data``) choose settings on it."""

    def _refit(self, data: InteractionData, item_vectors: np.ndarray | None) -> None:
        """``refit``'s work; by default a fresh fit on ``data`` with the settings chosen by ``tune``."""
        self._fit(data, item_vectors, None)

    def chooses_on_validation(self) -> bool:
        """True when this model (as configured) chooses settings on held-out events (``tune``)."""
        return False

    def validation_fraction(self) -> float:
        """Share of each user's events ``fit`` holds out when it makes its own validation split."""
        return float(getattr(self.config, "val_fraction", 0.1) or 0.1)

    @property
    def event_vocabulary(self) -> EventVocabulary:
        """The event types this model reads (none here; a sequence model learns them in ``fit``)."""
        return EventVocabulary(())

    def validation_by(self) -> SplitBy | Literal["auto"]:
        """How ``fit`` holds out events when it makes its own validation split (``ValidationSplit.of``)."""
        return "auto"

    def scores_new_items_from_content(self) -> bool:
        """True when this fitted model places items without interactions by their content vectors."""
        return False

    def wants_item_vectors(self) -> bool:
        """True when this model (as configured) uses pre-trained item vectors in ``fit``."""
        return False

    def set_text_finetuning(self, tower: torch.nn.Module, text_slice: slice) -> None:
        """Give ``fit`` a trainable text tower (models with ``finetunes_text``); see ``NCFModel``."""
        raise NotImplementedError(f"{self.name}: cannot fine-tune a text encoder")

    # ----------------------------------------------------------------- scoring
    def score(self, user_idx: np.ndarray, item_idx: np.ndarray | None = None) -> np.ndarray:
        """Scores float32 ``[len(user_idx), n_items]`` (or ``[len(user_idx), len(item_idx)]``).

        Higher is better. ``user_idx`` are internal user ids in ``[0, n_users)``.
        """
        users = self._checked_users(user_idx)
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

        A retrieval model without ``candidates`` runs ``retrieve_rank`` (exact retrieval);
        with ``candidates``, every candidate is scored.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        users = np.asarray(user_idx, dtype=np.int64)
        if self.retrieval and candidates is None:
            queries = self.query_vectors(users)
            return self._retrieve_rank(queries, k, None if exclude is None else exclude[users], self._exact_retrieve)
        scores = self.score(users, candidates).astype(np.float32, copy=True)
        return masked_top_k(scores, k, None if exclude is None else exclude[users], candidates)

    # ------------------------------------------------------------- histories
    def score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None = None) -> np.ndarray:
        """Scores float32 ``[n, n_items]`` (or ``[n, len(item_idx)]``) for ad-hoc histories.

        ``history`` is csr ``[n, n_items]``: one row per (possibly unknown) user, the item's
        weight as value (1.0 = one interaction). An empty row gets the model's prior.
        Raises NotImplementedError when ``recommends_from_history`` is False.
        """
        history = self._checked_history(history)
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

        ``exclude_history`` drops the items in each history from its list. A retrieval model
        without ``candidates`` runs ``retrieve_rank`` (exact retrieval).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        history = sp.csr_matrix(history, dtype=np.float32)
        if self.retrieval and candidates is None:
            queries = self.history_vectors(history)
            return self._retrieve_rank(queries, k, history if exclude_history else None, self._exact_retrieve)
        scores = self.score_history(history, candidates).astype(np.float32, copy=True)
        return masked_top_k(scores, k, history if exclude_history else None, candidates)

    # --------------------------------------------------------------- retrieval
    def query_vectors(self, user_idx: np.ndarray) -> np.ndarray:
        """Retrieval query vectors float32 ``[n, d]`` of known users (internal ids)."""
        self._check_retrieval()
        return self._query_vectors(self._checked_users(user_idx))

    def history_vectors(self, history: sp.csr_matrix, user_idx: np.ndarray | None = None) -> np.ndarray:
        """Retrieval query vectors float32 ``[n, d]`` of ad-hoc histories (csr ``[n, n_items]``, weights).

        ``user_idx`` (int ``[n]``, -1 = unknown) names the users the histories belong to, for a
        model that keeps a learned part per user; a model whose users are their histories ignores it.
        """
        self._check_retrieval()
        history = self._checked_history(history)
        users = None if user_idx is None else np.asarray(user_idx, dtype=np.int64)
        if users is not None and users.shape != (history.shape[0],):
            raise ValueError(f"{self.name}: {history.shape[0]} histories but user ids of shape {users.shape}")
        return self._history_vectors(history, users)

    def sequence_vectors(self, seqs: Sequences) -> np.ndarray:
        """Retrieval query vectors float32 ``[n, d]`` of ad-hoc event sequences (item indices, oldest first).

        A model that ``reads_sequences`` reads the order, event types and times; any other
        retrieval model gets each sequence as a history weighted by position (``history_weights``).
        """
        self._check_retrieval()
        if len(seqs.items) and (seqs.items.min() < 0 or seqs.items.max() >= self.n_items):
            raise IndexError(f"{self.name}: sequence item out of range [0, {self.n_items})")
        return self._sequence_vectors(seqs)

    def _sequence_vectors(self, seqs: Sequences) -> np.ndarray:
        weights = np.concatenate([self.history_weights(int(n)) for n in seqs.lengths]) if len(seqs.items) \
            else np.zeros(0, np.float32)
        rows = np.repeat(np.arange(len(seqs)), seqs.lengths)
        history = sp.csr_matrix((weights, (rows, seqs.items)), shape=(len(seqs), self.n_items), dtype=np.float32)
        return self._history_vectors(history, None)

    def item_vectors(self) -> np.ndarray:
        """Item vectors float32 ``[n_items, d]``: what a retrieval index holds."""
        self._check_retrieval()
        return self._item_vectors()

    def item_space(self) -> np.ndarray | None:
        """Item vectors float32 ``[n_items, d]`` whose inner products say how alike two items are (similar
        items): a retrieval model's ``item_vectors``; None for a model without such a space."""
        return self.item_vectors() if self.retrieval else None

    def rank_vectors(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Final scores float32 ``[n, m]`` of per-row candidates int64 ``[n, m]`` (-1 = none, scored -inf)."""
        self._check_retrieval()
        q, cand = np.asarray(queries, dtype=np.float32), np.asarray(candidates, dtype=np.int64)
        if q.ndim != 2 or cand.ndim != 2 or len(q) != len(cand):
            raise ValueError(f"{self.name}: queries {q.shape} and candidates {cand.shape} must be [n, d] and [n, m]")
        if cand.size and cand.max() >= self.n_items:
            raise IndexError(f"{self.name}: candidate item out of range [0, {self.n_items})")
        return self._rank_vectors(q, cand)

    def retrieve_rank(self, queries: np.ndarray, k: int, exclude: sp.csr_matrix | None = None,
                      retrieve: Retrieve | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The retrieval path: retrieve, rank, keep the top k; same return as ``recommend``.

        ``queries``: float32 ``[n, d]`` from ``query_vectors`` or ``history_vectors``.
        ``exclude``: csr ``[n, n_items]``, one row per query; its items are never recommended.
        ``retrieve`` (``Retrieve``) finds each row's ``retrieval_depth(k)`` best items by
        inner product outside ``exclude``: exact by default, an index's search in serving.
        The candidates are then ranked by ``rank_vectors``. A model that ``ranks_by_inner_product``
        retrieves only k: deeper candidates could not overtake them.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self._check_retrieval()
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim != 2:
            raise ValueError(f"{self.name}: queries must be [n, d], got shape {q.shape}")
        if exclude is not None and exclude.shape != (len(q), self.n_items):
            raise ValueError(f"{self.name}: exclude has shape {exclude.shape}, expected [{len(q)}, {self.n_items}]")
        return self._retrieve_rank(q, k, exclude, retrieve if retrieve is not None else self._exact_retrieve)

    def _retrieve_rank(self, queries: np.ndarray, k: int, exclude: sp.csr_matrix | None,
                       retrieve: Retrieve) -> tuple[np.ndarray, np.ndarray]:
        # a model that ranks by the retrieval's own inner product keeps the retrieval's top k
        depth = min(k, self.n_items) if self.ranks_by_inner_product else retrieval_depth(k, self.n_items)
        cand = retrieve(queries, depth, exclude)
        scores = self._rank_vectors(queries, cand)
        pos, top_scores = top_k(scores, k, np.arange(cand.shape[1]))
        items = np.where(pos >= 0, np.take_along_axis(cand, np.maximum(pos, 0), 1), -1)
        return items, top_scores

    def _exact_retrieve(self, queries: np.ndarray, depth: int, exclude: sp.csr_matrix | None) -> np.ndarray:
        """``Retrieve`` by brute force: every item's inner product, ``exclude`` masked, the top ``depth``."""
        dots = queries @ self._item_vectors().T
        if exclude is not None:
            seen = exclude.tocoo()
            dots[seen.row, seen.col] = -np.inf
        cand, _ = top_k(dots, depth, np.arange(self.n_items))
        return cand

    def _query_vectors(self, user_idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _history_vectors(self, history: sp.csr_matrix, user_idx: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def _item_vectors(self) -> np.ndarray:
        raise NotImplementedError

    def _rank_vectors(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        raise NotImplementedError

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

    def _check_retrieval(self) -> None:
        self._check_fitted()
        if not self.retrieval:
            raise NotImplementedError(f"{self.name}: no retrieval capability (query and item vectors)")

    def _checked_users(self, user_idx: np.ndarray) -> np.ndarray:
        """int64 internal user ids, each in ``[0, n_users)``; the model fitted."""
        self._check_fitted()
        users = np.asarray(user_idx, dtype=np.int64)
        if users.size and (users.min() < 0 or users.max() >= self.n_users):
            raise IndexError(f"{self.name}: user index out of range [0, {self.n_users})")
        return users

    def _checked_history(self, history: sp.csr_matrix) -> sp.csr_matrix:
        """float32 csr ``[n, n_items]`` of ad-hoc histories; the model fitted and able to use them."""
        self._check_fitted()
        if not self.recommends_from_history:
            raise NotImplementedError(f"{self.name}: cannot recommend from an ad-hoc history")
        history = sp.csr_matrix(history, dtype=np.float32)
        if history.shape[1] != self.n_items:
            raise ValueError(f"{self.name}: history has {history.shape[1]} item columns, expected {self.n_items}")
        return history


def retrieval_depth(k: int, n_items: int) -> int:
    """How many items a retrieval model ranks for a top-``k``: ``max(MIN_RETRIEVE, 4k)``, at most every item."""
    return min(n_items, max(MIN_RETRIEVE, RETRIEVE_PER_K * k))


def drop_excluded(candidates: np.ndarray, exclude: sp.csr_matrix | None, depth: int) -> np.ndarray:
    """Each row's first ``depth`` candidates that ``exclude`` does not hold, in order; int64 ``[n, <= depth]``.

    ``candidates``: int64 ``[n, m]``, best first, -1 = none (kept in place, as padding);
    ``exclude``: csr ``[n, n_items]`` (its pattern counts, not its values), one row per
    candidate row. Vectorised over the batch: the excluded candidates are found with one
    bit-table lookup (``_excluded_candidates``) and every row is shifted left past them
    with one gather. Rows with fewer survivors end in -1.
    """
    cand = np.asarray(candidates, dtype=np.int64)
    n, m = cand.shape
    width = min(depth, m)
    if exclude is None or exclude.nnz == 0 or width == 0:
        return cand[:, :width].copy()
    rows, pos = np.nonzero(_excluded_candidates(cand, exclude.tocsr()))  # row-major: by row, then position
    per_row = np.bincount(rows, minlength=n)
    earlier = np.arange(len(pos)) - np.repeat(np.cumsum(per_row) - per_row, per_row)  # hits before it in its row
    # output slot j of a row reads column j + (the row's hits h with pos_h - earlier_h <= j)
    shift = np.bincount(rows * (width + 1) + np.minimum(pos - earlier, width), minlength=n * (width + 1))
    src = np.arange(width) + np.cumsum(shift.reshape(n, width + 1)[:, :width], axis=1)
    out = np.take(cand, np.minimum(src, m - 1) + (np.arange(n, dtype=np.int64) * m)[:, None])
    out[src >= m] = -1
    return out


def _excluded_candidates(cand: np.ndarray, exclude: sp.csr_matrix) -> np.ndarray:
    """bool ``[n, m]``: ``cand[r, j]`` is an item of ``exclude`` row ``r`` (-1 never is).

    Each (row, item) pair is encoded as ``row * n_items + item``; the excluded pairs of a block
    of rows set bits in a table of at most ``EXCLUDE_TABLE_BITS`` bits and every candidate of
    the block reads its bit: one scatter and one gather per block, whatever the batch holds.
    """
    n, m = cand.shape
    n_items = exclude.shape[1]
    hit = np.zeros((n, m), dtype=bool)
    step = max(1, EXCLUDE_TABLE_BITS // max(n_items, 1))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        a, b = int(exclude.indptr[lo]), int(exclude.indptr[hi])
        if a == b:
            continue
        codes = np.repeat(np.arange(hi - lo, dtype=np.int64) * n_items, np.diff(exclude.indptr[lo : hi + 1])) \
            + exclude.indices[a:b]
        table = np.zeros(((hi - lo) * n_items + 7) // 8, dtype=np.uint8)
        np.bitwise_or.at(table, codes >> 3, np.left_shift(1, codes & 7).astype(np.uint8))
        wanted = np.arange(hi - lo, dtype=np.int64)[:, None] * n_items + np.maximum(cand[lo:hi], 0)
        hit[lo:hi] = (table[wanted >> 3] >> (wanted & 7).astype(np.uint8)) & 1
    hit &= cand >= 0
    return hit


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
