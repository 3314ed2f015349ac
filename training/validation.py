"""The validation split every model chooses its settings on, and whether time order means anything.

``ValidationSplit.of(data)`` holds out ``fraction`` of each user's training events: the last ones
by time when the timestamps carry signal, a seeded random share when they do not
(``by="last"``: each user's last event, the next-item task). Models fit
on ``fit_data`` and are scored on the held-out events by NDCG@10 with the items seen in
``fit_data`` excluded, over a fixed sample of at most ``MAX_USERS`` users, so every model
(and the model selection of ``training.selection``) is compared on the same events.

**Does time carry signal?** (``time_signal``) Not every dataset's timestamps mean something:
they may all be equal, shuffled, or a single burst per user. Two checks, cheapest first:

1. *ties*: if fewer than half of the events of users with 4+ events have a timestamp of their
   own within their user, there is no order to follow;
2. *order probe*: for up to ``MAX_USERS`` users, the last 20% of their events (by time) are the
   targets; an item co-occurrence predictor (counts over every user's earlier events) ranks
   items once from the user's *most recent* ``m`` earlier items and once from their *oldest*
   ``m`` (``m`` = half the earlier events, at most 10). If time order carries signal, the recent
   items predict the targets better: the paired difference of hit rate@20 must have a
   bootstrap 95% interval above zero. Shuffled timestamps make the two halves exchangeable.

The verdict and its figures are logged and kept in ``reason`` (the manifest shows it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from tlrec.errors import UsageError
from tlrec.tables import Columns
from tlrec.training.interaction_data import InteractionData
from tlrec.training.metrics import bootstrap_diff, ndcg_per_user
from tlrec.training.splits import leave_last_out, random_split, temporal_split

if TYPE_CHECKING:
    from tlrec.training.models.base import Recommender

logger = logging.getLogger(__name__)

__all__ = ["HOPELESS_SHARE", "MAX_USERS", "SplitBy", "ValidationSplit", "time_signal"]

#: How the held-out events were chosen: the last share by time, a random share, or each user's last event.
SplitBy = Literal["time", "random", "last"]
#: Users scored on validation (a seeded sample when there are more).
MAX_USERS = 2000
#: An iterative model whose validation score stays below this share of the best finished
#: candidate's (``ValidationSplit.bar``) is stopped early: it cannot win the selection.
HOPELESS_SHARE = 0.5
#: Hit rate cut-off and history length of the time-order probe.
_PROBE_K = 20
_PROBE_MAX_HISTORY = 10


@dataclass
class ValidationSplit:
    """``fit_data`` to fit on, held-out events ``val`` to choose on; both share the full data's id maps."""

    fit_data: InteractionData
    val: pl.DataFrame
    relevant: dict[int, set[int]]  # user index -> held-out item indices (known users and items only)
    users: np.ndarray  # int64 [<= MAX_USERS]: the users scored, sorted
    by: SplitBy
    reason: str
    fraction: float
    #: what an iterative candidate stops early against: the best validation NDCG@10 of the earlier
    #: waves of candidates (``training.selection.candidate_waves``); 0 = none yet
    bar: float = 0.0
    _seen: sp.csr_matrix | None = field(default=None, repr=False)

    @classmethod
    def of(cls, data: InteractionData, fraction: float = 0.1, by: SplitBy | Literal["auto"] = "auto",
           seed: int = 0) -> ValidationSplit:
        """Hold out ``fraction`` of each user's events of ``data`` (users with 2+ events).

        ``by="auto"`` splits by time when ``time_signal`` finds that time order carries signal,
        else at random; ``"time"`` and ``"random"`` force one. ``"last"`` holds out each user's
        last event by time instead (leave-last-out, the next-item task; ``fraction`` unused).
        """
        if by not in ("auto", "time", "random", "last"):
            raise UsageError(f"validation split by {by!r}: use auto, time, random or last")
        if by == "auto":
            has_time, reason = time_signal(data.interactions, seed=seed)
            chosen: SplitBy = "time" if has_time else "random"
        else:
            chosen, reason = by, f"{by} split requested"
        if chosen == "last":
            fit_part, val_part = leave_last_out(data.interactions)
            reason = "leave-last-out: each user's last event by time (next-item task)"
        elif chosen == "time":
            fit_part, val_part = temporal_split(data.interactions, test_fraction=fraction)
        else:
            fit_part, val_part = random_split(data.interactions, test_fraction=fraction, seed=seed)
        fit_data = InteractionData.build(fit_part, data.items, users=data.users)
        relevant = _relevant(val_part, fit_data)
        users = np.fromiter(relevant.keys(), dtype=np.int64)
        if len(users) > MAX_USERS:
            users = np.random.default_rng(seed).choice(users, MAX_USERS, replace=False)
        logger.info("validation: %s split, %d held-out events of %d users (%s)", chosen, val_part.height,
                    len(relevant), reason)
        return cls(fit_data, val_part, relevant, np.sort(users), chosen, reason, fraction)

    @property
    def empty(self) -> bool:
        """True when no user has a held-out event (every user has fewer than 2 events)."""
        return not self.relevant

    @property
    def seen(self) -> sp.csr_matrix:
        """Binary csr ``[n_users, n_items]`` of ``fit_data``: excluded from every validation list."""
        if self._seen is None:
            self._seen = self.fit_data.seen()
        return self._seen

    # ------------------------------------------------------------------ scoring
    def ndcg_per_user(self, top_items: np.ndarray, k: int = 10, users: np.ndarray | None = None) -> np.ndarray:
        """NDCG@k float64 ``[n]`` of ranked lists int64 ``[n, >= k]``, one row per user of ``users``
        (default: ``self.users``; each must have held-out events)."""
        users = self.users if users is None else users
        return ndcg_per_user([row[row >= 0].tolist() for row in top_items],
                             [self.relevant[int(u)] for u in users], k)

    def score_model(self, model: Recommender, k: int = 10) -> float:
        """NDCG@k of ``model`` (fitted on ``fit_data``): its own ``recommend`` path, seen items excluded."""
        rows = []
        for s in range(0, len(self.users), 512):
            items, _ = model.recommend(self.users[s : s + 512], k, exclude=self.seen)
            rows.append(items)
        return float(self.ndcg_per_user(np.concatenate(rows), k).mean()) if rows else 0.0

    def score_function(self, scores: Callable[[np.ndarray], np.ndarray], k: int = 10) -> float:
        """NDCG@k of ``scores(users int64 [n]) -> float [n, n_items]``, seen items excluded (mid-fit models)."""
        from tlrec.training.models.base import masked_top_k  # here: models.base imports this module

        rows = []
        for s in range(0, len(self.users), 512):
            chunk = self.users[s : s + 512]
            matrix = np.array(scores(chunk), dtype=np.float32, copy=True)
            rows.append(masked_top_k(matrix, k, self.seen[chunk], None)[0])
        return float(self.ndcg_per_user(np.concatenate(rows), k).mean()) if rows else 0.0

    def hopeless(self, score: float) -> bool:
        """True when ``score`` is below ``HOPELESS_SHARE`` of ``bar``."""
        return self.bar > 0 and score < HOPELESS_SHARE * self.bar

    def to_dict(self) -> dict[str, Any]:
        """What the manifest records about the split."""
        return {"by": self.by, "reason": self.reason, "fraction": self.fraction,
                "held_out_events": self.val.height, "users": len(self.relevant), "users_scored": len(self.users)}


