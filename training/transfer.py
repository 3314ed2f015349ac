"""Measured transfer: does each pre-trained modality help (positive) or hurt (negative)?

One NCF is trained per *variant* of the content it sees, on the same splits:

* ``none``            no pre-trained features (learned ids only): the reference;
* ``all``             every modality, fused;
* ``all - <m>``       every modality but ``m`` (only when there are 2 or more).

Each variant is scored on three groups, each a question a practitioner asks:

* **warm**   every test user of a per-user temporal split (last ``test_fraction`` of
  each user's events), NDCG@10 over all items, seen items excluded;
* **sparse** the least active quarter of those users (by training events), the
  users transfer should help most;
* **cold items** a seeded share of items held out with all their events, ranked
  among themselves: Recall@20 (only content can rank them).

Gains are paired differences of per-user metrics with a bootstrap 95% interval
(users resampled, 1,000 draws, seeded). A modality is named as **negative
transfer** for a group when removing it raises the metric with an interval
entirely above zero; the pre-trained features as a whole transfer negatively when
``all`` is below ``none`` with an interval entirely below zero. Differences whose
interval covers zero are reported as such, never as wins.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from pydantic import ValidationError

from tlrec.embeddings.fusion import fuse
from tlrec.embeddings.vectors import ItemVectors
from tlrec.errors import ConfigError, UsageError
from tlrec.ray_cluster import TaskRunner, in_process
from tlrec.tables import Columns
from tlrec.training.id_map import IdMap
from tlrec.training.interaction_data import InteractionData
from tlrec.training.metrics import bootstrap_diff, ndcg_at_k, recall_at_k
from tlrec.training.models import NCFConfig, NCFModel
from tlrec.training.splits import cold_item_split, temporal_split

logger = logging.getLogger(__name__)

NONE, ALL = "none", "all"
METRIC_OF_GROUP = {"warm": "ndcg@10", "sparse": "ndcg@10", "cold items": "recall@20"}
SPARSE_QUANTILE = 0.25


@dataclass
class GroupResult:
    """Per-user metric values of one variant on one group (users in a fixed order)."""

    metric: str
    users: list[str]
    values: np.ndarray  # float64 [n_users]

    @property
    def mean(self) -> float:
        return float(self.values.mean()) if len(self.values) else 0.0


@dataclass
class Gain:
    """``variant`` minus ``reference`` on ``group``: mean paired difference and its 95% interval."""

    variant: str
    reference: str
    group: str
    metric: str
    diff: float
    ci_low: float
    ci_high: float
    relative: float  # diff / reference mean (nan if the reference is 0)

    @property
    def verdict(self) -> str:
        if self.ci_low > 0:
            return "positive"
        if self.ci_high < 0:
            return "negative"
        return "no clear difference"


@dataclass
class TransferReport:
    """Per-variant group results, the gains and the modalities named as negative transfer."""

    modalities: list[str]
    #: group -> the metric it is scored by, in report order
    groups: dict[str, str] = field(default_factory=lambda: dict(METRIC_OF_GROUP))
    results: dict[str, dict[str, GroupResult]] = field(default_factory=dict)
    gains: list[Gain] = field(default_factory=list)
    negative: dict[str, list[str]] = field(default_factory=dict)  # modality -> groups it hurts
    notes: list[str] = field(default_factory=list)

    def keep_modalities(self, groups: Sequence[str] = ("warm", "cold items")) -> list[str]:
        """Modalities not named as negative transfer on any of ``groups``."""
        return [m for m in self.modalities if not set(self.negative.get(m, [])) & set(groups)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "modalities": self.modalities,
            "means": {v: {g: {"metric": r.metric, "mean": r.mean, "users": len(r.users)} for g, r in res.items()}
                      for v, res in self.results.items()},
            "gains": [{**g.__dict__, "verdict": g.verdict} for g in self.gains],
            "negative_transfer": self.negative,
            "keep": self.keep_modalities(),
            "notes": self.notes,
        }


@dataclass
class HeldOut:
    """A split to measure variants on: ``data`` to fit on, each test user's held-out items."""

    data: InteractionData
    relevant: dict[str, set[int]]  # user id -> held-out item indices
    users: list[str]  # the test users known to ``data``, sorted
    candidates: np.ndarray | None  # int64 item indices ranked (None: every item)


def variants(modalities: Sequence[str]) -> dict[str, list[str]]:
    """Variant name -> the modalities it uses."""
    out = {NONE: [], ALL: list(modalities)}
    if len(modalities) > 1:
        out.update({f"all - {m}": [x for x in modalities if x != m] for m in modalities})
    return out


def content_for(vectors: ItemVectors, items: IdMap, modalities: Sequence[str]) -> np.ndarray | None:
    """Fused content float32 ``[len(items), d]`` of the chosen modalities (None for no modality)."""
    if not modalities:
        return None
    fused = fuse({m: vectors.blocks[m] for m in modalities})
    out = np.zeros((len(items), fused.shape[1]), np.float32)
    idx = items.to_internal(vectors.item_ids, missing="ignore")
    ok = idx >= 0
    out[idx[ok]] = fused[ok]
    return out


