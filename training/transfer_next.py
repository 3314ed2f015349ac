"""Measured transfer for next-item prediction: does the pre-trained content help the sequence model?

The next-item twin of ``training.transfer`` (same variants, gains and verdicts): one
``SASRecModel`` per content variant (``none`` = learned ids only, ``all``, ``all - <m>``), each
scored per user on three groups:

* **warm** — leave-last-out: each user's last event is the target, NDCG@10 over all items
  (training items excluded), the model reading the user's whole training sequence;
* **short histories** — the same users and targets, the model reading only the newest
  ``SHORT_HISTORY`` training events (a new user after a few clicks);
* **new-item targets** — a seeded share of items held out of training with all their events;
  a user's target is their first event on one of them, read from their training events
  before it, ranked among the held-out items (HR@10: only content can rank them).

Gains are paired differences with a bootstrap 95% interval over users (``training.transfer``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from tlrec.embeddings.vectors import ItemVectors
from tlrec.errors import UsageError
from tlrec.tables import Columns
from tlrec.training.id_map import IdMap
from tlrec.training.interaction_data import InteractionData
from tlrec.training.models import Recommender, build_model
from tlrec.training.sequences import Sequences
from tlrec.training.splits import cold_item_split, leave_last_out
from tlrec.training.transfer import NONE, GroupResult, TransferReport, _gains, content_for, variants
from tlrec.training.validation import ValidationSplit

logger = logging.getLogger(__name__)

__all__ = ["SHORT_HISTORY", "next_item_transfer_report"]

#: Events a "short history" keeps (the newest ones).
SHORT_HISTORY = 5
GROUPS = {"warm": "ndcg@10", f"short histories (<= {SHORT_HISTORY} events)": "ndcg@10",
          "new-item targets": "hit_rate@10"}


def _ndcg_of_rank(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """Per-user NDCG@k of one target at 1-based ``ranks`` (0 = not found)."""
    return np.where((ranks > 0) & (ranks <= k), 1.0 / np.log2(ranks + 1.0), 0.0)


def _target_ranks(model: Recommender, seqs: Sequences, targets: np.ndarray, candidates: np.ndarray,
                  exclude: Sequences | None) -> np.ndarray:
    """1-based rank of each target among ``candidates`` (int64 ``[m]``) after each sequence; 0 if excluded."""
    queries = model.sequence_vectors(seqs)
    ranks = np.zeros(len(targets), np.int64)
    for s in range(0, len(targets), 256):
        rows = np.arange(s, min(s + 256, len(targets)))
        scores = model.rank_vectors(queries[rows], np.broadcast_to(candidates, (len(rows), len(candidates))))
        if exclude is not None:
            seen = exclude.take(rows).matrix(model.n_items)[:, candidates].tocoo()
            scores[seen.row, seen.col] = -np.inf
        pos = np.searchsorted(candidates, targets[rows])
        target_scores = scores[np.arange(len(rows)), pos]
        ranks[rows] = np.where(np.isfinite(target_scores), (scores > target_scores[:, None]).sum(1) + 1, 0)
    return ranks


def next_item_transfer_report(catalog: pl.DataFrame, interactions: pl.DataFrame, vectors: ItemVectors,
                              config: dict[str, Any] | None = None, cold_fraction: float = 0.2, seed: int = 0,
                              modalities: Sequence[str] | None = None) -> TransferReport:
    """Train one sequence model per content variant and measure each group's gain (see the module doc)."""
    mods = list(modalities) if modalities is not None else list(vectors.blocks)
    if unknown := [m for m in mods if m not in vectors.blocks]:
        raise UsageError(f"modalities {unknown} not in the vectors file (it has {sorted(vectors.blocks)})")
    report = TransferReport(mods, groups=dict(GROUPS))
    cfg = {"progress": False, "seed": seed, **(config or {})}
    items = IdMap(catalog[Columns.ITEM].to_list())
    short, newg = list(GROUPS)[1:]

    train, test = leave_last_out(interactions)
    data = InteractionData.build(train, items)
    users = data.users.to_internal(test[Columns.USER], missing="ignore")
    targets = data.items.to_internal(test[Columns.ITEM], missing="ignore")
    keep = (users >= 0) & (targets >= 0)
    users, targets = users[keep], targets[keep]
    names = [data.users.external[int(u)] for u in users]
    split = ValidationSplit.of(data, by="last")
    report.notes.append(f"warm: {len(users)} users, each user's last event the target; short histories: the same "
                        f"users reading only their newest {SHORT_HISTORY} training events")

    cold_train, cold_test, cold_items = cold_item_split(interactions, fraction=cold_fraction, seed=seed)
    cold_data = InteractionData.build(cold_train, items)
    cold_cands = np.sort(items.to_internal(cold_items, missing="ignore"))
    firsts = cold_test.sort(Columns.TIMESTAMP).unique(Columns.USER, keep="first", maintain_order=True)
    before = (cold_train.join(firsts.select(Columns.USER, pl.col(Columns.TIMESTAMP).alias("_cut")), on=Columns.USER)
              .filter(pl.col(Columns.TIMESTAMP) < pl.col("_cut")).sort(Columns.USER, Columns.TIMESTAMP))
    histories = {u: cold_data.items.to_internal(g[Columns.ITEM]) for (u,), g in before.group_by(Columns.USER)}
    cold_users = sorted(u for u in firsts[Columns.USER].to_list() if u in histories)
    target_of = dict(zip(firsts[Columns.USER].to_list(), firsts[Columns.ITEM].to_list()))
    cold_targets = items.to_internal([target_of[u] for u in cold_users])
    cold_split = ValidationSplit.of(cold_data, by="last")
    report.notes.append(f"new-item targets: {len(cold_items)} items held out with all their events; "
                        f"{len(cold_users)} users' first event on one of them, ranked among them")

    all_items = np.arange(data.n_items)
    for name, used in variants(mods).items():
        content = content_for(vectors, items, used)
        logger.info("next-item transfer: variant %r (%s)", name, ", ".join(used) or "no content")
        model = build_model("sasrec", cfg).fit(data, content, validation=split)
        assert model.sequences is not None  # type: ignore[attr-defined]
        full = model.sequences.take(users)  # type: ignore[attr-defined]
        cut = Sequences.from_lists([full.row(r)[-SHORT_HISTORY:] for r in range(len(full))])
        warm_ranks = _target_ranks(model, full, targets, all_items, full)
        short_ranks = _target_ranks(model, cut, targets, all_items, full)
        report.results[name] = {"warm": GroupResult("ndcg@10", names, _ndcg_of_rank(warm_ranks)),
                                short: GroupResult("ndcg@10", names, _ndcg_of_rank(short_ranks))}
        if used:
            cold_model = build_model("sasrec", cfg).fit(cold_data, content, validation=cold_split)
            seqs = Sequences.from_lists([histories[u] for u in cold_users])
            ranks = _target_ranks(cold_model, seqs, cold_targets, cold_cands, None)
            hits = ((ranks > 0) & (ranks <= 10)).astype(np.float64)
        else:  # no content: held-out items are unrankable, chance level
            hits = np.full(len(cold_users), min(10, len(cold_cands)) / max(len(cold_cands), 1))
        report.results[name][newg] = GroupResult("hit_rate@10", cold_users, hits)
    _gains(report, mods, seed)
    if NONE in report.results:
        logger.info("next-item transfer: %s", {n: {g: round(r.mean, 4) for g, r in res.items()}
                                               for n, res in report.results.items()})
    return report
