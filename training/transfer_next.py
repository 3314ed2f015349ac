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
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from tlrec.embeddings.vectors import ItemVectors
from tlrec.errors import UsageError
from tlrec.ray_cluster import TaskRunner, in_process
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


@dataclass
class NextItemTargets:
    """What every variant is measured on: the warm split and its targets, the new-item split and its."""

    data: InteractionData  # each user's events but the last
    split: ValidationSplit  # ``data``'s leave-last-out validation split
    users: np.ndarray  # int64 [n] user indices of ``data`` with a known target
    targets: np.ndarray  # int64 [n] their last event's item
    names: list[str]  # their external ids
    cold_data: InteractionData  # events without the held-out items
    cold_split: ValidationSplit
    cold_users: list[str]  # users whose first held-out-item event has training events before it
    cold_histories: Sequences  # those events, one row per cold user
    cold_targets: np.ndarray  # int64 [m] item of that first event
    cold_candidates: np.ndarray  # int64 sorted held-out item indices


def measure_sequence_variant(cfg: dict[str, Any], content: np.ndarray | None,
                             on: NextItemTargets) -> dict[str, GroupResult]:
    """One variant's results: a sequence model fitted with ``content`` (float32 ``[n_items, d]``, None: no
    pre-trained features) on ``on.data`` (warm, short histories) and one on ``on.cold_data`` ranking the
    held-out items (chance level without content)."""
    short, new_items = list(GROUPS)[1:]
    model = build_model("sasrec", cfg).fit(on.data, content, validation=on.split)
    assert model.sequences is not None  # type: ignore[attr-defined]
    full = model.sequences.take(on.users)  # type: ignore[attr-defined]
    cut = Sequences.from_lists([full.row(r)[-SHORT_HISTORY:] for r in range(len(full))])
    all_items = np.arange(on.data.n_items)
    results = {"warm": GroupResult("ndcg@10", on.names, _ndcg_of_rank(_target_ranks(model, full, on.targets,
                                                                                    all_items, full))),
               short: GroupResult("ndcg@10", on.names, _ndcg_of_rank(_target_ranks(model, cut, on.targets,
                                                                                   all_items, full)))}
    n_cands = len(on.cold_candidates)
    if content is not None:
        cold_model = build_model("sasrec", cfg).fit(on.cold_data, content, validation=on.cold_split)
        ranks = _target_ranks(cold_model, on.cold_histories, on.cold_targets, on.cold_candidates, None)
        hits = ((ranks > 0) & (ranks <= 10)).astype(np.float64)
    else:  # no content: held-out items are unrankable, chance level
        hits = np.full(len(on.cold_users), min(10, n_cands) / max(n_cands, 1))
    results[new_items] = GroupResult("hit_rate@10", on.cold_users, hits)
    return results


def next_item_transfer_report(catalog: pl.DataFrame, interactions: pl.DataFrame, vectors: ItemVectors,
                              config: dict[str, Any] | None = None, cold_fraction: float = 0.2, seed: int = 0,
                              modalities: Sequence[str] | None = None, run: TaskRunner = in_process) -> TransferReport:
    """Train one sequence model per content variant and measure each group's gain (see the module doc).

    ``run``: how the variants are measured (``tlrec.ray_cluster``: here one after another, or as
    parallel Ray tasks, with the same result)."""
    mods = list(modalities) if modalities is not None else list(vectors.blocks)
    if unknown := [m for m in mods if m not in vectors.blocks]:
        raise UsageError(f"modalities {unknown} not in the vectors file (it has {sorted(vectors.blocks)})")
    report = TransferReport(mods, groups=dict(GROUPS))
    cfg = {"progress": False, "seed": seed, **(config or {})}
    items = IdMap(catalog[Columns.ITEM].to_list())

    train, test = leave_last_out(interactions)
    data = InteractionData.build(train, items)
    users = data.users.to_internal(test[Columns.USER], missing="ignore")
    targets = data.items.to_internal(test[Columns.ITEM], missing="ignore")
    keep = (users >= 0) & (targets >= 0)
    users, targets = users[keep], targets[keep]
    names = [data.users.external[int(u)] for u in users]
    report.notes.append(f"warm: {len(users)} users, each user's last event the target; short histories: the same "
                        f"users reading only their newest {SHORT_HISTORY} training events")

    cold_train, cold_test, cold_items = cold_item_split(interactions, fraction=cold_fraction, seed=seed)
    cold_data = InteractionData.build(cold_train, items)
    firsts = cold_test.sort(Columns.TIMESTAMP).unique(Columns.USER, keep="first", maintain_order=True)
    before = (cold_train.join(firsts.select(Columns.USER, pl.col(Columns.TIMESTAMP).alias("_cut")), on=Columns.USER)
              .filter(pl.col(Columns.TIMESTAMP) < pl.col("_cut")).sort(Columns.USER, Columns.TIMESTAMP))
    histories = {u: cold_data.items.to_internal(g[Columns.ITEM]) for (u,), g in before.group_by(Columns.USER)}
    cold_users = sorted(u for u in firsts[Columns.USER].to_list() if u in histories)
    target_of = dict(zip(firsts[Columns.USER].to_list(), firsts[Columns.ITEM].to_list()))
    report.notes.append(f"new-item targets: {len(cold_items)} items held out with all their events; "
                        f"{len(cold_users)} users' first event on one of them, ranked among them")

    targets_of = NextItemTargets(
        data, ValidationSplit.of(data, by="last"), users, targets, names,
        cold_data, ValidationSplit.of(cold_data, by="last"), cold_users,
        Sequences.from_lists([histories[u] for u in cold_users]), items.to_internal([target_of[u] for u in cold_users]),
        np.sort(items.to_internal(cold_items, missing="ignore")))
    named = variants(mods)
    logger.info("next-item transfer: %d variants (%s)", len(named), ", ".join(named))
    calls = [(cfg, content_for(vectors, items, used), targets_of) for used in named.values()]
    report.results = dict(zip(named, run(measure_sequence_variant, calls)))
    _gains(report, mods, seed)
    if NONE in report.results:
        logger.info("next-item transfer: %s", {n: {g: round(r.mean, 4) for g, r in res.items()}
                                               for n, res in report.results.items()})
    return report
