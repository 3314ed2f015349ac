"""Neural collaborative filtering over frozen pre-trained content vectors.

The transfer-learning part: item content vectors come from frozen pre-trained
encoders (``embeddings/``); only the latter layers are trained here:

* item tower   ``q_i = e_i * m_i + proj(c_i)``  (``[d + 1]``, the last unit a bias)
  where ``e_i`` is a learned id embedding, ``m_i`` is 1 for items seen in training
  (0 for new items, and randomly 0 during training: item-id dropout, so the content
  path learns to stand alone) and ``proj`` a small MLP over the content vector ``c_i``.
* user tower   ``p_u = [u_u, 1]`` (a learned id embedding).
* retrieval    ``<p_u, q_i>``: an inner product, so FAISS can retrieve over ``q``.
* ranking      ``<p_u, q_i> + head(u_u * q_i[:d])``: a NeuMF-style MLP on the
  element-wise product, applied to the retrieved candidates.

Training: sampled softmax with shared uniform negatives, early stopping on a
per-user temporal validation split of the training data, then a refit on all
of it for the best number of epochs. Seeded and deterministic on CPU.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import polars as pl
import torch
from torch import nn
from tqdm.auto import tqdm

from training.data import Columns, InteractionData
from training.metrics import ndcg_at_k
from training.models.base import ModelConfig, Recommender, top_k
from training.splits import temporal_split

logger = logging.getLogger(__name__)


class NCFConfig(ModelConfig):
    """Hyper-parameters; defaults are chosen to hold across datasets, not tuned to one."""

    dim: int = 64
    content_hidden: int = 256
    epochs: int = 40
    batch_size: int = 1024
    lr: float = 3e-3
    l2: float = 1e-5
    negatives: int = 512
    head_negatives: int = 8
    head_hidden: int = 64
    item_id_dropout: float = 0.3
    val_fraction: float = 0.1
    patience: int = 3
    refit: bool = True
    seed: int = 0
    progress: bool = True


class NCFNet(nn.Module):
    """The towers and the ranking head. Shapes: users/items are int64 ``[b]``."""

    def __init__(self, n_users: int, n_items: int, content: torch.Tensor | None, cfg: NCFConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.user_emb = nn.Embedding(n_users, d)
        nn.init.normal_(self.user_emb.weight, std=0.1)
        self.item_emb = nn.Embedding(n_items, d + 1)
        nn.init.zeros_(self.item_emb.weight)
        self.register_buffer("content", content if content is not None else torch.zeros(n_items, 0))
        self.register_buffer("seen_mask", torch.ones(n_items))
        c = self.content.shape[1]
        self.proj = (
            nn.Sequential(nn.Linear(c, cfg.content_hidden), nn.GELU(), nn.Linear(cfg.content_hidden, d + 1))
            if c > 0
            else None
        )
        self.head = nn.Sequential(nn.Linear(d, cfg.head_hidden), nn.ReLU(), nn.Linear(cfg.head_hidden, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def users(self, users: torch.Tensor) -> torch.Tensor:
        """``[b, d + 1]``: the id embedding with a trailing 1 (meets the item bias)."""
        u = self.user_emb(users)
        return torch.cat([u, torch.ones_like(u[:, :1])], dim=1)

    def items(self, items: torch.Tensor, id_keep: torch.Tensor | None = None) -> torch.Tensor:
        """``[b, d + 1]`` item tower; ``id_keep`` (``[b]`` 0/1) overrides the seen mask."""
        keep = self.seen_mask[items] if id_keep is None else id_keep
        q = self.item_emb(items) * keep[:, None]
        if self.proj is not None:
            q = q + self.proj(self.content[items])
        return q

    def head_score(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Ranking-head term for broadcastable ``p [..., d+1]`` and ``q [..., d+1]``."""
        return self.head(p[..., :-1] * q[..., :-1]).squeeze(-1)


