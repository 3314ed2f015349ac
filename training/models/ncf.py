"""Neural collaborative filtering over frozen pre-trained content vectors.

The transfer-learning part: item content vectors come from frozen pre-trained
encoders (``embeddings/``); only the latter layers are trained here (and, with
``finetune_layers``, the top layers of the text encoder, see ``_finetune``).

* **item tower**  ``q_i = e_i + proj_q(c_i)`` (``[d + 1]``, the last unit a bias) for items
  seen in training: a learned id embedding plus a small MLP over the content vector ``c_i``.
  A **new item** (no interactions at training time) has no id: it gets
  ``(tower(c_i) + neighbours_i) / 2``, a content-only MLP trained afterwards to land where
  ids put warm items, evened with the similarity-weighted learned vectors of its
  ``NEW_ITEM_NEIGHBOURS`` nearest trained items by content.
* **user tower**  ``p_u = [tanh(sum_j w_uj v_j + b), 1]`` over the user's history, with
  ``v_j = f_j + proj_v(c_j)`` the history-side (input) vector of item ``j`` and ``w_u``
  the history's weights, L2-normalised. A user *is* their history, so a list of item ids
  (a new or anonymous user, or a known user's newest events) gets a vector at once,
  without retraining. Recent items may weigh more: ``w`` halves every
  ``recency_half_life`` items back from the newest, a half-life chosen on validation.
* **retrieval**   ``<p_u, q_i>``: an inner product, so FAISS can retrieve over ``q``.
* **ranking**     ``<p_u, q_i> + head(p_u * q_i)``: a NeuMF-style MLP on the
  element-wise product, applied to the retrieved candidates.

Training is a denoising autoencoder with a multinomial likelihood (Liang et al.,
"Variational autoencoders for collaborative filtering", 2018, Mult-DAE): each user's
history, with items dropped at random (``input_dropout``), goes through the user tower
and the softmax over items must put its mass on the whole history. The softmax runs
over the whole catalog when it is small enough (``full_softmax_items``); above that,
over the batch's items (in-batch negatives) plus uniformly sampled items, with the
logQ correction for how often each is in the pool (popularity-corrected). The ranking
head is trained on the towers' hardest wrong answers (towers detached). Early stopping
on a per-user temporal validation split of the training data, which also picks the
recency half-life and whether the head is kept; the new-item tower is then trained
with the others fixed (half the items, as if new, compete with the rest) and
early-stopped on items held out of its training. Seeded and deterministic on CPU.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from torch import nn
from tqdm.auto import tqdm

from tlrec.errors import ConfigError
from tlrec.training.data import Columns, DataError, InteractionData
from tlrec.training.metrics import ndcg_at_k
from tlrec.training.models.base import ModelConfig, Recommender, relevant_by_user, top_k
from tlrec.training.splits import temporal_split

logger = logging.getLogger(__name__)


UNKNOWN_ITEM_BIAS = -1e4
#: Half-lives (in items, newest first; ``None`` = all items weigh the same) tried by
#: ``recency_half_life="auto"`` on the validation split.
RECENCY_GRID: tuple[float | None, ...] = (None, 40.0, 20.0, 10.0, 5.0)
#: New items borrow the learned vectors of this many nearest trained items by content.
NEW_ITEM_NEIGHBOURS = 20
#: Softmax temperature over their cosines (a common default for unit vectors).
NEW_ITEM_TAU = 0.1
#: Share of the trained items held out of the new-item tower's training to validate it.
NEW_ITEM_HOLDOUT = 0.2


class NCFConfig(ModelConfig):
    """Hyper-parameters; defaults are chosen to hold across datasets, not tuned to one."""

    dim: int = 256
    content_hidden: int = 256
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


class NCFNet(nn.Module):
    """Towers and ranking head over ``n_items`` items (content ``[n_items, c]`` or ``None``)."""

    def __init__(self, n_items: int, content: torch.Tensor | None, cfg: NCFConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.dim = d
        self.item_emb = nn.Embedding(n_items, d + 1)  # output side, last unit the bias
        self.hist_emb = nn.Embedding(n_items, d)  # input side
        nn.init.normal_(self.item_emb.weight, std=0.05)
        nn.init.normal_(self.hist_emb.weight, std=0.05)
        self.hist_bias = nn.Parameter(torch.zeros(d))
        self.register_buffer("content", content if content is not None else torch.zeros(n_items, 0))
        self.register_buffer("seen_mask", torch.ones(n_items))
        c = self.content.shape[1]
        # content -> hidden layer -> output + input vectors, added to the ids' (warm items)
        self.content_hidden = (
            nn.Sequential(nn.Linear(c, cfg.content_hidden), nn.GELU()) if c > 0 else None
        )
        self.warm_out = nn.Linear(cfg.content_hidden, 2 * d + 1) if c > 0 else None
        # new items' output vectors from content alone, trained afterwards to land where ids put warm items
        self.cold = (
            nn.Sequential(nn.Linear(c, cfg.content_hidden), nn.GELU(), nn.Linear(cfg.content_hidden, d + 1))
            if c > 0
            else None
        )
        self.head = nn.Sequential(nn.Linear(d, cfg.head_hidden), nn.ReLU(), nn.Linear(cfg.head_hidden, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        # what new items are served with: the new-item tower, blended with their content neighbours'
        # learned vectors (set after training; until then the tower alone)
        self.register_buffer("new_item_vecs", torch.zeros(n_items, d + 1 if c > 0 else 0))
        self.register_buffer("new_items_ready", torch.zeros(()))
        self.register_buffer("head_on", torch.ones(()))  # 0 when validation found the head did not help
        self.register_buffer("half_life", torch.zeros(()))  # recency half-life in items; 0 = none

    def items(self, items: torch.Tensor, id_keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Output and input vectors of ``items`` (int64 ``[m]``): ``q [m, d + 1]`` and ``v [m, d]``.

        ``id_keep`` (``[m]`` 0/1) overrides the seen mask (item-id dropout while training).
        """
        q, v, _ = self.items_with_content(items, id_keep)
        return q, v

    def items_with_content(self, items: torch.Tensor, id_keep: torch.Tensor | None = None,
                           content: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``items`` plus the content-only output vectors ``[m, d + 1]`` (None without content).

        An item without its id (new, or dropped) gets the content-only output vector.
        ``content`` (``[n_items, c]``) replaces the stored content (fine-tuning passes fresh rows).
        """
        keep = (self.seen_mask[items] if id_keep is None else id_keep)[:, None]
        q = self.item_emb(items) * keep
        v = self.hist_emb(items) * keep
        q_content = None
        if self.content_hidden is not None and self.warm_out is not None and self.cold is not None:
            rows = (self.content if content is None else content)[items]
            c = self.warm_out(self.content_hidden(rows))
            q_content = self.cold(rows)
            q_new = self.new_item_vecs[items] if bool(self.new_items_ready) else q_content
            q = torch.where(keep > 0, q + c[:, : self.dim + 1], q_new)
            v = v + c[:, self.dim + 1 :]
        return q, v, q_content

    def users(self, history: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``[b, d + 1]`` from ``history`` (sparse ``[b, m]``, rows L2-normalised) over input vectors ``v [m, d]``."""
        h = torch.sparse.mm(history, v) if history.is_sparse else history @ v
        p = torch.tanh(h + self.hist_bias)
        return torch.cat([p, torch.ones_like(p[:, :1])], dim=1)

    def head_score(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Ranking-head term for broadcastable ``p [..., d+1]`` and ``q [..., d+1]`` (0 when switched off)."""
        return self.head(p[..., :-1] * q[..., :-1]).squeeze(-1) * self.head_on


class _Histories:
    """Every user's training items, oldest first (repeats collapsed to their last time).

    ``indptr`` int64 ``[n_users + 1]`` and ``items`` int64 ``[nnz]`` in csr layout;
    only the most recent ``max_history`` items of a user are kept.
    """

    def __init__(self, data: InteractionData, max_history: int) -> None:
        df = (
            data.interactions.select(Columns.USER_IDX, Columns.ITEM_IDX, Columns.TIMESTAMP)
            .group_by(Columns.USER_IDX, Columns.ITEM_IDX)
            .agg(pl.col(Columns.TIMESTAMP).max())
            .sort(Columns.USER_IDX, Columns.TIMESTAMP, Columns.ITEM_IDX)
            .with_columns(pl.int_range(pl.len()).reverse().over(Columns.USER_IDX).alias("_from_end"))
            .filter(pl.col("_from_end") < max_history)
        )
        users = df[Columns.USER_IDX].to_numpy().astype(np.int64)
        self.items = df[Columns.ITEM_IDX].to_numpy().astype(np.int64)
        self.indptr = np.zeros(data.n_users + 1, np.int64)
        np.add.at(self.indptr, users + 1, 1)
        np.cumsum(self.indptr, out=self.indptr)
        self.n_users, self.n_items = data.n_users, data.n_items

    def matrix(self, half_life: float | None = None) -> sp.csr_matrix:
        """csr ``[n_users, n_items]`` (indices oldest first): 1 per item, or ``recency_weights`` with ``half_life``."""
        weights = np.concatenate([recency_weights(int(n), half_life) for n in np.diff(self.indptr)]) \
            if len(self.items) else np.ones(0, np.float32)
        return sp.csr_matrix((weights, self.items, self.indptr), shape=(self.n_users, self.n_items))


def recency_weights(n: int, half_life: float | None) -> np.ndarray:
    """float32 ``[n]`` weights of a history listed oldest first: the newest 1, halving every ``half_life`` items."""
    if not half_life:
        return np.ones(n, np.float32)
    return np.power(0.5, np.arange(n - 1, -1, -1) / half_life).astype(np.float32)


class NCFModel(Recommender):
    """Hybrid two-tower NCF: users from their history, items from ids plus frozen pre-trained content."""

    name = "ncf"
    config_class = NCFConfig
    recommends_for_cold_items = True
    recommends_for_cold_users = True
    recommends_from_history = True

    config: NCFConfig

    def __init__(self, config: NCFConfig | None = None) -> None:
        super().__init__(config)
        self.net: NCFNet | None = None
        self.histories: sp.csr_matrix | None = None  # [n_users, n_items] training histories
        self._user_vecs: np.ndarray | None = None
        self._item_vecs: np.ndarray | None = None
        self._text_tower: nn.Module | None = None  # set_text_finetuning
        self._text_slice: slice | None = None

    def wants_item_vectors(self) -> bool:
        return True

    # ------------------------------------------------------------------ fit
    def _fit(self, data: InteractionData, item_vectors: np.ndarray | None) -> None:
        cfg = self.config
        content = torch.from_numpy(item_vectors) if item_vectors is not None else None
        if cfg.val_fraction > 0:
            fit_part, val_part = temporal_split(data.interactions, test_fraction=cfg.val_fraction)
            if val_part.height > 0:
                fit_data = InteractionData.build(fit_part, data.items, users=data.users)
                epochs = self._train(fit_data, content, cfg.epochs, val=val_part)
                assert self.net is not None
                head_on, half_life = float(self.net.head_on), float(self.net.half_life)
                logger.info("ncf: best validation epoch %d of %d (recency half-life %s, ranking head %s)",
                            epochs, cfg.epochs, f"{half_life:g} items" if half_life else "none",
                            "kept" if head_on else "off: it did not help on validation")
                if cfg.refit:
                    self._train(data, content, epochs, val=None)
                    self.net.head_on.fill_(head_on)
                    self.net.half_life.fill_(half_life)
                # a user is their history: serve every user from all of it, validation period included
                self._set_net(self.net, _Histories(data, cfg.max_history))
                return
        self._train(data, content, cfg.epochs, val=None)

    def _train(self, data: InteractionData, content: torch.Tensor | None, epochs: int,
               val: pl.DataFrame | None) -> int:
        """Train a fresh net for up to ``epochs``; returns the epoch count kept (best on ``val``)."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        net = NCFNet(data.n_items, content, cfg)
        if cfg.recency_half_life not in (None, "auto"):
            net.half_life.fill_(float(cfg.recency_half_life))
        hist = _Histories(data, cfg.max_history)
        train_matrix = hist.matrix(None)
        counts = np.bincount(hist.items, minlength=data.n_items).astype(np.float64)
        net.seen_mask.copy_(torch.from_numpy((counts > 0).astype(np.float32)))
        log_pop = np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0))
        seen = counts > 0
        with torch.no_grad():  # start from popularity: the bias unit of seen items is their log share
            net.item_emb.weight[:, -1] = torch.from_numpy((log_pop - log_pop[seen].mean()).astype(np.float32))
        trained_items = np.flatnonzero(seen)  # the softmax runs over items that can be targets
        active = np.flatnonzero(np.diff(hist.indptr) >= 1)
        if len(active) == 0:
            raise DataError("ncf: no user has an interaction to learn from")
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        batch = cfg.batch_users
        val_rel = relevant_by_user(val, data) if val is not None else None
        best: tuple[float, int, dict | None] = (-1.0, 0, None)
        bad = 0
        bar = tqdm(range(1, epochs + 1), desc="ncf", unit="epoch", disable=not cfg.progress, leave=False)
        for epoch in bar:
            net.train()
            order = rng.permutation(active)
            total = 0.0
            n_batches = math.ceil(len(order) / batch)
            for b in range(n_batches):
                users = order[b * batch : (b + 1) * batch]
                loss = self._batch_loss(net, train_matrix[users], log_pop, trained_items, rng)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
            postfix = {"loss": f"{total / n_batches:.3f}"}
            if val_rel is not None and (epoch % cfg.eval_every == 0 or epoch == epochs):
                score = self._validate_settings(net, hist, val_rel, data)
                postfix["val_ndcg@10"] = f"{score:.4f}"
                if score > best[0]:
                    best = (score, epoch, {k: v.clone() for k, v in net.state_dict().items()})
                    bad = 0
                else:
                    bad += 1
                    if bad >= cfg.patience:
                        bar.set_postfix(postfix)
                        break
            bar.set_postfix(postfix)
        bar.close()
        if best[2] is not None:
            net.load_state_dict(best[2])
        self._set_net(net, hist)
        if cfg.finetune_layers > 0:
            self._finetune(net, hist, train_matrix, active, log_pop, trained_items, rng,
                           val_rel, data, best[0] if best[2] is not None else None)
        kept = best[1] if best[2] is not None else epochs
        if net.cold is not None:
            self._train_cold(net, hist, train_matrix, active, log_pop, trained_items, rng, val_rel, data, kept)
        return kept

    def set_text_finetuning(self, tower: nn.Module, text_slice: slice) -> None:
        """Give ``finetune_layers`` its text tower before ``fit``.

        ``tower`` maps item indices int64 ``[m]`` to L2-normalised text vectors ``[m, h]``
        (``embeddings.finetune.TextTopLayers``) and has ``encode_all()``; ``text_slice`` is
        where the text block sits in the content vectors (``h`` wide).
        """
        self._text_tower, self._text_slice = tower, text_slice

    def _finetune(self, net: NCFNet, hist: _Histories, train_matrix: sp.csr_matrix, active: np.ndarray,
                  log_pop: np.ndarray, trained_items: np.ndarray, rng: np.random.Generator,
                  val_rel: dict[int, set[int]] | None, data: InteractionData, frozen_score: float | None) -> None:
        """Unfreeze the text encoder's top layers for ``finetune_epochs`` more epochs (gradual unfreezing).

        Each step re-encodes up to ``finetune_items`` of the batch's items with gradients; the
        net's content buffer caches every item's latest text vector. Kept only if validation
        NDCG@10 beats the frozen encoder's (when there is a validation split).
        """
        cfg = self.config
        tower, text_slice = self._text_tower, self._text_slice
        if tower is None or text_slice is None or net.content_hidden is None:
            raise ConfigError("ncf: finetune_layers needs the items' texts and text vectors; train with "
                             "`tlrec train --finetune-layers N` on a catalog with text")
        frozen = {k: v.clone() for k, v in net.state_dict().items()}
        share = net.content[:, text_slice].norm(dim=1, keepdim=True)  # [n, 1]: the text block's weight
        opt = torch.optim.Adam([{"params": net.parameters(), "lr": cfg.lr},
                                {"params": tower.parameters(), "lr": cfg.finetune_lr}])
        batch = cfg.batch_users
        tower.train()
        for _ in tqdm(range(cfg.finetune_epochs), desc="ncf finetune", unit="epoch", disable=not cfg.progress,
                      leave=False):
            net.train()
            order = rng.permutation(active)
            for b in range(math.ceil(len(order) / batch)):
                x = train_matrix[order[b * batch : (b + 1) * batch]]
                items = np.unique(x.indices)
                items = items[share[items, 0].numpy() > 0]
                if len(items) > cfg.finetune_items:
                    items = rng.choice(items, cfg.finetune_items, replace=False)
                items_t = torch.from_numpy(np.sort(items).astype(np.int64))
                rows = net.content[items_t].clone()
                rows[:, text_slice] = tower(items_t) * share[items_t]
                content = net.content.index_copy(0, items_t, rows)  # fresh rows carry gradients
                loss = self._batch_loss(net, x, log_pop, trained_items, rng, content)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    net.content[items_t] = rows.detach()
        tower.eval()
        with torch.no_grad():  # every item through the tuned layers
            net.content[:, text_slice] = tower.encode_all() * share
        self._set_net(net, hist)
        if val_rel is not None and frozen_score is not None:
            tuned = self._validate_settings(net, hist, val_rel, data)
            if tuned <= frozen_score:
                logger.info("ncf: fine-tuning the top %d text layers did not help on validation "
                            "(NDCG@10 %.4f vs %.4f frozen): keeping the frozen encoder",
                            cfg.finetune_layers, tuned, frozen_score)
                net.load_state_dict(frozen)
                self._set_net(net, hist)
                return
            logger.info("ncf: fine-tuned the top %d text layers: validation NDCG@10 %.4f (frozen %.4f)",
                        cfg.finetune_layers, tuned, frozen_score)

    def _train_cold(self, net: NCFNet, hist: _Histories, train_matrix: sp.csr_matrix, active: np.ndarray,
                    log_pop: np.ndarray, trained_items: np.ndarray, rng: np.random.Generator,
                    val_rel: dict[int, set[int]] | None, data: InteractionData, epochs: int) -> None:
        """Train the new-item tower (content alone) against the fixed towers; early-stopped on validation.

        With validation, ``NEW_ITEM_HOLDOUT`` of the trained items are held out of this tower's
        training and validation ranks among them only by their new-item vectors (NDCG@10 of the
        held-out events), like items that are really new. Without, it runs ``epochs`` epochs.
        """
        cfg = self.config
        assert net.cold is not None
        learn = np.zeros(self.n_items, dtype=bool)
        learn[trained_items] = True
        held = None
        if val_rel is not None:
            held = rng.choice(trained_items, max(1, int(NEW_ITEM_HOLDOUT * len(trained_items))), replace=False)
            learn[held] = False
            val_rel = {u: rel & set(held.tolist()) for u, rel in val_rel.items()}
            val_rel = {u: rel for u, rel in val_rel.items() if rel}
            if not val_rel:
                val_rel, held = None, None
        opt = torch.optim.Adam(net.cold.parameters(), lr=cfg.lr)
        batch = cfg.batch_users
        best: tuple[float, dict | None] = (-1.0, None)
        bad = 0
        limit = cfg.epochs if val_rel is not None else epochs
        for epoch in tqdm(range(1, limit + 1), desc="ncf new-item tower", unit="epoch", disable=not cfg.progress,
                          leave=False):
            net.train()
            order = rng.permutation(active)
            for b in range(math.ceil(len(order) / batch)):
                loss = self._batch_loss(net, train_matrix[order[b * batch : (b + 1) * batch]], log_pop,
                                        trained_items, rng, cold=learn)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if val_rel is not None and held is not None and (epoch % cfg.eval_every == 0 or epoch == limit):
                with torch.no_grad():
                    score = self._validate_new(net.eval().cold(net.content).numpy(), held, val_rel, data)
                if score > best[0]:
                    best, bad = (score, {k: v.clone() for k, v in net.cold.state_dict().items()}), 0
                else:
                    bad += 1
                    if bad >= cfg.patience:
                        break
        if best[1] is not None:
            net.cold.load_state_dict(best[1])
        self._blend_new_items(net, held, val_rel, data)
        self._set_net(net, hist)

    def _blend_new_items(self, net: NCFNet, held: np.ndarray | None, val_rel: dict[int, set[int]] | None,
                         data: InteractionData) -> None:
        """Set what new items are served with: ``(tower + neighbours) / 2``, an even ensemble.

        ``neighbours`` is the softmax(cosine / ``NEW_ITEM_TAU``)-weighted mean of the learned
        vectors of the item's ``NEW_ITEM_NEIGHBOURS`` nearest trained items by content (itself
        excluded). The ensemble is fixed, not chosen on validation: there the user tower has
        seen the held-out items (as ids in histories), which favours the tower over true new
        items; the validation figures are logged for information.
        """
        assert net.cold is not None
        net.eval()
        with torch.no_grad():
            tower = net.cold(net.content)
            q_warm, _ = net.items(torch.arange(len(tower)))
        seen = np.flatnonzero(net.seen_mask.numpy() > 0)
        content = net.content.numpy()
        has_content = np.linalg.norm(content, axis=1) > 0
        nbr, sim = content_neighbours(content, seen, NEW_ITEM_NEIGHBOURS)  # [n, k] indices into seen
        w = torch.softmax(torch.from_numpy(sim / NEW_ITEM_TAU), dim=1)  # [n, k]
        borrowed = (w[:, :, None] * q_warm[torch.from_numpy(seen[nbr])]).sum(1)
        no_content = torch.from_numpy(~has_content)
        borrowed[no_content] = tower[no_content]
        blend = 0.5 * tower + 0.5 * borrowed
        if val_rel is not None and held is not None:
            logger.info("ncf: new items: validation NDCG@10 on held-out items %.4f (tower alone %.4f, "
                        "neighbours alone %.4f)", self._validate_new(blend.numpy(), held, val_rel, data),
                        self._validate_new(tower.numpy(), held, val_rel, data),
                        self._validate_new(borrowed.numpy(), held, val_rel, data))
        net.new_item_vecs.copy_(blend)
        net.new_items_ready.fill_(1.0)

    def _validate_new(self, q_new: np.ndarray, held: np.ndarray, val_rel: dict[int, set[int]],
                      data: InteractionData, k: int = 10) -> float:
        """NDCG@k of the held-out events on ``held`` items, ranked among them by new-item vectors ``q_new``."""
        assert self._user_vecs is not None
        users = _validation_users(val_rel)
        scores = self._user_vecs[users] @ q_new[held].T
        recs, _ = top_k(scores, k, held)
        return ndcg_at_k([r.tolist() for r in recs], [val_rel[int(u)] for u in users], k)

    def _batch_loss(self, net: NCFNet, x: sp.csr_matrix, log_pop: np.ndarray, trained_items: np.ndarray,
                    rng: np.random.Generator, content: torch.Tensor | None = None,
                    cold: np.ndarray | None = None) -> torch.Tensor:
        """Denoising multinomial loss for a batch of users' histories ``x`` (csr ``[b, n_items]``), plus the head's.

        ``content`` overrides the net's stored content vectors (``[n_items, c]``, fine-tuning);
        ``cold`` (bool ``[n_items]``: items the new-item tower may learn from) gives that tower's
        loss instead (towers fixed).
        """
        cfg = self.config
        coo = x.tocoo()
        rows, cols = coo.row.astype(np.int64), coo.col.astype(np.int64)
        b, n_items = x.shape
        n_trained = len(trained_items)
        if n_trained <= cfg.full_softmax_items:
            pool = trained_items
            logq = None
        else:  # the batch's items + uniform samples, each corrected by how likely it is in the pool
            sampled = trained_items[rng.integers(0, n_trained, size=cfg.negatives)]
            pool = np.unique(np.concatenate([cols, sampled]))
            p_draw = 1.0 - np.exp(-len(cols) * np.exp(log_pop[pool])) + cfg.negatives / n_trained
            logq = torch.from_numpy(np.log(np.minimum(p_draw, 1.0)).astype(np.float32))
        pos_of = np.full(n_items, -1, np.int64)
        pos_of[pool] = np.arange(len(pool))
        pool_t = torch.from_numpy(pool)
        keep = (torch.rand(len(pool)) >= cfg.item_id_dropout).float() * net.seen_mask[pool_t]
        kept = rng.random(len(rows)) >= cfg.input_dropout
        history = _row_normalised(rows[kept], pos_of[cols[kept]], b, len(pool))
        with torch.set_grad_enabled(cold is None and torch.is_grad_enabled()):  # towers fixed for ``cold``
            q, v, q_content = net.items_with_content(pool_t, keep, content)  # [m, d+1], [m, d], [m, d+1]
            p = net.users(history, v)  # [b, d+1]
        target = torch.zeros(b, len(pool))
        target[torch.from_numpy(rows), torch.from_numpy(pos_of[cols])] = 1.0

        def multinomial(users: torch.Tensor, item_vecs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = users @ item_vecs.T  # [b, m]
            if logq is not None:
                logits = logits - logq[None, :]
            return logits, -(torch.log_softmax(logits, dim=1) * target).sum(1).mean()

        if cold is not None:  # half the items, as if new, compete with the others' (fixed) vectors,
            # so content alone learns to score on the same scale as ids
            assert net.cold is not None
            new = ((torch.rand(len(pool)) < 0.5) & torch.from_numpy(cold[pool]))[:, None]
            return multinomial(p, torch.where(new, net.cold(net.content[pool_t]), q))[1]
        logits, loss = multinomial(p, q)
        if cfg.head_negatives > 0:
            loss = loss + self._head_loss(net, p, q, logits.detach(), target)
        if cfg.l2 > 0:
            loss = loss + cfg.l2 * (q.pow(2).sum() + v.pow(2).sum()) / len(pool)
        return loss

    def _head_loss(self, net: NCFNet, p: torch.Tensor, q: torch.Tensor, logits: torch.Tensor,
                   target: torch.Tensor) -> torch.Tensor:
        """Listwise loss of the served score (dot + head) on one target vs the tower's top wrong items.

        The towers are detached here: the head learns a correction on top of them and cannot pull
        the retrieval space towards its own needs.
        """
        p, q = p.detach(), q.detach()
        h = min(self.config.head_negatives, q.shape[0] - 1)
        has_target = target.sum(1) > 0
        p, logits, target = p[has_target], logits[has_target], target[has_target]
        wrong = logits.masked_fill(target > 0, float("-inf"))
        _, hard = wrong.topk(h, dim=1)  # [b, h]
        pos = _one_per_row(target)  # one target per user, [b, 1]
        cand = torch.cat([pos, hard], dim=1)  # [b, 1 + h]
        qc = q[cand]  # [b, 1 + h, d+1]
        scores = (p[:, None, :] * qc).sum(-1) + net.head_score(p[:, None, :], qc)
        valid = torch.isfinite(wrong.gather(1, hard))
        scores = torch.cat([scores[:, :1], scores[:, 1:].masked_fill(~valid, float("-inf"))], dim=1)
        return nn.functional.cross_entropy(scores, torch.zeros(len(p), dtype=torch.long))

    def _validate_settings(self, net: NCFNet, hist: _Histories, val_rel: dict[int, set[int]],
                           data: InteractionData) -> float:
        """Best validation NDCG@10 over recency half-lives and head on/off; sets them on ``net``."""
        cfg = self.config
        half_lives = RECENCY_GRID if cfg.recency_half_life == "auto" else (float(net.half_life) or None,)
        net.head_on.fill_(0.0)
        self._set_net(net, hist)
        scores: dict[tuple[float | None, float], float] = {}
        for half_life in half_lives:
            self._set_histories(hist, half_life)
            scores[(half_life, 0.0)] = self._validate(val_rel, data)
        (half_life, _), score = max(scores.items(), key=lambda kv: kv[1])
        self._set_histories(hist, half_life)
        if cfg.head_negatives > 0:
            net.head_on.fill_(1.0)
            scores[(half_life, 1.0)] = self._validate(val_rel, data)
            net.head_on.fill_(1.0 if scores[(half_life, 1.0)] > score else 0.0)
        logger.debug("ncf: validation NDCG@10 by (half-life, head): %s", scores)
        return max(scores.values())

    def _validate(self, val_rel: dict[int, set[int]], data: InteractionData, k: int = 10) -> float:
        """NDCG@k of the served path (retrieve by inner product, rank by the head) on held-out events."""
        users = _validation_users(val_rel)
        recs, _ = self.recommend(users, k, exclude=data.seen())
        return ndcg_at_k([r.tolist() for r in recs], [val_rel[int(u)] for u in users], k)

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

    def _set_net(self, net: NCFNet, histories: _Histories | sp.csr_matrix) -> None:
        """Serve ``net``; ``histories`` are the users' items (oldest first) or an already weighted csr."""
        self.net = net.eval()
        with torch.inference_mode():
            q, v = net.items(torch.arange(net.item_emb.num_embeddings))
        self._item_vecs, self._input_vecs = q.numpy().copy(), v
        if net.content_hidden is None:  # no content: an item never seen in training is unknown, so it ranks last
            self._item_vecs[net.seen_mask.numpy() == 0, -1] = UNKNOWN_ITEM_BIAS
        if isinstance(histories, _Histories):
            self._set_histories(histories, float(net.half_life) or None)
        else:
            self.histories = histories.astype(np.float32)
            self._user_vecs = self.history_vectors(self.histories)

    def _set_histories(self, hist: _Histories, half_life: float | None) -> None:
        """Known users' histories weighted by ``half_life`` (also stored in the net) and their vectors."""
        assert self.net is not None
        self.net.half_life.fill_(half_life or 0.0)
        self.histories = hist.matrix(half_life).astype(np.float32)
        self._user_vecs = self.history_vectors(self.histories)

    def history_vectors(self, history: sp.csr_matrix, user_idx: np.ndarray | None = None) -> np.ndarray:
        """Retrieval query vectors float32 ``[n, dim + 1]`` for histories (csr ``[n, n_items]``, weights).

        ``user_idx`` is accepted for interface compatibility (-1 = unknown): a user is
        their history here, so a known user's fresh events are simply part of it.
        An empty history gives the zero history (the items' prior, plus ``tanh(b)``).
        """
        self._check_fitted_net()
        history = sp.csr_matrix(history, dtype=np.float32)
        rows, cols = history.nonzero()
        weights = np.asarray(history[rows, cols]).ravel()
        norm = _row_normalised(rows, cols, history.shape[0], self.n_items, weights)
        with torch.inference_mode():
            p = self.net.users(norm, self._input_vecs)
        return p.numpy()

    def user_vectors(self, user_idx: np.ndarray | None = None) -> np.ndarray:
        """Retrieval query vectors float32 ``[n, dim + 1]`` of known users (from their training history)."""
        self._check_fitted_net()
        return self._user_vecs if user_idx is None else self._user_vecs[np.asarray(user_idx)]

    def item_vectors(self) -> np.ndarray:
        """Item-tower vectors float32 ``[n_items, dim + 1]``: what the FAISS index holds."""
        self._check_fitted_net()
        return self._item_vecs

    def rank(self, user_idx: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Final NCF scores float32 ``[n, m]`` for per-user candidates int64 ``[n, m]`` (-1 = none)."""
        return self.rank_vectors(self.user_vectors(user_idx), candidates)

    def rank_vectors(self, user_vecs: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Final NCF scores float32 ``[n, m]`` for query vectors ``[n, dim + 1]`` and candidates ``[n, m]``."""
        self._check_fitted_net()
        cand = np.asarray(candidates, dtype=np.int64)
        valid = cand >= 0
        p = torch.from_numpy(np.ascontiguousarray(user_vecs, dtype=np.float32))[:, None, :]
        q = torch.from_numpy(self._item_vecs[np.where(valid, cand, 0)])
        with torch.inference_mode():
            s = (p * q).sum(-1)
            if float(self.net.head_on):  # the head was kept by validation
                s = s + self.net.head_score(p, q)
        out = s.numpy().astype(np.float32)
        out[~valid] = -np.inf
        return out

    def recommend(self, user_idx, k, exclude=None, candidates=None):  # type: ignore[override]
        """Served path: retrieve by inner product (top ``max(200, 4k)``) then rank by the head.

        With ``candidates`` every candidate is ranked (no retrieval cut). Same contract as
        ``Recommender.recommend``.
        """
        if candidates is not None:
            return super().recommend(user_idx, k, exclude, candidates)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        users = np.asarray(user_idx, dtype=np.int64)
        return self._retrieve_rank(self.user_vectors(users), k, None if exclude is None else exclude[users])

    def recommend_history(self, history, k, exclude_history=True, candidates=None):  # type: ignore[override]
        """Served path for ad-hoc histories; same contract as ``Recommender.recommend_history``."""
        if candidates is not None:
            return super().recommend_history(history, k, exclude_history, candidates)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        history = sp.csr_matrix(history, dtype=np.float32)
        return self._retrieve_rank(self.history_vectors(history), k, history if exclude_history else None)

    def _retrieve_rank(self, p: np.ndarray, k: int, exclude: sp.csr_matrix | None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``max(200, 4k)`` by inner product (``exclude`` csr ``[n, n_items]`` dropped), ranked by the head."""
        n_retrieve = min(self.n_items, max(200, 4 * k))
        dots = p @ self._item_vecs.T
        if exclude is not None:
            seen = exclude.tocoo()
            dots[seen.row, seen.col] = -np.inf
        cand, _ = top_k(dots, n_retrieve, np.arange(self.n_items))
        scores = self.rank_vectors(p, cand)
        order, order_scores = top_k(scores, k, np.arange(cand.shape[1]))
        items = np.where(order >= 0, np.take_along_axis(cand, np.maximum(order, 0), 1), -1)
        return items, order_scores

    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        return self._score_vectors(self.user_vectors(user_idx), item_idx)

    def _score_history(self, history: sp.csr_matrix, item_idx: np.ndarray | None) -> np.ndarray:
        return self._score_vectors(self.history_vectors(history), item_idx)

    def _score_vectors(self, p: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        items = np.arange(self.n_items) if item_idx is None else item_idx
        out = np.empty((len(p), len(items)), dtype=np.float32)
        for s in range(0, len(p), 64):
            chunk = p[s : s + 64]
            out[s : s + 64] = self.rank_vectors(chunk, np.broadcast_to(items, (len(chunk), len(items))))
        return out

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


def _validation_users(val_rel: dict[int, set[int]], limit: int = 2000) -> np.ndarray:
    """The users of ``val_rel`` (int64), a fixed random ``limit`` of them when there are more."""
    users = np.fromiter(val_rel.keys(), dtype=np.int64)
    return np.random.default_rng(0).choice(users, limit, replace=False) if len(users) > limit else users


def content_neighbours(content: np.ndarray, pool: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest rows of ``content[pool]`` by cosine, itself excluded (exact, FAISS).

    Returns positions into ``pool`` int64 ``[n, k]`` and cosines float32 ``[n, k]`` for all
    ``n`` rows of ``content`` (``[n, c]``); ``k`` is capped at ``len(pool) - 1``.
    """
    import faiss

    k = max(1, min(k, len(pool) - 1))
    unit = content / np.maximum(np.linalg.norm(content, axis=1, keepdims=True), 1e-12)
    unit = np.ascontiguousarray(unit, dtype=np.float32)
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit[pool])
    sim, nbr = index.search(unit, k + 1)
    is_self = pool[np.maximum(nbr, 0)] == np.arange(len(unit))[:, None]
    is_self[:, -1] |= ~is_self.any(axis=1)  # drop self where found, else the farthest
    keep = ~is_self
    return nbr[keep].reshape(len(unit), k).astype(np.int64), sim[keep].reshape(len(unit), k)


def _one_per_row(target: torch.Tensor) -> torch.Tensor:
    """int64 ``[b, 1]``: a random column among the non-zeros of each row of ``target [b, m]`` (rows non-empty)."""
    noise = torch.rand(target.shape) * (target > 0)
    return noise.argmax(dim=1, keepdim=True)


def _row_normalised(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int,
                    weights: np.ndarray | None = None) -> torch.Tensor:
    """Sparse float32 ``[n_rows, n_cols]`` whose rows have unit L2 norm (empty rows stay zero)."""
    w = np.ones(len(rows), np.float32) if weights is None else np.asarray(weights, np.float32)
    totals = np.sqrt(np.bincount(rows, weights=w * w, minlength=n_rows)).astype(np.float32)
    values = w / np.maximum(totals[rows], 1e-12)
    index = torch.from_numpy(np.vstack([rows, cols]).astype(np.int64))
    return torch.sparse_coo_tensor(index, torch.from_numpy(values), (n_rows, n_cols), check_invariants=False).coalesce()
