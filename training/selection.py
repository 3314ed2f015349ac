"""Choosing the served model on the user's own data: ``tlrec train --model auto``.

No model wins everywhere (NCF leads on MovieLens, EASE on a music-listening set), so the
candidates are compared on the user's data and the best one on validation is served:

1. one ``ValidationSplit`` of the training data (by time when time order carries signal, else
   at random; see ``training.validation``), shared by every candidate;
2. each candidate in ``CANDIDATES`` (cheapest first) is ``tune``-d on it: fitted on the split's
   training part, its own settings chosen on the held-out events (EASE's ``l2``, LightFM's and
   NCF's epochs, NCF's recency and head), and scored by NDCG@10 there. EASE is skipped when
   its dense item x item matrix does not fit in memory. The closed-form candidates go first;
   then the iterative ones, each stopped early when its score stays far below the best
   closed-form one's (``candidate_waves``, ``ValidationSplit.hopeless``). The candidates of a
   wave do not depend on each other: ``tlrec train --ray-address`` runs them as parallel Ray
   tasks, with the same result as here;
3. a **blend** of the best ``BLEND_TOP`` candidates (``training.models.blend``): weights on a
   simplex grid (step ``BLEND_STEP``) chosen on the held-out events. Its score is
   *cross-fitted*: the weights chosen on one half of the validation users are scored on the
   other half and vice versa, so the blend does not win by fitting the validation set;
4. the best score wins (scores within ``TIE_TOLERANCE`` go to the cheaper, earlier candidate) and
   is ``refit`` on all of the training data. A winner that cannot score new items is served
   inside a blend whose cold items come from NCF's content path (weight 0 on warm items, at an
   offset chosen on validation: ``learn_cold_offset``), so new items and content-only answers
   keep working whatever wins.

``Selection`` keeps the validation table, the choice and the timings; the manifest records
``Selection.to_dict()`` and the log shows ``Selection.table()``.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from tlrec.errors import ConfigError, UsageError
from tlrec.ray_cluster import TaskRunner, in_process
from tlrec.training.interaction_data import InteractionData
from tlrec.training.models import BlendModel, Recommender, build_model, get_model_class
from tlrec.training.models.base import masked_top_k
from tlrec.training.validation import SplitBy, ValidationSplit

logger = logging.getLogger(__name__)

__all__ = ["AUTO", "CANDIDATES", "TASKS", "Selection", "candidate_configs", "candidate_waves", "check_task",
           "select_model", "task_split", "tune_candidate"]

AUTO = "auto"
#: Candidates in the order they are tried: cheapest first, so later ones can be stopped early.
CANDIDATES = ("popularity", "itemknn", "ease", "lightfm", "ncf")
#: What a model is trained for: its candidates and how the validation split holds events out
#: (``ValidationSplit.of(by=...)``). ``next-item``: each user's last event (leave-last-out).
TASKS: dict[str, tuple[tuple[str, ...], SplitBy | Literal["auto"]]] = {
    "recommend": (CANDIDATES, "auto"),
    "next-item": (("popularity", "ease", "ncf", "sasrec"), "last"),
}
#: Scores within this relative distance of the best count as a tie, won by the earlier (cheaper,
#: simpler) candidate; a blend must beat the chosen single model by as much.
TIE_TOLERANCE = 0.005
#: The blend mixes this many of the best candidates.
BLEND_TOP = 3
#: Step of the weight grid on the simplex (0.1: 11 points for two models, 66 for three).
BLEND_STEP = 0.1
#: Score rows held in memory at once while the blend weights are searched (float32 entries).
BLEND_CHUNK_SCORES = 50_000_000
#: Offsets (in standardised units) tried for new items' scores in a blend; 0 first (ties keep exposure).
COLD_OFFSETS = (0.0, -0.5, -1.0, -2.0, -4.0)
#: EASE's fit holds about this many float64-sized copies of its ``n x n`` matrix at its peak.
EASE_PEAK_COPIES = 3


@dataclass
class Candidate:
    """One row of the validation table."""

    name: str
    validation_ndcg: float | None  # None: skipped
    fit_seconds: float
    note: str = ""


@dataclass
class Selection:
    """The served model (refit on all the data) and how it was chosen."""

    model: Recommender
    choice: str
    candidates: list[Candidate]
    split: dict[str, Any]
    blend: dict[str, Any] | None = None
    seconds: float = 0.0
    served_as: str = ""
    notes: list[str] = field(default_factory=list)
    #: every candidate as tuned (fitted on the split's training part); those in the served model are refit
    tuned: dict[str, Recommender] = field(default_factory=dict, repr=False)

    def refit_candidate(self, name: str, data: InteractionData, item_vectors: np.ndarray | None) -> Recommender:
        """Candidate ``name`` refit on all of ``data``, as ``--model NAME`` would serve it (benchmarks)."""
        model = self.tuned[name]
        if name not in self._refit:
            model.refit(data, item_vectors if model.wants_item_vectors() else None)
            self._refit.add(name)
        return model

    _refit: set[str] = field(default_factory=set, repr=False, init=False)

    def to_dict(self) -> dict[str, Any]:
        """What the manifest records under ``selection``."""
        return {
            "choice": self.choice,
            "served_as": self.served_as or self.model.name,
            "validation": self.split,
            "candidates": [c.__dict__ for c in self.candidates],
            "blend": self.blend,
            "seconds": round(self.seconds, 2),
            "notes": self.notes,
        }

    def table(self) -> str:
        """The validation table as aligned text lines (for the log)."""
        lines = [f"{'candidate':<12} {'val NDCG@10':>12} {'fit s':>8}  note"]
        for c in self.candidates:
            score = f"{c.validation_ndcg:.4f}" if c.validation_ndcg is not None else "-"
            mark = " <- served" if c.name == self.choice else ""
            lines.append(f"{c.name:<12} {score:>12} {c.fit_seconds:>8.1f}  {c.note}{mark}")
        return "\n".join(lines)


def candidate_configs(config: dict[str, Any] | None, names: tuple[str, ...] = CANDIDATES) -> dict[str, dict[str, Any]]:
    """Split ``--set`` keys among candidates: ``ncf.dim=64`` goes to NCF only, ``epochs=5`` to every
    candidate whose config has an ``epochs`` field. ``ConfigError`` for a key no candidate knows."""
    out: dict[str, dict[str, Any]] = {n: {} for n in names}
    for key, value in (config or {}).items():
        model, dot, field_name = key.partition(".")
        if dot:
            if model not in out:
                raise ConfigError(f"--set {key}: {model!r} is not a candidate of --model auto "
                                  f"({', '.join(names)})")
            out[model][field_name] = value
            continue
        takers = [n for n in names if key in get_model_class(n).config_class.model_fields]
        if not takers:
            raise ConfigError(f"--set {key}: no candidate of --model auto has that setting "
                              f"(use MODEL.{key} for one model, or --model NAME)")
        for n in takers:
            out[n][key] = value
    return out


def check_task(task: str) -> str:
    """``task`` if it is one of ``TASKS``; else a one-line ``UsageError``."""
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    return task


def task_split(data: InteractionData, task: str) -> ValidationSplit:
    """The validation split of ``data`` for ``task`` (leave-last-out for next-item)."""
    return ValidationSplit.of(data, by=TASKS[check_task(task)][1])


def select_model(
    data: InteractionData,
    item_vectors: np.ndarray | None,
    config: dict[str, Any] | None = None,
    candidates: tuple[str, ...] | None = None,
    split: ValidationSplit | None = None,
    keep_candidates: bool = False,
    task: str = "recommend",
    run: TaskRunner = in_process,
) -> Selection:
    """Compare ``candidates`` (default: the ``task``'s) on a validation split of ``data`` (default: the
    task's, ``task_split``); return the winner refit on all of ``data``.

    ``keep_candidates``: keep every tuned candidate in ``Selection.tuned`` (benchmarks refit them);
    by default only the served ones are kept, so a losing EASE's item x item matrix is freed.
    ``run``: how each wave's candidates are tuned (``tlrec.ray_cluster``: here one after another, or
    as parallel Ray tasks, with the same result).
    """
    start = time.perf_counter()
    candidates = candidates if candidates is not None else TASKS[check_task(task)][0]
    configs = candidate_configs(config, candidates)
    split = split if split is not None else task_split(data, task)
    if split.empty:
        model = build_model("popularity", configs.get("popularity")).fit(data)
        note = "no user has 2+ events, so nothing can be validated: serving popularity"
        logger.warning("model selection: %s", note)
        return Selection(model, "popularity", [], split.to_dict(), seconds=time.perf_counter() - start, notes=[note])
    table: list[Candidate] = []
    tuned: dict[str, Recommender] = {}
    for wave in candidate_waves(candidates):
        split.bar = max([split.bar] + [c.validation_ndcg or 0.0 for c in table])
        calls = [(name, configs[name], split, item_vectors) for name in wave]
        for model, row in run(tune_candidate, calls):
            table.append(row)
            if model is not None:
                tuned[row.name] = model
    if not tuned:
        raise ConfigError(f"model selection: no candidate could be fitted ({'; '.join(c.note for c in table)})")
    ranked = sorted(tuned, key=lambda n: -float(tuned[n].validation_ndcg_ or 0.0))
    top_score = float(tuned[ranked[0]].validation_ndcg_ or 0.0)
    best = next(n for n in tuned if float(tuned[n].validation_ndcg_ or 0.0) >= (1 - TIE_TOLERANCE) * top_score)
    cold_from = _cold_router(tuned)
    blend_info = None
    choice, served = best, tuned[best]
    top = [n for n in ranked[:BLEND_TOP] if (tuned[n].validation_ndcg_ or 0.0) > 0]
    if len(top) >= 2:
        t0 = time.perf_counter()
        weights, honest, in_sample = learn_blend_weights(split, [tuned[n] for n in top], cold_from)
        seconds = time.perf_counter() - t0
        kept = [(n, w) for n, w in zip(top, weights) if w > 0]
        note = "weights " + ", ".join(f"{n} {w:.1f}" for n, w in kept) + " (cross-fitted score)"
        table.append(Candidate("blend", honest, seconds, note))
        blend_info = {"components": dict(zip(top, weights)), "validation_ndcg": honest,
                      "validation_ndcg_in_sample": in_sample}
        if honest > (1 + TIE_TOLERANCE) * float(served.validation_ndcg_ or 0.0) and len(kept) > 1:
            choice = "blend"
    selection = Selection(served, choice, table, split.to_dict(), blend_info, tuned=tuned)
    model = _served_model(selection, tuned, cold_from, split)
    parts = [c.model for c in model.config.components] if isinstance(model, BlendModel) else [model.name]
    if not keep_candidates:  # free the losers (a dense EASE matrix) before the refit
        selection.tuned = {n: tuned[n] for n in parts}
        del tuned
    selection.model = model.refit(data, item_vectors)
    selection._refit.update(parts)  # the served parts are tuned candidates, now refit
    selection.served_as = selection.model.name
    selection.seconds = time.perf_counter() - start
    logger.info("model selection (%s split; %s):\n%s\nserved: %s (%s), selection took %.1fs", split.by, split.reason,
                selection.table(), choice, selection.served_as, selection.seconds)
    return selection


def candidate_waves(candidates: tuple[str, ...]) -> list[tuple[str, ...]]:
    """``candidates`` in two waves, each in the given order: the closed-form ones, then those that stop
    early (``Recommender.stops_early``). The bar a candidate stops early against is the best score
    of the waves before its own, so the candidates of a wave are independent: run one after
    another or in parallel, they give the same table."""
    waves = [tuple(n for n in candidates if not get_model_class(n).stops_early),
             tuple(n for n in candidates if get_model_class(n).stops_early)]
    return [w for w in waves if w]


def tune_candidate(name: str, config: dict[str, Any], split: ValidationSplit,
                   item_vectors: np.ndarray | None) -> tuple[Recommender | None, Candidate]:
    """Candidate ``name`` (``config``) tuned on ``split`` and its row of the validation table; no model
    (and a "skipped" row) when it cannot be a candidate on this data (``_skip_reason``)."""
    model = build_model(name, config)
    skip = _skip_reason(model, split)
    if skip:
        logger.info("model selection: %s skipped: %s", name, skip)
        return None, Candidate(name, None, 0.0, f"skipped: {skip}")
    t0 = time.perf_counter()
    model.tune(split, item_vectors if model.wants_item_vectors() else None)
    seconds = time.perf_counter() - t0
    score = float(model.validation_ndcg_ or 0.0)
    logger.info("model selection: %s validation NDCG@10 %.4f (%.1fs)", name, score, seconds)
    return model, Candidate(name, score, seconds)


def _skip_reason(model: Recommender, split: ValidationSplit) -> str:
    """Why ``model`` cannot be a candidate on this data ('' when it can)."""
    if model.name != "ease":
        return ""
    n_active = int((np.diff(split.fit_data.seen().tocsc().indptr) > 0).sum())
    limit = int(getattr(model.config, "max_items", 0))
    need = EASE_PEAK_COPIES * 8 * n_active**2
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    if n_active > limit:
        return f"{n_active} items with interactions > max_items={limit}"
    if need > 0.8 * available:
        return f"its {n_active} x {n_active} item matrix needs ~{need / 2**30:.1f} GiB, {available / 2**30:.1f} GiB free"
    return ""


def _cold_router(tuned: dict[str, Recommender]) -> str | None:
    """The tuned candidate that scores new items from content: the best on validation of those
    fitted with content vectors (NCF, the next-item model); None when there is none."""
    able = [n for n, m in tuned.items() if m.scores_new_items_from_content()]
    return max(able, key=lambda n: float(tuned[n].validation_ndcg_ or 0.0)) if able else None


def _served_model(selection: Selection, tuned: dict[str, Recommender], cold_from: str | None,
                  split: ValidationSplit) -> Recommender:
    """The chosen model as served: alone, or in a blend (the chosen weights, or weight 0 + cold items)."""
    if selection.choice == "blend":
        assert selection.blend is not None
        parts = {n: w for n, w in selection.blend["components"].items() if w > 0}
    else:
        winner = tuned[selection.choice]
        if cold_from is None or winner.recommends_for_cold_items:
            return winner
        parts = {selection.choice: 1.0}
        selection.notes.append(f"{selection.choice} cannot score new items: served in a blend whose new items come "
                               f"from {cold_from}'s content path")
    if cold_from is not None and cold_from not in parts:
        parts[cold_from] = 0.0
    blend = BlendModel.of([tuned[n] for n in parts], list(parts.values()), cold_from, split.fit_data)
    if cold_from is not None and not blend.warm.all():  # type: ignore[union-attr]
        blend.config.cold_offset, scores = learn_cold_offset(split, blend)
        selection.notes.append(f"new items rank at {cold_from}'s standardised score {blend.config.cold_offset:+g} "
                               f"(validation NDCG@10 by offset: {scores})")
    return blend


def _validation_grid(split: ValidationSplit, blend: BlendModel,
                     variants: Callable[[list[np.ndarray]], Iterator[np.ndarray]], n_variants: int) -> np.ndarray:
    """NDCG@10 float64 ``[n_variants, len(split.users)]`` of score variants of ``blend`` on ``split``.

    Users go in chunks (at most ``BLEND_CHUNK_SCORES`` score entries per component); for each
    chunk ``variants(standardised parts)`` yields ``n_variants`` score matrices ``[chunk, n_items]``,
    ranked with the chunk's seen items excluded.
    """
    per_user = np.zeros((n_variants, len(split.users)), np.float64)
    chunk = max(16, BLEND_CHUNK_SCORES // max(1, split.fit_data.n_items * len(blend.components)))
    for s in range(0, len(split.users), chunk):
        rows = split.users[s : s + chunk]
        seen = split.seen[rows]
        for v, scores in enumerate(variants(blend.standardised(lambda m, items, rows=rows: m._score(rows, items)))):
            top, _ = masked_top_k(scores, 10, seen, None)
            per_user[v, s : s + chunk] = split.ndcg_per_user(top, users=rows)
    return per_user


def learn_cold_offset(split: ValidationSplit, blend: BlendModel) -> tuple[float, dict[float, float]]:
    """The ``COLD_OFFSETS`` value with the best validation NDCG@10 for ``blend`` (fitted on ``split.fit_data``).

    Items with no event in ``split.fit_data`` are the cold ones here; held-out events on them
    reward ranking them high, events on warm items reward keeping them out of the way. Ties go
    to the offset nearer 0 (new items keep their exposure). Returns the offset and every score.
    """
    assert blend.warm is not None
    if blend.warm.all():
        return 0.0, {}
    cold = ~blend.warm
    weights = [c.weight for c in blend.config.components]
    blend.config.cold_offset = 0.0

    def shifted(parts: list[np.ndarray]) -> Iterator[np.ndarray]:
        total = blend.combine(parts, weights)
        for offset in COLD_OFFSETS:
            out = total.copy()
            out[:, cold] += np.float32(offset)
            yield out

    per_offset = _validation_grid(split, blend, shifted, len(COLD_OFFSETS))
    means = per_offset.mean(axis=1)
    best = int(np.flatnonzero(means >= means.max() - 1e-12)[0])
    return COLD_OFFSETS[best], {o: round(float(m), 4) for o, m in zip(COLD_OFFSETS, means)}


def simplex_grid(n: int, step: float = BLEND_STEP) -> np.ndarray:
    """Every weight vector float64 ``[g, n]`` with entries in multiples of ``step`` summing to 1."""
    units = round(1 / step)
    points = [p for p in itertools.product(range(units + 1), repeat=n) if sum(p) == units]
    return np.array(points, np.float64) / units


def learn_blend_weights(split: ValidationSplit, models: list[Recommender],
                        cold_from: str | None) -> tuple[list[float], float, float]:
    """Blend weights for ``models`` (tuned on ``split``) chosen on its held-out events.

    Returns ``(weights, cross_fitted_ndcg, in_sample_ndcg)``: the weights with the best mean
    NDCG@10 over all validation users, the score of weights chosen on one half of the users and
    scored on the other (both ways, averaged over all users), and the best in-sample score.
    """
    names = [m.name for m in models]
    blend = BlendModel.of(models, [1.0 / len(models)] * len(models),
                          cold_from if cold_from in names else None, split.fit_data)
    grid = simplex_grid(len(models))
    users = split.users
    per_user = _validation_grid(split, blend, lambda parts: (blend.combine(parts, w) for w in grid), len(grid))
    half = np.random.default_rng(0).random(len(users)) < 0.5
    a_best = int(per_user[:, half].mean(axis=1).argmax()) if half.any() else 0
    b_best = int(per_user[:, ~half].mean(axis=1).argmax()) if (~half).any() else 0
    honest = float((per_user[b_best, half].sum() + per_user[a_best, ~half].sum()) / len(users))
    best = int(per_user.mean(axis=1).argmax())
    logger.info("blend of %s: weights %s, cross-fitted validation NDCG@10 %.4f (in-sample %.4f)", ", ".join(names),
                np.round(grid[best], 2).tolist(), honest, per_user[best].mean())
    return [float(w) for w in grid[best]], honest, float(per_user[best].mean())
