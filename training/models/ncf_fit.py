"""Fitting ``NCFModel``: the towers, the ranking head, the text fine-tuning and the new-item tower.

Training is a denoising autoencoder with a multinomial likelihood (Liang et al.,
"Variational autoencoders for collaborative filtering", 2018, Mult-DAE): each user's
history, with items dropped at random (``input_dropout``), goes through the user tower
and the softmax over items must put its mass on the whole history. The softmax runs
over the whole catalog when it is small enough (``full_softmax_items``); above that,
over the batch's items (in-batch negatives) plus uniformly sampled items, with the
logQ correction for how often each is in the pool (popularity-corrected). The ranking
head is trained on the towers' hardest wrong answers (towers detached). Early stopping
on the validation split (``training.validation.ValidationSplit``), which also picks the
recency half-life and whether the head is kept; the new-item tower is then trained
with the others fixed (half the items, as if new, compete with the rest) and
early-stopped on items held out of its training. Seeded and deterministic on CPU.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from tlrec.progress import progress_bar

from tlrec.errors import ConfigError
from tlrec.tables import DataError
from tlrec.training.interaction_data import InteractionData
from tlrec.training.metrics import ndcg_at_k
from tlrec.training.models.base import top_k
from tlrec.training.models.early_stopping import EarlyStopping
from tlrec.training.models.ncf_net import NCFNet, UserHistories, row_normalised
from tlrec.training.models.softmax_pool import softmax_pool
from tlrec.training.validation import ValidationSplit

if TYPE_CHECKING:
    from tlrec.training.models.ncf import NCFModel

logger = logging.getLogger(__name__)

__all__ = ["NCFTrainer", "RECENCY_GRID", "content_neighbours"]

#: Half-lives (in items, newest first; ``None`` = all items weigh the same) tried by
#: ``recency_half_life="auto"`` on the validation split.
RECENCY_GRID: tuple[float | None, ...] = (None, 40.0, 20.0, 10.0, 5.0)
#: New items borrow the learned vectors of this many nearest trained items by content.
NEW_ITEM_NEIGHBOURS = 20
#: Softmax temperature over their cosines (a common default for unit vectors).
NEW_ITEM_TAU = 0.1
#: Share of the trained items held out of the new-item tower's training to validate it.
NEW_ITEM_HOLDOUT = 0.2


class NCFTrainer:
    """Fits one ``NCFModel`` in place: ``fit(data, item_vectors, validation)`` and ``refit`` (``Recommender``).

    Serves each trained net through the model (``NCFModel._set_net``), so validation runs the
    model's own retrieve -> rank path.
    """

    def __init__(self, model: NCFModel) -> None:
        self.model = model
        self.config = model.config

    def fit(self, data: InteractionData, item_vectors: np.ndarray | None, validation: ValidationSplit | None) -> None:
        """Train on ``data`` (content ``item_vectors`` ``[n_items, c]`` or None) and serve the result.

        With ``validation`` (whose ``fit_data`` is ``data``): early stopping, recency half-life
        and ranking head chosen on its held-out events. Without: ``epochs`` epochs, as configured.
        """
        cfg = self.config
        content = torch.from_numpy(item_vectors) if item_vectors is not None else None
        if validation is None:
            self._train(data, content, self.model.epochs_ or cfg.epochs, val=None)
            return
        epochs = self._train(data, content, cfg.epochs, val=validation)
        assert self.model.net is not None
        self.model.epochs_ = epochs
        head_on, half_life = float(self.model.net.head_on), float(self.model.net.half_life)
        logger.info("ncf: best validation epoch %d of %d (recency half-life %s, ranking head %s)",
                    epochs, cfg.epochs, f"{half_life:g} items" if half_life else "none",
                    "kept" if head_on else "off: it did not help on validation")

    def refit(self, data: InteractionData, item_vectors: np.ndarray | None) -> None:
        """Serve all of ``data`` after ``fit`` with a validation split.

        A user is their history, so by default every user is served from all of it (held-out
        events included) without training again; items that first appear in the held-out events
        are served as new items (content). With ``refit=True`` the net is trained again on
        ``data`` for the epochs kept, with the recency and head chosen on validation.
        """
        cfg = self.config
        assert self.model.net is not None
        if cfg.refit:
            head_on, half_life = float(self.model.net.head_on), float(self.model.net.half_life)
            content = torch.from_numpy(item_vectors) if item_vectors is not None else None
            self._train(data, content, self.model.epochs_ or cfg.epochs, val=None)
            self.model.net.head_on.fill_(head_on)
            self.model.net.half_life.fill_(half_life)
        self.model._set_net(self.model.net, UserHistories(data, cfg.max_history))

    def _train(self, data: InteractionData, content: torch.Tensor | None, epochs: int,
               val: ValidationSplit | None) -> int:
        """Train a fresh net for up to ``epochs``; returns the epoch count kept (best on ``val``)."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        net = NCFNet(data.n_items, content, cfg)
        if cfg.head_negatives <= 0:  # an untrained head adds nothing but work
            net.head_on.fill_(0.0)
        if cfg.recency_half_life not in (None, "auto"):
            net.half_life.fill_(float(cfg.recency_half_life))
        hist = UserHistories(data, cfg.max_history)
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
        opt = NetAdam(net, cfg.lr)
        batch = cfg.batch_users
        run = EarlyStopping(net, epochs, cfg.eval_every, cfg.patience, val is not None, "ncf", cfg.progress,
                            val.hopeless if val is not None else None)
        for epoch in run:
            net.train()
            order = rng.permutation(active)
            total = 0.0
            n_batches = math.ceil(len(order) / batch)
            for b in range(n_batches):
                users = order[b * batch : (b + 1) * batch]
                loss = self._batch_loss(net, train_matrix[users], log_pop, trained_items, rng)
                opt.step(loss)
                total += float(loss.detach())
            run.postfix["loss"] = f"{total / n_batches:.3f}"
            if val is not None and run.due(epoch):
                run.record(epoch, self._validate_settings(net, hist, val))
        del opt  # its moments (twice the parameters) go before every item's and user's vectors are computed
        kept = run.restore()
        self.model._set_net(net, hist)
        if cfg.finetune_layers > 0:
            self._finetune(net, hist, train_matrix, active, log_pop, trained_items, rng,
                           val, run.best_score if run.best_state is not None else None)
        if net.cold is not None:
            self._train_cold(net, hist, train_matrix, active, log_pop, trained_items, rng,
                             val.relevant if val is not None else None, data, kept)
        return kept

    def _finetune(self, net: NCFNet, hist: UserHistories, train_matrix: sp.csr_matrix, active: np.ndarray,
                  log_pop: np.ndarray, trained_items: np.ndarray, rng: np.random.Generator,
                  val: ValidationSplit | None, frozen_score: float | None) -> None:
        """Unfreeze the text encoder's top layers for ``finetune_epochs`` more epochs (gradual unfreezing).

        Each step re-encodes up to ``finetune_items`` of the batch's items with gradients; the
        net's content buffer caches every item's latest text vector. Kept only if validation
        NDCG@10 beats the frozen encoder's (when there is a validation split).
        """
        cfg = self.config
        tower, text_slice = self.model._text_tower, self.model._text_slice
        if tower is None or text_slice is None or net.content_hidden is None:
            raise ConfigError("ncf: finetune_layers needs the items' texts and text vectors; train with "
                             "`tlrec train --finetune-layers N` on a catalog with text")
        frozen = {k: v.clone() for k, v in net.state_dict().items()}
        share = net.content[:, text_slice].norm(dim=1, keepdim=True)  # [n, 1]: the text block's weight
        opt = NetAdam(net, cfg.lr, [{"params": list(tower.parameters()), "lr": cfg.finetune_lr}])
        batch = cfg.batch_users
        tower.train()
        for _ in progress_bar(range(cfg.finetune_epochs), show=cfg.progress, desc="ncf finetune", unit="epoch",
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
                opt.step(self._batch_loss(net, x, log_pop, trained_items, rng, content))
                with torch.no_grad():
                    net.content[items_t] = rows.detach()
        tower.eval()
        with torch.no_grad():  # every item through the tuned layers
            net.content[:, text_slice] = tower.encode_all() * share
        self.model._set_net(net, hist)
        if val is not None and frozen_score is not None:
            tuned = self._validate_settings(net, hist, val)
            if tuned <= frozen_score:
                logger.info("ncf: fine-tuning the top %d text layers did not help on validation "
                            "(NDCG@10 %.4f vs %.4f frozen): keeping the frozen encoder",
                            cfg.finetune_layers, tuned, frozen_score)
                net.load_state_dict(frozen)
                self.model._set_net(net, hist)
                return
            logger.info("ncf: fine-tuned the top %d text layers: validation NDCG@10 %.4f (frozen %.4f)",
                        cfg.finetune_layers, tuned, frozen_score)

    def _train_cold(self, net: NCFNet, hist: UserHistories, train_matrix: sp.csr_matrix, active: np.ndarray,
                    log_pop: np.ndarray, trained_items: np.ndarray, rng: np.random.Generator,
                    val_rel: dict[int, set[int]] | None, data: InteractionData, epochs: int) -> None:
        """Train the new-item tower (content alone) against the fixed towers; early-stopped on validation.

        With validation, ``NEW_ITEM_HOLDOUT`` of the trained items are held out of this tower's
        training and validation ranks among them only by their new-item vectors (NDCG@10 of the
        held-out events), like items that are really new. Without, it runs ``epochs`` epochs.
        """
        cfg = self.config
        assert net.cold is not None
        learn = np.zeros(self.model.n_items, dtype=bool)
        learn[trained_items] = True
        held = None
        if val_rel is not None:
            held = rng.choice(trained_items, max(1, int(NEW_ITEM_HOLDOUT * len(trained_items))), replace=False)
            learn[held] = False
            val_rel = {u: rel & set(held.tolist()) for u, rel in val_rel.items()}
            val_rel = {u: rel for u, rel in val_rel.items() if rel}
            if not val_rel:
                val_rel, held = None, None
        opt = torch.optim.Adam(net.cold.parameters(), lr=cfg.lr, fused=True)
        batch = cfg.batch_users
        validate = val_rel is not None and held is not None
        run = EarlyStopping(net.cold, cfg.epochs if validate else epochs, cfg.eval_every, cfg.patience, validate,
                            "ncf new-item tower", cfg.progress)
        net.eval()
        with torch.no_grad():  # the towers stay fixed: every item's vectors once
            fixed = net.items(torch.arange(self.model.n_items))
        for epoch in run:
            net.cold.train()
            order = rng.permutation(active)
            for b in range(math.ceil(len(order) / batch)):
                loss = self._batch_loss(net, train_matrix[order[b * batch : (b + 1) * batch]], log_pop,
                                        trained_items, rng, cold=learn, fixed=fixed)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if validate and run.due(epoch):
                with torch.no_grad():
                    run.record(epoch, self._validate_new(net.eval().cold(net.content).numpy(), held, val_rel, data))
        run.restore()
        self._blend_new_items(net, held, val_rel, data)
        self.model._set_net(net, hist)

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
        assert self.model._user_vecs is not None
        users = _validation_users(val_rel)
        scores = self.model._user_vecs[users] @ q_new[held].T
        recs, _ = top_k(scores, k, held)
        return ndcg_at_k([r.tolist() for r in recs], [val_rel[int(u)] for u in users], k)

    def _batch_loss(self, net: NCFNet, x: sp.csr_matrix, log_pop: np.ndarray, trained_items: np.ndarray,
                    rng: np.random.Generator, content: torch.Tensor | None = None,
                    cold: np.ndarray | None = None, fixed: tuple[torch.Tensor, torch.Tensor] | None = None
                    ) -> torch.Tensor:
        """Denoising multinomial loss for a batch of users' histories ``x`` (csr ``[b, n_items]``), plus the head's.

        ``content`` overrides the net's stored content vectors (``[n_items, c]``, fine-tuning).
        ``cold`` (bool ``[n_items]``: items the new-item tower may learn from) gives that tower's
        loss instead, against the towers' ``fixed`` output and input vectors of every item
        (``[n_items, d + 1]``, ``[n_items, d]``, from ``net.items``, computed once).
        """
        cfg = self.config
        coo = x.tocoo()
        rows, cols = coo.row.astype(np.int64), coo.col.astype(np.int64)
        b, n_items = x.shape
        pool, logq = softmax_pool(cols, trained_items, log_pop, cfg.full_softmax_items, cfg.negatives, rng)
        pos_of = np.full(n_items, -1, np.int64)
        pos_of[pool] = np.arange(len(pool))
        pool_t = torch.from_numpy(pool)
        kept = rng.random(len(rows)) >= cfg.input_dropout
        history = row_normalised(rows[kept], pos_of[cols[kept]], b, len(pool))
        target = torch.zeros(b, len(pool))
        target[torch.from_numpy(rows), torch.from_numpy(pos_of[cols])] = 1.0

        def multinomial(users: torch.Tensor, item_vecs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = users @ item_vecs.T  # [b, m]
            if logq is not None:
                logits = logits - logq[None, :]
            return logits, -(torch.log_softmax(logits, dim=1) * target).sum(1).mean()

        if cold is not None:  # half the items, as if new, compete with the others' (fixed) vectors,
            # so content alone learns to score on the same scale as ids
            assert net.cold is not None and fixed is not None
            q, v = fixed[0][pool_t], fixed[1][pool_t]
            with torch.no_grad():
                p = net.users(history, v)
            new = torch.nonzero((torch.rand(len(pool)) < 0.5) & torch.from_numpy(cold[pool])).squeeze(1)
            return multinomial(p, q.index_copy(0, new, net.cold(net.content[pool_t[new]])))[1]
        keep = (torch.rand(len(pool)) >= cfg.item_id_dropout).float() * net.seen_mask[pool_t]
        q, v = net.items(pool_t, keep, content)  # [m, d+1], [m, d]
        p = net.users(history, v)  # [b, d+1]
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

    def _validate_settings(self, net: NCFNet, hist: UserHistories, val: ValidationSplit) -> float:
        """Best validation NDCG@10 over recency half-lives and head on/off; sets them on ``net``."""
        cfg = self.config
        half_lives = RECENCY_GRID if cfg.recency_half_life == "auto" else (float(net.half_life) or None,)
        net.head_on.fill_(0.0)
        self.model._set_net(net, hist)
        scores: dict[tuple[float | None, float], float] = {}
        for half_life in half_lives:
            self.model._set_histories(hist, half_life)
            scores[(half_life, 0.0)] = self._validate(val)
        (half_life, _), score = max(scores.items(), key=lambda kv: kv[1])
        self.model._set_histories(hist, half_life)
        if cfg.head_negatives > 0:
            net.head_on.fill_(1.0)
            scores[(half_life, 1.0)] = self._validate(val)
            net.head_on.fill_(1.0 if scores[(half_life, 1.0)] > score else 0.0)
        logger.debug("ncf: validation NDCG@10 by (half-life, head): %s", scores)
        return max(scores.values())

    def _validate(self, val: ValidationSplit, k: int = 10) -> float:
        """NDCG@k of the served path (retrieve by inner product, rank by the head) on held-out events."""
        model = self.model  # mid-fit: the private path (the public one wants a fitted model)
        assert model.net is not None
        queries, exclude = model._query_vectors(val.users), val.seen[val.users]
        recs, _ = model._retrieve_rank(queries, k, exclude, model._exact_retrieve)
        return float(val.ndcg_per_user(recs, k).mean())


class NetAdam:
    """Adam over an ``NCFNet`` (plus ``extra`` parameter groups): fused Adam for the dense parameters, and a
    lazy Adam (``SparseAdam``: moments of the rows a step touched) for id embeddings with sparse gradients
    (catalogs above ``full_softmax_items``, see ``NCFNet``)."""

    def __init__(self, net: NCFNet, lr: float, extra: list[dict] | None = None) -> None:
        sparse = [m.weight for m in (net.item_emb, net.hist_emb) if m.sparse]
        dense = [p for p in net.parameters() if not any(p is s for s in sparse)]
        self.optimizers: list[torch.optim.Optimizer] = [
            torch.optim.Adam([{"params": dense, "lr": lr}, *(extra or [])], fused=True)]  # fused: ~6x faster on CPU
        if sparse:
            self.optimizers.append(torch.optim.SparseAdam(sparse, lr=lr))

    def step(self, loss: torch.Tensor) -> None:
        """One step down ``loss``'s gradient."""
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in self.optimizers:
            opt.step()


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