def _per_user(metric: Callable[..., float], recs: dict[str, list[int]], rel: dict[str, set[int]],
              users: list[str], k: int) -> np.ndarray:
    return np.array([metric([recs.get(u, [])], [rel[u]], k) for u in users], np.float64)


def _relevant(test: pl.DataFrame, data: InteractionData) -> dict[str, set[int]]:
    rel: dict[str, set[int]] = {}
    idx = data.items.to_internal(test[Columns.ITEM], missing="ignore")
    for u, i in zip(test[Columns.USER].to_list(), idx.tolist()):
        if i >= 0:
            rel.setdefault(u, set()).add(i)
    return rel


def _recommend(model: NCFModel, data: InteractionData, users: list[str], k: int,
               candidates: np.ndarray | None, exclude_seen: bool) -> dict[str, list[int]]:
    idx = data.users.to_internal(users, missing="ignore")
    known = [(u, i) for u, i in zip(users, idx.tolist()) if i >= 0]
    seen = data.seen() if exclude_seen else None
    out: dict[str, list[int]] = {}
    for s in range(0, len(known), 512):
        chunk = known[s : s + 512]
        items, _ = model.recommend(np.array([i for _, i in chunk]), k, exclude=seen, candidates=candidates)
        out.update({u: row[row >= 0].tolist() for (u, _), row in zip(chunk, items)})
    return out


def transfer_report(
    catalog: pl.DataFrame,
    interactions: pl.DataFrame,
    vectors: ItemVectors,
    config: dict[str, Any] | None = None,
    test_fraction: float = 0.2,
    cold_fraction: float = 0.2,
    seed: int = 0,
    modalities: Sequence[str] | None = None,
    run: TaskRunner = in_process,
) -> TransferReport:
    """Train one NCF per content variant and measure each group's gain (see the module doc).

    ``run``: how the variants are measured (``tlrec.ray_cluster``: here one after another, or as
    parallel Ray tasks, with the same result)."""
    mods = list(modalities) if modalities is not None else list(vectors.blocks)
    unknown = [m for m in mods if m not in vectors.blocks]
    if unknown:
        raise UsageError(f"modalities {unknown} not in the vectors file (it has {sorted(vectors.blocks)})")
    report = TransferReport(mods)
    items = IdMap(catalog[Columns.ITEM].to_list())
    try:
        cfg = NCFConfig(**{"progress": False, "seed": seed, **(config or {})})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "config"
        raise ConfigError(f"ncf config: {where}: {first['msg']}") from None

    warm_train, warm_test = temporal_split(interactions, test_fraction=test_fraction)
    warm_data = InteractionData.build(warm_train, items)
    warm_rel = _relevant(warm_test, warm_data)
    warm_users = sorted(u for u in warm_rel if u in warm_data.users)
    activity = dict(warm_train.group_by(Columns.USER).len().iter_rows())
    cut = float(np.quantile([activity[u] for u in warm_users], SPARSE_QUANTILE)) if warm_users else 0.0
    sparse_users = [u for u in warm_users if activity[u] <= cut]
    report.notes.append(f"warm: {len(warm_users)} users (last {test_fraction:.0%} of each user's events); "
                        f"sparse: the {len(sparse_users)} least active (<= {cut:g} training events)")

    cold_train, cold_test, cold_items = cold_item_split(interactions, fraction=cold_fraction, seed=seed)
    cold_data = InteractionData.build(cold_train, items)
    cold_rel = _relevant(cold_test, cold_data)
    cold = HeldOut(cold_data, cold_rel, sorted(u for u in cold_rel if u in cold_data.users),
                   np.sort(items.to_internal(cold_items, missing="ignore")))
    report.notes.append(f"cold items: {len(cold_items)} held out with all their events, ranked among "
                        f"themselves for {len(cold.users)} users")

    warm = HeldOut(warm_data, warm_rel, warm_users, None)
    named = variants(mods)
    calls = [(cfg, content_for(vectors, items, used), warm, sparse_users, cold) for used in named.values()]
    logger.info("transfer: %d variants (%s), a warm and a cold-item NCF fit each", len(calls), ", ".join(named))
    report.results = dict(zip(named, run(measure_variant, calls)))
    _gains(report, mods, seed)
    return report


def measure_variant(cfg: NCFConfig, content: np.ndarray | None, warm: HeldOut, sparse_users: list[str],
                    cold: HeldOut) -> dict[str, GroupResult]:
    """One variant's results: an NCF fitted on ``warm.data`` with ``content`` (float32 ``[n_items, d]``, None:
    no pre-trained features) scored on the warm and sparse users, and one fitted on ``cold.data`` ranking
    the held-out items (chance level without content: they are unrankable)."""
    model = NCFModel(cfg).fit(warm.data, content)
    ndcg = _per_user(ndcg_at_k, _recommend(model, warm.data, warm.users, 10, None, True), warm.relevant,
                     warm.users, 10)
    pos = {u: j for j, u in enumerate(warm.users)}
    if content is not None:
        model = NCFModel(cfg).fit(cold.data, content)
        recs = _recommend(model, cold.data, cold.users, 20, cold.candidates, False)
        cold_values = _per_user(recall_at_k, recs, cold.relevant, cold.users, 20)
    else:
        assert cold.candidates is not None
        cold_values = _chance_recall(cold.relevant, cold.users, len(cold.candidates), 20)
    return {"warm": GroupResult("ndcg@10", warm.users, ndcg),
            "sparse": GroupResult("ndcg@10", sparse_users, ndcg[[pos[u] for u in sparse_users]]),
            "cold items": GroupResult("recall@20", cold.users, cold_values)}