def _relevant(val: pl.DataFrame, fit_data: InteractionData) -> dict[int, set[int]]:
    users = fit_data.users.to_internal(val[Columns.USER], missing="ignore")
    items = fit_data.items.to_internal(val[Columns.ITEM], missing="ignore")
    rel: dict[int, set[int]] = {}
    for u, i in zip(users.tolist(), items.tolist()):
        if u >= 0 and i >= 0:
            rel.setdefault(u, set()).add(i)
    return rel


def time_signal(interactions: pl.DataFrame, seed: int = 0, max_users: int = MAX_USERS) -> tuple[bool, str]:
    """Whether the order of each user's events carries signal, and why (see the module doc)."""
    C = Columns
    df = interactions.select(C.USER, C.ITEM, C.TIMESTAMP).with_row_index("_row")
    df = df.filter(pl.len().over(C.USER) >= 4)
    if df.height == 0:
        return False, "no user has 4+ events: cannot tell whether time order means anything"
    own = df.filter(pl.len().over(C.USER, C.TIMESTAMP) == 1).height / df.height
    if own < 0.5:
        return False, f"timestamps tie within users ({1 - own:.0%} of events share theirs): no order to follow"
    users = df[C.USER].unique().sort()
    if len(users) > max_users:
        users = users.sample(max_users, seed=seed).sort()
        df = df.filter(pl.col(C.USER).is_in(users.implode()))
    df = df.sort(C.USER, C.TIMESTAMP, "_row").with_columns(
        pl.int_range(pl.len()).over(C.USER).alias("_pos"), pl.len().over(C.USER).alias("_n"))
    n_target = (pl.col("_n") * 0.2).ceil().cast(pl.Int64)
    df = df.with_columns((pl.col("_pos") >= pl.col("_n") - n_target).alias("_target"),
                         pl.min_horizontal(((pl.col("_n") - n_target) // 2), _PROBE_MAX_HISTORY).alias("_m"))
    items = {v: i for i, v in enumerate(df[C.ITEM].unique().sort().to_list())}
    user_ids = {v: i for i, v in enumerate(users.to_list())}
    u = np.array([user_ids[v] for v in df[C.USER].to_list()], np.int64)
    i = np.array([items[v] for v in df[C.ITEM].to_list()], np.int64)
    pos, n, m = df["_pos"].to_numpy(), df["_n"].to_numpy(), df["_m"].to_numpy()
    target = df["_target"].to_numpy()
    history_end = n - np.ceil(n * 0.2).astype(np.int64)
    shape = (len(user_ids), len(items))
    hist = sp.csr_matrix((np.ones(int((~target).sum()), np.float32), (u[~target], i[~target])), shape=shape)
    hist.data[:] = 1.0
    old = sp.csr_matrix((np.ones(int((pos < m).sum()), np.float32), (u[pos < m], i[pos < m])), shape=shape)
    recent_mask = (pos >= history_end - m) & ~target
    recent = sp.csr_matrix((np.ones(int(recent_mask.sum()), np.float32), (u[recent_mask], i[recent_mask])),
                           shape=shape)
    targets = sp.csr_matrix((np.ones(int(target.sum()), np.float32), (u[target], i[target])), shape=shape)
    hits_recent = _probe_hits(recent, hist, targets)
    hits_old = _probe_hits(old, hist, targets)
    diff, lo, hi = bootstrap_diff(hits_recent, hits_old, seed=seed)
    figures = (f"hit rate@{_PROBE_K} of the last 20% from the most recent items {hits_recent.mean():.3f} vs the "
               f"oldest {hits_old.mean():.3f}, difference {diff:+.3f} [{lo:+.3f}, {hi:+.3f}] over {len(user_ids)} users")
    if lo > 0:
        return True, f"time order carries signal: {figures}"
    return False, f"time order shows no signal: {figures}"


def _probe_hits(queries: sp.csr_matrix, hist: sp.csr_matrix, targets: sp.csr_matrix) -> np.ndarray:
    """Per user: share of their targets in the top ``_PROBE_K`` of co-occurrence scores from ``queries``.

    Scores are ``queries @ hist.T @ hist`` (how often an item co-occurs with the query items in
    the users' earlier events), items in the user's own earlier events excluded.
    """
    n_users = queries.shape[0]
    out = np.zeros(n_users, np.float64)
    for s in range(0, n_users, 256):
        rows = slice(s, min(s + 256, n_users))
        scores = np.asarray(((queries[rows] @ hist.T) @ hist).todense(), np.float32)
        own = hist[rows].tocoo()
        scores[own.row, own.col] = -np.inf
        k = min(_PROBE_K, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        t = targets[rows]
        hit = np.asarray(t[np.arange(t.shape[0])[:, None], top].sum(axis=1)).ravel()
        out[rows] = hit / np.maximum(np.diff(t.indptr), 1)
    return out

