"""Neural collaborative filtering over frozen pre-trained content vectors.

The transfer-learning part: item content vectors come from frozen pre-trained
encoders (``embeddings/``); only the latter layers are trained here.

* **item tower**  ``q_i = e_i * m_i + proj(c_i)`` (``[d + 1]``, the last unit a bias):
  ``e_i`` a learned id embedding, ``m_i`` 1 for items seen in training (0 for new
  items, and randomly 0 while training: item-id dropout, so the content path learns
  to stand alone) and ``proj`` a small MLP over the content vector ``c_i``.
* **user tower**  ``p_u = [mlp(h_u) + h_u, 1]`` with ``h_u`` the weighted mean of the
  item-tower vectors of the user's history. A user *is* their history, so a list of
  item ids (a new or anonymous user, or a known user's newest events) gets a vector
  at once, without retraining.
* **retrieval**   ``<p_u, q_i>``: an inner product, so FAISS can retrieve over ``q``.
* **ranking**     ``<p_u, q_i> + head(p_u * q_i)``: a NeuMF-style MLP on the
  element-wise product, applied to the retrieved candidates.

Training is per user and looks forward in time, like the evaluation: each epoch a
user's time-ordered history is cut at a random point, the items before the cut
(with input dropout) form the history and the items after it are the targets of a
multinomial (softmax) likelihood. The softmax runs over the whole catalog when it
is small enough (``full_softmax_items``); above that, over the batch's targets
(in-batch negatives) plus uniformly sampled items, with the logQ correction for
how often each is sampled (popularity-corrected). The ranking head is trained on
the tower's hardest wrong answers. Early stopping on a per-user temporal
validation split of the training data, then a refit on all of it for the best
number of epochs. Seeded and deterministic on CPU.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from torch import nn
from tqdm.auto import tqdm

from training.data import Columns, InteractionData
from training.metrics import ndcg_at_k
from training.models.base import ModelConfig, Recommender, relevant_by_user, top_k
from training.splits import temporal_split

logger = logging.getLogger(__name__)


UNKNOWN_ITEM_BIAS = -1e4


class NCFConfig(ModelConfig):
    """Hyper-parameters; defaults are chosen to hold across datasets, not tuned to one."""

    dim: int = 128
    content_hidden: int = 256
    user_hidden: int = 256
    epochs: int = 200
    batch_users: int = 256
    lr: float = 2e-3
    l2: float = 1e-6
    input_dropout: float = 0.1
    item_id_dropout: float = 0.3
    max_history: int = 500
    recency_half_life: float | None = None
    tied: bool = True
    full_softmax_items: int = 50_000
    negatives: int = 4096
    head_negatives: int = 32
    head_hidden: int = 64
    val_fraction: float = 0.1
    eval_every: int = 5
    patience: int = 3
    refit: bool = True
    seed: int = 0
    progress: bool = True


class NCFNet(nn.Module):
    """Towers and ranking head. Items are int64 ``[m]``; histories csr-like tensors ``[b, m]``."""

    def __init__(self, n_items: int, content: torch.Tensor | None, cfg: NCFConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.item_emb = nn.Embedding(n_items, d + 1)
        nn.init.normal_(self.item_emb.weight, std=0.05)
        self.register_buffer("content", content if content is not None else torch.zeros(n_items, 0))
        self.register_buffer("seen_mask", torch.ones(n_items))
        c = self.content.shape[1]
        self.proj = (
            nn.Sequential(nn.Linear(c, cfg.content_hidden), nn.GELU(), nn.Linear(cfg.content_hidden, d + 1))
            if c > 0
            else None
        )
        self.hist_emb = nn.Embedding(n_items, d) if not cfg.tied else None
        if self.hist_emb is not None:
            nn.init.zeros_(self.hist_emb.weight)
        self.user_mlp = nn.Sequential(nn.Linear(d, cfg.user_hidden), nn.GELU(), nn.Linear(cfg.user_hidden, d))
        self.head = nn.Sequential(nn.Linear(d, cfg.head_hidden), nn.ReLU(), nn.Linear(cfg.head_hidden, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.register_buffer("head_on", torch.ones(()))  # 0 when validation found the head did not help

    def items(self, items: torch.Tensor, id_keep: torch.Tensor | None = None) -> torch.Tensor:
        """``[m, d + 1]`` item tower; ``id_keep`` (``[m]`` 0/1) overrides the seen mask."""
        keep = self.seen_mask[items] if id_keep is None else id_keep
        q = self.item_emb(items) * keep[:, None]
        if self.proj is not None:
            q = q + self.proj(self.content[items])
        return q

    def users(self, history: torch.Tensor, q: torch.Tensor, items: torch.Tensor,
              id_keep: torch.Tensor | None = None) -> torch.Tensor:
        """``[b, d + 1]`` from ``history`` (sparse ``[b, m]``, row-normalised weights) over items ``[m]``.

        Each history item contributes its item-tower vector ``q [m, d + 1]`` (without the bias)
        plus a learned history-side id embedding, so item-to-item relations need not be symmetric.
        """
        keep = self.seen_mask[items] if id_keep is None else id_keep
        v = q[:, :-1] + self.hist_emb(items) * keep[:, None] if self.hist_emb is not None else q[:, :-1]
        h = torch.sparse.mm(history, v) if history.is_sparse else history @ v
        p = h + self.user_mlp(h)
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
        """csr ``[n_users, n_items]``: 1 per item, or ``recency_weights`` with ``half_life``."""
        weights = np.concatenate([recency_weights(int(n), half_life) for n in np.diff(self.indptr)]) \
            if len(self.items) else np.ones(0, np.float32)
        return sp.csr_matrix((weights, self.items, self.indptr), shape=(self.n_users, self.n_items))


def recency_weights(n: int, half_life: float | None) -> np.ndarray:
    """float32 ``[n]`` weights of a history listed oldest first: the newest 1, halving every ``half_life`` items."""
    if half_life is None:
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

    def wants_item_vectors(self) -> bool:
        return True

    # ------------------------------------------------------------------ fit
    def _fit(self, data: InteractionData, item_vectors: np.ndarray | None) -> None:
        cfg = self.config
        content = torch.from_numpy(item_vectors) if item_vectors is not None else None
        epochs = cfg.epochs
        if cfg.val_fraction > 0:
            fit_part, val_part = temporal_split(data.interactions, test_fraction=cfg.val_fraction)
            if val_part.height > 0:
                fit_data = InteractionData.build(fit_part, data.items, users=data.users)
                epochs = self._train(fit_data, content, cfg.epochs, val=val_part)
                assert self.net is not None
                head_on = float(self.net.head_on)
                logger.info("ncf: best validation epoch %d of %d (ranking head %s)", epochs, cfg.epochs,
                            "kept" if head_on else "off: it did not help on validation")
                if not cfg.refit:
                    return
                self._train(data, content, epochs, val=None)
                self.net.head_on.fill_(head_on)
                return
        self._train(data, content, epochs, val=None)

    def _train(self, data: InteractionData, content: torch.Tensor | None, epochs: int,
               val: pl.DataFrame | None) -> int:
        """Train a fresh net for up to ``epochs``; returns the epoch count kept (best on ``val``)."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        net = NCFNet(data.n_items, content, cfg)
        hist = _Histories(data, cfg.max_history)
        counts = np.bincount(hist.items, minlength=data.n_items).astype(np.float64)
        net.seen_mask.copy_(torch.from_numpy((counts > 0).astype(np.float32)))
        log_pop = np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0))
        seen = counts > 0
        with torch.no_grad():  # start from popularity: the bias unit of seen items is their log share
            net.item_emb.weight[:, -1] = torch.from_numpy((log_pop - log_pop[seen].mean()).astype(np.float32))
        trained_items = np.flatnonzero(seen)  # the softmax runs over items that can be targets
        active = np.flatnonzero(np.diff(hist.indptr) >= 2)  # users with a history and a target
        if len(active) == 0:
            raise ValueError("ncf: no user has 2 or more distinct items to learn from")
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        batch = cfg.batch_users
        val_rel = relevant_by_user(val, data) if val is not None else None
        best = (-1.0, 0, None)
        bad = 0
        bar = tqdm(range(1, epochs + 1), desc="ncf", unit="epoch", disable=not cfg.progress, leave=False)
        for epoch in bar:
            net.train()
            order = rng.permutation(active)
            total = 0.0
            n_batches = math.ceil(len(order) / batch)
            for b in range(n_batches):
                users = order[b * batch : (b + 1) * batch]
                loss = self._batch_loss(net, hist, users, log_pop, trained_items, rng)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
            postfix = {"loss": f"{total / n_batches:.3f}"}
            if val_rel is not None and (epoch % cfg.eval_every == 0 or epoch == epochs):
                self._set_net(net, hist.matrix(cfg.recency_half_life))
                score = self._validate_head(net, val_rel, data)
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
        self._set_net(net, hist.matrix(cfg.recency_half_life))
        return best[1] if best[2] is not None else epochs

    def _batch_loss(self, net: NCFNet, hist: _Histories, users: np.ndarray, log_pop: np.ndarray,
                    trained_items: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """Forward-looking multinomial loss for a batch of users, plus the ranking head's loss."""
        cfg = self.config
        rows_in, cols_in, w_in, rows_t, cols_t = [], [], [], [], []
        for r, u in enumerate(users):
            seq = hist.items[hist.indptr[u] : hist.indptr[u + 1]]
            n = len(seq)
            cut = n - max(1, int(round(rng.uniform(0.0, 0.5) * n)))  # >= 1 input, >= 1 target
            past = seq[:cut]
            if cfg.input_dropout > 0 and len(past) > 1:
                kept = past[rng.random(len(past)) >= cfg.input_dropout]
                past = kept if len(kept) else past[-1:]
            rows_in.append(np.full(len(past), r))
            cols_in.append(past)
            w_in.append(recency_weights(len(past), cfg.recency_half_life))
            rows_t.append(np.full(n - cut, r))
            cols_t.append(seq[cut:])
        rows_in, cols_in = np.concatenate(rows_in), np.concatenate(cols_in)
        rows_t, cols_t = np.concatenate(rows_t), np.concatenate(cols_t)
        b, n_items = len(users), hist.n_items
        n_trained = len(trained_items)
        if n_trained <= cfg.full_softmax_items:
            pool = trained_items
            logq = None
        else:  # in-batch targets + uniform samples, each corrected by how likely it was drawn
            sampled = trained_items[rng.integers(0, n_trained, size=cfg.negatives)]
            pool = np.unique(np.concatenate([cols_in, cols_t, sampled]))
            p_draw = 1.0 - np.exp(-len(cols_t) * np.exp(log_pop[pool])) + cfg.negatives / n_trained
            logq = torch.from_numpy(np.log(np.minimum(p_draw, 1.0)).astype(np.float32))
        pos_of = np.full(n_items, -1, np.int64)
        pos_of[pool] = np.arange(len(pool))
        pool_t = torch.from_numpy(pool)
        keep = (torch.rand(len(pool)) >= cfg.item_id_dropout).float() * net.seen_mask[pool_t]
        q = net.items(pool_t, keep)  # [m, d+1]
        history = _row_normalised(rows_in, pos_of[cols_in], b, len(pool), np.concatenate(w_in))
        p = net.users(history, q, pool_t, keep)  # [b, d+1]
        logits = p @ q.T  # [b, m]
        if logq is not None:
            logits = logits - logq[None, :]
        # multinomial likelihood of the targets; past items are masked (not negatives, not targets)
        past_mask = torch.zeros(b, len(pool), dtype=torch.bool)
        past_mask[torch.from_numpy(rows_in), torch.from_numpy(pos_of[cols_in])] = True
        target = torch.zeros(b, len(pool))
        target[torch.from_numpy(rows_t), torch.from_numpy(pos_of[cols_t])] = 1.0
        past_mask &= target == 0
        logits = logits.masked_fill(past_mask, float("-inf"))
        log_soft = torch.log_softmax(logits, dim=1)
        per_user = -torch.where(target > 0, log_soft, 0.0).sum(1) / target.sum(1)
        loss = per_user.mean()
        if cfg.head_negatives > 0:
            loss = loss + self._head_loss(net, p, q, logits.detach(), target)
        return loss + cfg.l2 * (p[:, :-1].pow(2).sum() / b + q.pow(2).sum() / len(pool))

    def _head_loss(self, net: NCFNet, p: torch.Tensor, q: torch.Tensor, logits: torch.Tensor,
                   target: torch.Tensor) -> torch.Tensor:
        """Listwise loss of the served score (dot + head) on one target vs the tower's top wrong items.

        The towers are detached here: the head learns a correction on top of them and cannot pull
        the retrieval space towards its own needs.
        """
        p, q = p.detach(), q.detach()
        h = min(self.config.head_negatives, q.shape[0] - 1)
        wrong = logits.masked_fill(target > 0, float("-inf"))
        _, hard = wrong.topk(h, dim=1)  # [b, h]
        pos = torch.multinomial(target, 1)  # one target per user, [b, 1]
        cand = torch.cat([pos, hard], dim=1)  # [b, 1 + h]
        qc = q[cand]  # [b, 1 + h, d+1]
        scores = (p[:, None, :] * qc).sum(-1) + net.head_score(p[:, None, :], qc)
        valid = torch.isfinite(wrong.gather(1, hard))
        scores = torch.cat([scores[:, :1], scores[:, 1:].masked_fill(~valid, float("-inf"))], dim=1)
        return nn.functional.cross_entropy(scores, torch.zeros(len(p), dtype=torch.long))

    def _validate_head(self, net: NCFNet, val_rel: dict[int, set[int]], data: InteractionData) -> float:
        """Validation NDCG@10 with the head on and off; keeps the better setting in ``net.head_on``."""
        net.head_on.fill_(1.0)
        with_head = self._validate(val_rel, data) if self.config.head_negatives > 0 else -1.0
        net.head_on.fill_(0.0)
        without = self._validate(val_rel, data)
        net.head_on.fill_(1.0 if with_head > without else 0.0)
        logger.debug("ncf: validation NDCG@10 %.4f with the head, %.4f without", with_head, without)
        return max(with_head, without)

    def _validate(self, val_rel: dict[int, set[int]], data: InteractionData, k: int = 10) -> float:
        """NDCG@k of the served path (retrieve by inner product, rank by the head) on held-out events."""
        users = np.fromiter(val_rel.keys(), dtype=np.int64)
        if len(users) > 2000:
            users = np.random.default_rng(0).choice(users, 2000, replace=False)
        recs, _ = self.recommend(users, k, exclude=data.seen())
        return ndcg_at_k([r.tolist() for r in recs], [val_rel[int(u)] for u in users], k)

    # -------------------------------------------------------------- scoring
    def _set_net(self, net: NCFNet, histories: sp.csr_matrix) -> None:
        self.net = net.eval()
        self.histories = histories.astype(np.float32)
        with torch.inference_mode():
            self._item_vecs = net.items(torch.arange(net.item_emb.num_embeddings)).numpy().copy()
        if net.proj is None:  # no content: an item never seen in training is unknown, so it ranks last
            self._item_vecs[net.seen_mask.numpy() == 0, -1] = UNKNOWN_ITEM_BIAS
        self._user_vecs = self.history_vectors(self.histories)

    def history_vectors(self, history: sp.csr_matrix, user_idx: np.ndarray | None = None) -> np.ndarray:
        """Retrieval query vectors float32 ``[n, dim + 1]`` for histories (csr ``[n, n_items]``, weights).

        ``user_idx`` is accepted for interface compatibility (-1 = unknown): a user is
        their history here, so a known user's fresh events are simply part of it.
        An empty history gives the zero vector plus bias (the items' prior).
        """
        self._check_fitted_net()
        history = sp.csr_matrix(history, dtype=np.float32)
        rows, cols = history.nonzero()
        weights = np.asarray(history[rows, cols]).ravel()
        norm = _row_normalised(rows, cols, history.shape[0], self.n_items, weights)
        with torch.inference_mode():
            p = self.net.users(norm, torch.from_numpy(self._item_vecs), torch.arange(self.n_items))
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
        indptr, indices = state.pop("histories.indptr").numpy(), state.pop("histories.indices").numpy()
        weights = state.pop("histories.weights").numpy()
        content = state["content"]
        net = NCFNet(state["item_emb.weight"].shape[0], content if content.shape[1] else None, self.config)
        net.load_state_dict(state)
        self._set_net(net, sp.csr_matrix((weights, indices, indptr), shape=(self.n_users, self.n_items)))


def _row_normalised(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int,
                    weights: np.ndarray | None = None) -> torch.Tensor:
    """Sparse float32 ``[n_rows, n_cols]`` whose rows sum to 1 (empty rows stay zero)."""
    w = np.ones(len(rows), np.float32) if weights is None else np.asarray(weights, np.float32)
    totals = np.bincount(rows, weights=w, minlength=n_rows).astype(np.float32)
    values = w / np.maximum(totals[rows], 1e-12)
    index = torch.from_numpy(np.vstack([rows, cols]).astype(np.int64))
    return torch.sparse_coo_tensor(index, torch.from_numpy(values), (n_rows, n_cols), check_invariants=False).coalesce()
