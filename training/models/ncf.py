"""Neural collaborative filtering over frozen pre-trained content vectors.

The transfer-learning part: item content vectors come from frozen pre-trained
encoders (``embeddings/``); only the latter layers are trained here (and, with
``finetune_layers``, the top layers of the text encoder, see ``ncf_fit``).

* **item tower**  ``q_i = e_i + proj_q(c_i)`` (``[d + 1]``, the last unit a bias) for items
  seen in training: a learned id embedding plus a small MLP over the content vector ``c_i``.
  A **new item** (no interactions at training time) has no id: it gets
  ``(tower(c_i) + neighbours_i) / 2``, a content-only MLP trained afterwards to land where
  ids put warm items, evened with the similarity-weighted learned vectors of its
  ``ncf_fit.NEW_ITEM_NEIGHBOURS`` nearest trained items by content.
* **user tower**  ``p_u = [tanh(sum_j w_uj v_j + b), 1]`` over the user's history, with
  ``v_j = f_j + proj_v(c_j)`` the history-side (input) vector of item ``j`` and ``w_u``
  the history's weights, L2-normalised. A user *is* their history, so a list of item ids
  (a new or anonymous user, or a known user's newest events) gets a vector at once,
  without retraining. Recent items may weigh more: ``w`` halves every
  ``recency_half_life`` items back from the newest, a half-life chosen on validation.
* **retrieval**   ``<p_u, q_i>``: an inner product, so FAISS can retrieve over ``q``.
* **ranking**     ``<p_u, q_i> + head(p_u * q_i)``: a NeuMF-style MLP on the
  element-wise product, applied to the retrieved candidates.

The model has the retrieval capability (``Recommender.retrieval``): it implements the
query, history and item vectors and the ranking of a candidate set; ``recommend`` runs the
base class's retrieve -> rank path, the same one serving runs over its FAISS index.

Fitting (``ncf_fit.NCFTrainer``): a denoising autoencoder over the users' histories, validated
on the validation split (``Recommender.tune``); see that module. The network is ``ncf_net.NCFNet``.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from tlrec.training.interaction_data import InteractionData
from tlrec.training.models.base import ModelConfig, Recommender
from tlrec.training.models.ncf_explain import METHOD, ScoreExplanation, explain_scores
from tlrec.training.models.ncf_fit import NCFTrainer
from tlrec.training.models.ncf_net import (
    NCFNet,
    UserHistories,
    recency_weights,
    row_normalised,
)
from tlrec.training.validation import ValidationSplit

logger = logging.getLogger(__name__)


UNKNOWN_ITEM_BIAS = -1e4
#: Users per pass of the user tower when vectors are computed for many histories (bounds its temporaries).
USER_BLOCK = 65_536


class NCFConfig(ModelConfig):
    """Hyper-parameters; defaults are chosen to hold across datasets, not tuned to one."""

    dim: int = 256
    content_hidden: int = 256
    #: train the content layers in bfloat16 (``torch.autocast``): "auto" where the CPU computes it natively
    #: (avx512_bf16 or AMX: ~3x faster there, see ``ncf_net.native_bf16``; emulated bf16 is slower than fp32).
    #: Serving always computes in float32.
    bf16: bool | Literal["auto"] = "auto"
    epochs: int = 100
    batch_users: int = 128
    lr: float = 1e-3
    l2: float = 0.0
    input_dropout: float = 0.5
    item_id_dropout: float = 0.0
    max_history: int = 500
    recency_half_life: float | Literal["auto"] | None = "auto"
    full_softmax_items: int = 50_000
    negatives: int = 4096
    head_negatives: int = 32
    head_hidden: int = 64
    val_fraction: float = 0.1
    eval_every: int = 5
    patience: int = 3
    refit: bool = False
    finetune_layers: int = 0
    finetune_epochs: int = 5
    finetune_lr: float = 2e-5
    finetune_items: int = 256
    seed: int = 0
    progress: bool = True


class NCFModel(Recommender):
    """Hybrid two-tower NCF: users from their history, items from ids plus frozen pre-trained content."""

    name = "ncf"
    config_class = NCFConfig
    recommends_for_cold_items = True
    stops_early = True
    recommends_for_cold_users = True
    recommends_from_history = True
    retrieval = True
    finetunes_text = True

    config: NCFConfig

    def __init__(self, config: NCFConfig | None = None) -> None:
        super().__init__(config)
        self.net: NCFNet | None = None
        self.histories: sp.csr_matrix | None = None  # [n_users, n_items] training histories
        self._user_vecs: np.ndarray | None = None
        self._item_vecs: np.ndarray | None = None
        self._text_tower: nn.Module | None = None  # set_text_finetuning
        self._text_slice: slice | None = None
        self.epochs_: int | None = None  # epochs kept by validation

    def wants_item_vectors(self) -> bool:
        return True

    def scores_new_items_from_content(self) -> bool:
        return self.net is not None and self.net.content_hidden is not None

    # ------------------------------------------------------------------ fit
    def chooses_on_validation(self) -> bool:
        return self.config.val_fraction > 0

    def _fit(self, data: InteractionData, item_vectors: np.ndarray | None,
             validation: ValidationSplit | None = None) -> None:
        NCFTrainer(self).fit(data, item_vectors, validation)

    def _refit(self, data: InteractionData, item_vectors: np.ndarray | None) -> None:
        NCFTrainer(self).refit(data, item_vectors)

    def set_text_finetuning(self, tower: nn.Module, text_slice: slice) -> None:
        """Give ``finetune_layers`` its text tower before ``fit``.

        ``tower`` maps item indices int64 ``[m]`` to L2-normalised text vectors ``[m, h]``
        (``embeddings.finetune.TextTopLayers``) and has ``encode_all()``; ``text_slice`` is
        where the text block sits in the content vectors (``h`` wide).
        """
        self._text_tower, self._text_slice = tower, text_slice

    # -------------------------------------------------------------- scoring
    def history_weights(self, n: int) -> np.ndarray:
        """float32 ``[n]`` weights of a history of ``n`` items listed oldest first (the chosen recency)."""
        self._check_fitted_net()
        return recency_weights(n, float(self.net.half_life) or None)

    def ordered_history(self, user_idx: int) -> np.ndarray | None:
        """The user's most recent ``max_history`` training items, int64, oldest first."""
        assert self.histories is not None
        h = self.histories
        return h.indices[h.indptr[user_idx] : h.indptr[user_idx + 1]].astype(np.int64)

    def _set_net(self, net: NCFNet, histories: UserHistories | sp.csr_matrix) -> None:
        """Serve ``net``; ``histories`` are the users' items (oldest first) or an already weighted csr."""
        self.net = net.eval()
        with torch.inference_mode():
            q, v = net.items(torch.arange(net.item_emb.num_embeddings))
        self._item_vecs, self._input_vecs = q.numpy(), v  # fresh tensors: no copies of a million items
        if net.content_hidden is None:  # no content: an item never seen in training is unknown, so it ranks last
            self._item_vecs[net.seen_mask.numpy() == 0, -1] = UNKNOWN_ITEM_BIAS
        if isinstance(histories, UserHistories):
            self._set_histories(histories, float(net.half_life) or None)
        else:
            self.histories = histories.astype(np.float32)
            self._user_vecs = self._history_vectors(self.histories, None)

    def _set_histories(self, hist: UserHistories, half_life: float | None) -> None:
        """Known users' histories weighted by ``half_life`` (also stored in the net) and their vectors."""
        assert self.net is not None
        self.net.half_life.fill_(half_life or 0.0)
        self.histories = hist.matrix(half_life).astype(np.float32)
        self._user_vecs = self._history_vectors(self.histories, None)

    # ------------------------------------------------------------ retrieval (Recommender.retrieval)
    def _history_vectors(self, history: sp.csr_matrix, user_idx: np.ndarray | None) -> np.ndarray:
        """Query vectors float32 ``[n, dim + 1]`` of histories (csr ``[n, n_items]``, weights).

        ``user_idx`` is not needed: a user is their history here, so a known user's fresh
        events are simply part of it. An empty history gives the zero history (the items'
        prior, plus ``tanh(b)``).
        """
        self._check_fitted_net()
        assert self.net is not None
        out = np.empty((history.shape[0], self.net.dim + 1), np.float32)
        for lo in range(0, history.shape[0], USER_BLOCK):
            block = history[lo : lo + USER_BLOCK].tocoo()
            kept = block.data != 0
            norm = row_normalised(block.row[kept], block.col[kept], block.shape[0], self.n_items, block.data[kept])
            with torch.inference_mode():
                out[lo : lo + block.shape[0]] = self.net.users(norm, self._input_vecs).numpy()
        return out

    def _query_vectors(self, user_idx: np.ndarray) -> np.ndarray:
        """Query vectors float32 ``[n, dim + 1]`` of known users (from their training history)."""
        self._check_fitted_net()
        return self._user_vecs[user_idx]

    def _item_vectors(self) -> np.ndarray:
        """Item-tower vectors float32 ``[n_items, dim + 1]``: what the FAISS index holds."""
        self._check_fitted_net()
        return self._item_vecs

    @property
    def ranks_by_inner_product(self) -> bool:
        """True when validation switched the ranking head off (or it was never trained)."""
        return self.net is not None and not float(self.net.head_on)

    def _rank_vectors(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """``<p, q> + head(p * q)`` float32 ``[n, m]`` for queries ``[n, dim + 1]`` and candidates ``[n, m]``."""
        self._check_fitted_net()
        valid = candidates >= 0
        p = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))[:, None, :]  # [n, 1, d + 1]
        q = torch.from_numpy(self._item_vecs[np.where(valid, candidates, 0)])  # [n, m, d + 1]
        with torch.inference_mode():
            s = torch.bmm(q, p.transpose(1, 2)).squeeze(2)  # [n, m]
            if float(self.net.head_on):  # the head was kept by validation
                s = s + self.net.head_score(p, q)
        out = s.numpy().astype(np.float32)
        out[~valid] = -np.inf
        return out

    # -------------------------------------------------------------- exact scores
    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        return self._score_vectors(self._query_vectors(user_idx), item_idx)

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        return self._score_vectors(self._history_vectors(history, None), item_idx)

    def _score_vectors(self, p: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        """``<p, q> + head(p * q)`` float32 ``[n, m]`` of queries ``[n, dim + 1]`` for ``item_idx`` (all items: None)."""
        q = self._item_vecs if item_idx is None else self._item_vecs[item_idx]
        out = np.ascontiguousarray(p, dtype=np.float32) @ q.T
        if float(self.net.head_on):  # the head was kept by validation; [8, m, dim] at a time
            q_t = torch.from_numpy(np.ascontiguousarray(q))[None]
            with torch.inference_mode():
                for s in range(0, len(p), 8):
                    out[s : s + 8] += self.net.head_score(torch.from_numpy(p[s : s + 8])[:, None, :], q_t).numpy()
        return out

    # ------------------------------------------------------------ explanations
    #: one line on what ``explain_*`` figures are (``ncf_explain.METHOD``)
    explanation_method = METHOD

    def explain_user(self, user_idx: int, items: np.ndarray) -> ScoreExplanation:
        """Split the scores of ``items`` (int64 ``[m]``) for a known user, from the training history their
        query vector is made of (``ncf_explain``: score = baseline + contributions + head)."""
        self._check_fitted_net()
        assert self.histories is not None
        if not 0 <= user_idx < self.n_users:
            raise IndexError(f"{self.name}: user {user_idx} out of range [0, {self.n_users})")
        return self.explain_history(self.histories[int(user_idx)], items)

    def explain_history(self, history: sp.csr_matrix, items: np.ndarray) -> ScoreExplanation:
        """Split the scores of ``items`` (int64 ``[m]``) for one ad-hoc history (csr ``[1, n_items]``, weights
        as ``history_vectors`` takes them); see ``ncf_explain``."""
        self._check_fitted_net()
        row = sp.csr_matrix(history, dtype=np.float32)
        if row.shape != (1, self.n_items):
            raise ValueError(f"{self.name}: history has shape {row.shape}, expected [1, {self.n_items}]")
        row.sum_duplicates()
        items = np.asarray(items, dtype=np.int64)
        if len(items) and (items.min() < 0 or items.max() >= self.n_items):
            raise IndexError(f"{self.name}: item out of range [0, {self.n_items})")
        keep = row.data != 0
        return explain_scores(self.net, self._item_vecs, self._input_vecs, row.indices[keep].astype(np.int64),
                              row.data[keep], items)

    def _check_fitted_net(self) -> None:
        if self.net is None:
            self._check_fitted()
            raise RuntimeError("ncf: network missing")

    # ------------------------------------------------------------ save/load
    def _state(self) -> dict[str, torch.Tensor]:
        assert self.net is not None and self.histories is not None
        h = self.histories
        return {
            **self.net.state_dict(),
            "histories.indptr": torch.from_numpy(h.indptr.astype(np.int64)),
            "histories.indices": torch.from_numpy(h.indices.astype(np.int64)),
            "histories.weights": torch.from_numpy(h.data.astype(np.float32)),
        }

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        from tlrec.training.artifacts import checked_csr, tensor_array

        histories = checked_csr(
            tensor_array(state, "histories.indptr", "int64"), tensor_array(state, "histories.indices", "int64"),
            tensor_array(state, "histories.weights", "float32"), (self.n_users, self.n_items), "histories.*",
        )
        for key in ("histories.indptr", "histories.indices", "histories.weights"):
            state.pop(key)
        tensor_array(state, "item_emb.weight", "float32", (self.n_items, self.config.dim + 1))
        content = state["content"]
        tensor_array(state, "content", "float32", (self.n_items, None))
        net = NCFNet(self.n_items, content if content.shape[1] else None, self.config)
        net.load_state_dict(state)  # strict: a missing, extra or misshapen tensor is a RuntimeError
        self._set_net(net, histories)