def _chance_recall(rel: dict[str, set[int]], users: list[str], n: int, k: int) -> np.ndarray:
    """Expected Recall@k of a random ranking of ``n`` candidates: ``min(k, n) / n`` hits share."""
    share = min(k, n) / max(n, 1)
    return np.array([len(rel[u]) * share / min(len(rel[u]), k) for u in users], np.float64)


def _gains(report: TransferReport, mods: list[str], seed: int) -> None:
    res = report.results
    for group in report.groups:
        ref = res[NONE][group]
        for name in res:
            if name == NONE:
                continue
            cur = res[name][group]
            diff, lo, hi = bootstrap_diff(cur.values, ref.values, seed)
            report.gains.append(Gain(name, NONE, group, cur.metric, diff, lo, hi,
                                     diff / ref.mean if ref.mean else math.nan))
        if len(mods) > 1:
            for m in mods:
                without = res[f"all - {m}"][group]
                diff, lo, hi = bootstrap_diff(res[ALL][group].values, without.values, seed)
                gain = Gain(f"+{m}", f"all - {m}", group, without.metric, diff, lo, hi,
                            diff / without.mean if without.mean else math.nan)
                report.gains.append(gain)
                if gain.verdict == "negative":
                    report.negative.setdefault(m, []).append(group)
        else:
            whole = next(g for g in report.gains if g.variant == ALL and g.group == group)
            if whole.verdict == "negative":
                for m in mods:
                    report.negative.setdefault(m, []).append(group)


def render_markdown(report: TransferReport, title: str = "Transfer report") -> str:
    """The report as Markdown: means per variant and group, then gains with intervals and verdicts."""
    lines = [f"# {title}", "", *[f"- {n}" for n in report.notes], ""]
    groups = report.groups
    lines += ["## Means", "", "| variant | " + " | ".join(f"{g} ({m})" for g, m in groups.items()) + " |",
              "|---" * (len(groups) + 1) + "|"]
    for name, res in report.results.items():
        lines.append(f"| {name} | " + " | ".join(f"{res[g].mean:.4f}" for g in groups) + " |")
    lines += ["", "## Gains (paired, bootstrap 95% interval over users)", "",
              "| variant | vs | group | metric | diff | 95% interval | relative | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    for g in report.gains:
        rel = "" if math.isnan(g.relative) else f"{g.relative:+.1%}"
        lines.append(f"| {g.variant} | {g.reference} | {g.group} | {g.metric} | {g.diff:+.4f} | "
                     f"[{g.ci_low:+.4f}, {g.ci_high:+.4f}] | {rel} | {g.verdict} |")
    lines += [""]
    if report.negative:
        lines += ["**Negative transfer:** " + "; ".join(f"{m} hurts {', '.join(gs)}"
                                                        for m, gs in report.negative.items()), ""]
    else:
        lines += ["No modality transfers negatively (no interval entirely on the wrong side of zero).", ""]
    lines += [f"`tlrec train --modalities auto` keeps: {', '.join(report.keep_modalities()) or 'none'}", ""]
    return "\n".join(lines)


def select_modalities(vectors: ItemVectors, modalities: Sequence[str]) -> ItemVectors | None:
    """``vectors`` restricted to ``modalities`` (fused again); None when none is kept."""
    unknown = [m for m in modalities if m not in vectors.blocks]
    if unknown:
        raise UsageError(f"modalities {unknown} not in the vectors file (it has {sorted(vectors.blocks)})")
    if not modalities:
        return None
    blocks = {m: vectors.blocks[m] for m in modalities}
    manifest = {**vectors.manifest, "modalities": list(modalities)}
    return ItemVectors(vectors.item_ids, fuse(blocks), blocks, manifest)


def plot_gains(report: TransferReport, path: Any) -> None:
    """PNG: each variant's gain over ``none`` per group, with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gains = [g for g in report.gains if g.reference == NONE]
    names = list(dict.fromkeys(g.variant for g in gains))
    groups = report.groups
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4))
    for ax, group in zip(np.atleast_1d(axes), groups):
        rows = [next(g for g in gains if g.variant == n and g.group == group) for n in names]
        diffs = [g.diff for g in rows]
        err = [[g.diff - g.ci_low for g in rows], [g.ci_high - g.diff for g in rows]]
        colors = ["tab:green" if g.verdict == "positive" else "tab:red" if g.verdict == "negative" else "tab:gray"
                  for g in rows]
        ax.bar(names, diffs, yerr=err, color=colors, capsize=4)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(f"{group}: {groups[group]} gain vs none", fontsize=9)
        ax.tick_params(axis="x", labelsize=8, rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