class NCFModel(Recommender):
    """Hybrid NCF: learned ids plus trained projections of frozen pre-trained content."""

    name = "ncf"
    config_class = NCFConfig
    recommends_for_cold_items = True

    config: NCFConfig

    def __init__(self, config: NCFConfig | None = None) -> None:
        super().__init__(config)
        self.net: NCFNet | None = None
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
                _, best_epoch = self._train(fit_data, content, cfg.epochs, val=val_part)
                epochs = best_epoch
                logger.info("ncf: best validation epoch %d of %d", best_epoch, cfg.epochs)
                if not cfg.refit:
                    return
        self._train(data, content, epochs, val=None)

    def _train(
        self, data: InteractionData, content: torch.Tensor | None, epochs: int, val: pl.DataFrame | None
    ) -> tuple[NCFNet, int]:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        net = NCFNet(data.n_users, data.n_items, content, cfg)
        seen_items = np.zeros(data.n_items, dtype=np.float32)
        users = data.interactions[Columns.USER_IDX].to_numpy().astype(np.int64)
        items = data.interactions[Columns.ITEM_IDX].to_numpy().astype(np.int64)
        seen_items[np.unique(items)] = 1.0
        net.seen_mask.copy_(torch.from_numpy(seen_items))
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        n = len(users)
        n_batches = math.ceil(n / cfg.batch_size)
        best = (-1.0, 0, None)
        bad_epochs = 0
        val_rel = _relevant_by_user(val, data) if val is not None else None
        bar = tqdm(range(1, epochs + 1), desc="ncf", unit="epoch", disable=not cfg.progress, leave=False)
        for epoch in bar:
            net.train()
            order = rng.permutation(n)
            total = 0.0
            for b in range(n_batches):
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                loss = self._batch_loss(net, users[idx], items[idx], data.n_items, rng)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
            postfix = {"loss": f"{total / n_batches:.3f}"}
            if val_rel is not None:
                self._set_net(net)
                score = self._validate(val_rel, data)
                postfix["val_ndcg@10"] = f"{score:.4f}"
                if score > best[0]:
                    best = (score, epoch, {k: v.clone() for k, v in net.state_dict().items()})
                    bad_epochs = 0
                else:
                    bad_epochs += 1
                    if bad_epochs >= cfg.patience:
                        bar.set_postfix(postfix)
                        break
            bar.set_postfix(postfix)
        if val_rel is not None and best[2] is not None:
            net.load_state_dict(best[2])
            self._set_net(net)
            return net, best[1]
        self._set_net(net)
        return net, epochs

    def _batch_loss(
        self, net: NCFNet, users: np.ndarray, items: np.ndarray, n_items: int, rng: np.random.Generator
    ) -> torch.Tensor:
        """Sampled softmax over shared uniform negatives, plus the head's softmax."""
        cfg = self.config
        u = torch.from_numpy(users)
        i = torch.from_numpy(items)
        neg = torch.from_numpy(rng.integers(0, n_items, size=cfg.negatives))
        keep = (torch.rand(len(i)) >= cfg.item_id_dropout).float() * net.seen_mask[i]
        p = net.users(u)  # [b, d+1]
        q_pos = net.items(i, keep)  # [b, d+1]
        q_neg = net.items(neg)  # [N, d+1]
        pos_logit = (p * q_pos).sum(-1, keepdim=True)
        neg_logit = p @ q_neg.T
        neg_logit = neg_logit.masked_fill(neg[None, :] == i[:, None], float("-inf"))
        logits = torch.cat([pos_logit, neg_logit], dim=1)
        target = torch.zeros(len(u), dtype=torch.long)
        loss = nn.functional.cross_entropy(logits, target)
        h = min(cfg.head_negatives, cfg.negatives)
        if h > 0:
            q_all = torch.cat([q_pos[:, None, :], q_neg[None, :h, :].expand(len(u), h, -1)], dim=1)
            head_logits = logits[:, : h + 1] + net.head_score(p[:, None, :], q_all)
            loss = loss + nn.functional.cross_entropy(head_logits, target)
        reg = (p[:, :-1].pow(2).sum() + q_pos.pow(2).sum()) / len(u)
        return loss + cfg.l2 * reg

    def _validate(self, val_rel: dict[int, set[int]], data: InteractionData, k: int = 10) -> float:
        """NDCG@k of the served path (retrieve by inner product, rank by the head) on held-out events."""
        users = np.fromiter(val_rel.keys(), dtype=np.int64)
        if len(users) > 2000:
            users = np.random.default_rng(0).choice(users, 2000, replace=False)
        seen = data.seen()
        recs, _ = self.recommend(users, k, exclude=seen)
        return ndcg_at_k([r.tolist() for r in recs], [val_rel[int(u)] for u in users], k)

    # -------------------------------------------------------------- scoring
    def _set_net(self, net: NCFNet) -> None:
        self.net = net.eval()
        with torch.inference_mode():
            self._user_vecs = net.users(torch.arange(net.user_emb.num_embeddings)).numpy()
            self._item_vecs = net.items(torch.arange(net.item_emb.num_embeddings)).numpy()

    def user_vectors(self, user_idx: np.ndarray | None = None) -> np.ndarray:
        """Retrieval query vectors float32 ``[n, dim + 1]``."""
        self._check_fitted_net()
        return self._user_vecs if user_idx is None else self._user_vecs[np.asarray(user_idx)]

    def item_vectors(self) -> np.ndarray:
        """Item-tower vectors float32 ``[n_items, dim + 1]``: what the FAISS index holds."""
        self._check_fitted_net()
        return self._item_vecs

    def rank(self, user_idx: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Final NCF scores float32 ``[n, m]`` for per-user candidates int64 ``[n, m]`` (-1 = none)."""
        self._check_fitted_net()
        cand = np.asarray(candidates, dtype=np.int64)
        valid = cand >= 0
        p = torch.from_numpy(self._user_vecs[np.asarray(user_idx)])[:, None, :]
        q = torch.from_numpy(self._item_vecs[np.where(valid, cand, 0)])
        with torch.inference_mode():
            s = (p * q).sum(-1) + self.net.head_score(p, q)
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
        n_retrieve = min(self.n_items, max(200, 4 * k))
        dots = self.user_vectors(users) @ self._item_vecs.T
        if exclude is not None:
            seen = exclude[users].tocoo()
            dots[seen.row, seen.col] = -np.inf
        cand, _ = top_k(dots, n_retrieve, np.arange(self.n_items))
        scores = self.rank(users, cand)
        order_items, order_scores = top_k(scores, k, np.arange(cand.shape[1]))
        items = np.where(order_items >= 0, np.take_along_axis(cand, np.maximum(order_items, 0), 1), -1)
        return items, order_scores

    def _score(self, user_idx: np.ndarray, item_idx: np.ndarray | None) -> np.ndarray:
        items = np.arange(self.n_items) if item_idx is None else item_idx
        out = np.empty((len(user_idx), len(items)), dtype=np.float32)
        for s in range(0, len(user_idx), 64):
            chunk = user_idx[s : s + 64]
            out[s : s + 64] = self.rank(chunk, np.broadcast_to(items, (len(chunk), len(items))))
        return out

    def _check_fitted_net(self) -> None:
        if self.net is None:
            self._check_fitted()
            raise RuntimeError("ncf: network missing")

    # ------------------------------------------------------------ save/load
    def _state(self) -> dict[str, torch.Tensor]:
        assert self.net is not None
        return dict(self.net.state_dict())

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        n_users, d = state["user_emb.weight"].shape
        content = state["content"]
        net = NCFNet(n_users, state["item_emb.weight"].shape[0], content if content.shape[1] else None, self.config)
        net.load_state_dict(state)
        self._set_net(net)


def _relevant_by_user(val: pl.DataFrame, data: InteractionData) -> dict[int, set[int]]:
    """Held-out (user -> item set) in internal ids, restricted to known users and items."""
    users = data.users.to_internal(val[Columns.USER], missing="ignore")
    items = data.items.to_internal(val[Columns.ITEM], missing="ignore")
    rel: dict[int, set[int]] = {}
    for u, i in zip(users.tolist(), items.tolist()):
        if u >= 0 and i >= 0:
            rel.setdefault(u, set()).add(i)
    return rel
