"""Offline evaluation beyond the core metrics: novelty, user-activity segments, a report.

* :func:`novelty_at_k`: mean self-information ``-log2(share of training users who
  interacted with the item)`` of the recommended items (higher = less obvious items).
* :func:`activity_segments`: users binned by how many training interactions they
  have, so a model's strength on sparse users is visible on its own.
* :func:`evaluate_segments`: every metric of ``evaluate_rankings`` plus novelty,
  overall and per segment.
* :func:`write_report`: Markdown with a table per model and PNG bar charts.

The segment edges are fixed counts (not quantiles of one dataset), so reports
from different datasets read the same way: ``cold`` (no training interaction),
``sparse`` (1-9), ``regular`` (10-99), ``heavy`` (100+).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tlrec.files import write_json_atomic
from tlrec.tables import Columns
from tlrec.training.metrics import evaluate_rankings

logger = logging.getLogger(__name__)

SEGMENTS: tuple[tuple[str, int, float], ...] = (
    ("cold", 0, 0),
    ("sparse", 1, 9),
    ("regular", 10, 99),
    ("heavy", 100, math.inf),
)


def item_shares(train: pl.DataFrame) -> dict[str, float]:
    """Item id -> share of training users who interacted with it (``(0, 1]``)."""
    n_users = max(train[Columns.USER].n_unique(), 1)
    counts = train.group_by(Columns.ITEM).agg(pl.col(Columns.USER).n_unique().alias("n"))
    return dict(zip(counts[Columns.ITEM].to_list(), (counts["n"] / n_users).to_list()))


def novelty_at_k(recommended: Mapping[str, Sequence[str]], shares: Mapping[str, float], k: int,
                 n_train_users: int) -> float:
    """Mean over lists of the mean ``-log2(share)`` of their first ``k`` items.

    An item never seen in training gets the share of one user in ``n_train_users``
    (the most novel an item can be). Lists that are empty are skipped.
    """
    floor = 1.0 / max(n_train_users, 1)
    per_list = [
        float(np.mean([-math.log2(max(shares.get(i, floor), floor)) for i in items[:k]]))
        for items in recommended.values() if len(items)
    ]
    return float(np.mean(per_list)) if per_list else 0.0


def activity_segments(train: pl.DataFrame, users: Sequence[str]) -> dict[str, str]:
    """User id -> segment name by their number of training interactions (see ``SEGMENTS``)."""
    counts = dict(train.group_by(Columns.USER).len().iter_rows())
    out = {}
    for u in users:
        n = counts.get(u, 0)
        out[u] = next(name for name, lo, hi in SEGMENTS if lo <= n <= hi)
    return out


def evaluate_segments(
    recommended: Mapping[str, Sequence[str]],
    test: pl.DataFrame,
    train: pl.DataFrame,
    ks: Sequence[int] = (10, 20),
    n_items: int | None = None,
) -> dict[str, dict[str, float]]:
    """``{"all": metrics, "<segment>": metrics, ...}``; metrics as ``evaluate_rankings`` plus ``novelty@k``.

    Segments with no test user are left out. ``train`` gives activity and item shares.
    """
    shares = item_shares(train)
    n_train_users = train[Columns.USER].n_unique()
    test_users = test[Columns.USER].unique().to_list()
    segment_of = activity_segments(train, test_users)
    out: dict[str, dict[str, float]] = {}
    groups: dict[str, list[str]] = {"all": test_users}
    for u, seg in segment_of.items():
        groups.setdefault(seg, []).append(u)
    for name in ["all", *[s for s, _, _ in SEGMENTS]]:
        members = groups.get(name)
        if not members:
            continue
        part = test.filter(pl.col(Columns.USER).is_in(members))
        recs = {u: recommended[u] for u in members if u in recommended}
        metrics = evaluate_rankings(recs, part, ks=ks, n_items=n_items)
        for k in ks:
            metrics[f"novelty@{k}"] = novelty_at_k(recs, shares, k, n_train_users)
        out[name] = metrics
    return out


def write_report(results: Mapping[str, Mapping[str, Mapping[str, float]]], out_dir: Path, title: str,
                 ks: Sequence[int] = (10, 20), notes: Sequence[str] = ()) -> Path:
    """Write ``report.md``, ``recommend.json`` (``results`` as they are) and ``segments_ndcg.png`` into
    ``out_dir``; returns the Markdown path.

    ``results``: model name -> ``evaluate_segments`` output.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    k = max(ks)
    segments = [s for s in ["all", *[s for s, _, _ in SEGMENTS]] if any(s in r for r in results.values())]
    lines = [f"# {title}", "", *notes, ""] if notes else [f"# {title}", ""]
    metrics = [f"ndcg@{min(ks)}", f"recall@{k}", f"hit_rate@{min(ks)}", f"map@{min(ks)}", f"coverage@{k}",
               f"novelty@{k}"]
    lines += ["## Overall", "", "| model | " + " | ".join(metrics) + " | users |", "|---" * (len(metrics) + 2) + "|"]
    for model, res in results.items():
        row = res.get("all", {})
        lines.append(f"| {model} | " + " | ".join(f"{row.get(m, float('nan')):.4f}" for m in metrics)
                     + f" | {int(row.get('users', 0))} |")
    metric = f"ndcg@{min(ks)}"
    lines += ["", f"## {metric} by user activity (training interactions)", "",
              "segments: " + ", ".join(f"{n} ({lo}-{'' if hi == math.inf else int(hi)})" for n, lo, hi in SEGMENTS),
              "", "| model | " + " | ".join(segments) + " |", "|---" * (len(segments) + 1) + "|"]
    for model, res in results.items():
        cells = [f"{res[s][metric]:.4f} ({int(res[s]['users'])})" if s in res else "" for s in segments]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(segments), 3.6))
    width = 0.8 / max(len(results), 1)
    for j, (model, res) in enumerate(results.items()):
        ax.bar(np.arange(len(segments)) + j * width, [res.get(s, {}).get(metric, 0.0) for s in segments], width,
               label=model)
    ax.set_xticks(np.arange(len(segments)) + width * (len(results) - 1) / 2, segments)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by user activity")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "segments_ndcg.png", dpi=110)
    plt.close(fig)
    lines += ["", "![ndcg by segment](segments_ndcg.png)", ""]
    write_json_atomic(out_dir / "recommend.json", results)
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def summary(results: Mapping[str, Any]) -> str:
    """One line per model: NDCG and Recall at the report's cut-offs (for logs)."""
    return "; ".join(f"{m}: " + ", ".join(f"{k}={v:.4f}" for k, v in r.get("all", {}).items()
                                          if k.startswith(("ndcg", "recall"))) for m, r in results.items())
