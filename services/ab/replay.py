"""Offline replay: estimate the lift of one artifact over another on logged interactions, before going live.

Two estimates on a time-based holdout (interactions after the artifacts'
training data, e.g. ``test.parquet`` of a temporal split, or ``--since T``):

1. **Replayed A/B test.** Every holdout user is assigned with the experiment's
   own hash (the traffic share is ignored: all of them take part) and gets the
   top-k list of the variant's artifact (seen items excluded), through the
   same ``ServedModel.recommend`` as the API. The user's exposure is their
   first holdout event; outcomes are holdout events on recommended items: one
   click (the first of the experiment's ``click_events``) per distinct
   recommended item the user interacted with, plus the conversion / value
   events on those items with their value. That goes through the very same
   analysis as a live test (:func:`services.ab.analysis.analyze`), so the
   report is the same.
2. **Team-draft interleaving.** Every holdout user gets one list that
   interleaves the control's and a treatment's rankings (team draft, coin
   flips seeded by a stable hash of user, experiment and salt); each team is
   credited with the holdout interactions on the items it contributed. Per
   treatment: wins, losses, ties, the share of decided users the treatment
   wins (interval: Wilson) and a two-sided binomial test against 1/2. Far
   more sensitive than the split test, since each user compares both.

Logged interactions only show items the old system exposed, so both
estimates favour whatever resembles it; read them as a screen before a live test.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import stats
from tlrec.services.ab.analysis import DEFAULT_LOOKS, Analysis, analyze
from tlrec.services.ab.stats import team_draft
from tlrec.serving.experiments import (
    EXPERIMENT,
    VARIANT,
    Experiment,
    assign_many,
    resolve_artifact,
)
from tlrec.serving.served_model import ServedModel
from tlrec.tables import Columns, DataError

from tlrec.errors import UsageError

logger = logging.getLogger(__name__)

BATCH = 1024


@dataclass
class ReplayData:
    """The replayed test's inputs (kept for the report folder) and each variant's lists for every user."""

    exposures: pl.DataFrame
    outcomes: pl.DataFrame
    lists: dict[str, dict[str, list[str]]]  # variant -> user -> ranked item ids
    versions: dict[str, str]


def _user_seed(user: str, experiment: Experiment) -> int:
    digest = hashlib.sha256(f"{experiment.name}\x1f{experiment.salt}\x1finterleave\x1f{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def load_models(experiment: Experiment, artifacts_root: Path | None, base_dir: Path | None) -> dict[str, ServedModel]:
    """Each variant's artifact, loaded (and checksum-verified) once even if variants share it."""
    loaded: dict[Path, ServedModel] = {}
    models = {}
    for v in experiment.variants:
        path = resolve_artifact(v.artifact, artifacts_root, base_dir).resolve()
        if path not in loaded:
            loaded[path] = ServedModel.load(path)
        models[v.name] = loaded[path]
    return models


def replay_data(experiment: Experiment, models: dict[str, ServedModel], holdout: pl.DataFrame,
                k: int = 10) -> ReplayData:
    """Assign holdout users, recommend with every variant, build exposures and outcomes.

    ``holdout``: validated interactions (``training.data.load_interactions``).
    """
    if k < 1:
        raise UsageError(f"--k must be >= 1, got {k}")
    U, I, T, E = Columns.USER, Columns.ITEM, Columns.TIMESTAMP, Columns.EVENT
    if holdout.height == 0:
        raise DataError("holdout interactions are empty: nothing to replay")
    firsts = holdout.group_by(U).agg(pl.col(T).min()).sort(U)
    users = firsts[U].to_list()
    everyone = experiment.model_copy(update={"traffic": 1.0})
    assigned = dict(zip(users, assign_many(users, everyone)))
    lists: dict[str, dict[str, list[str]]] = {}
    for name, served in models.items():
        lists[name] = {}
        for start in range(0, len(users), BATCH):
            for rec in served.recommend(users[start : start + BATCH], k, exclude_seen=True):
                lists[name][rec.user_id] = rec.item_ids
    exposures = firsts.select(U, pl.lit(experiment.name).alias(EXPERIMENT),
                              pl.col(U).replace_strict(assigned, return_dtype=pl.String).alias(VARIANT), T)
    shown = pl.DataFrame(
        [(u, item) for u in users for item in lists[assigned[u]][u]],  # type: ignore[index]
        schema={U: pl.String, I: pl.String}, orient="row",
    )
    hits = holdout.join(shown, on=[U, I], how="inner")
    click = experiment.click_events[0]
    clicks = hits.group_by(U, I).agg(pl.col(T).min()).select(U, pl.lit(click).alias(E),
                                                               pl.lit(1.0).alias(Columns.VALUE), T)
    valued = set(experiment.conversion_events) | set(experiment.value_event_names)
    conversions = hits.filter(pl.col(E).is_in(sorted(valued - set(experiment.click_events)))).select(
        U, E, Columns.VALUE, T)
    outcomes = pl.concat([clicks, conversions]).sort(U, T)
    logger.info("replay: %d holdout users, %d recommended items interacted with, %d conversions",
                len(users), clicks.height, conversions.height)
    return ReplayData(exposures, outcomes, lists, {n: m.version for n, m in models.items()})


def interleave(experiment: Experiment, lists: dict[str, dict[str, list[str]]], holdout: pl.DataFrame,
               k: int) -> list[dict[str, Any]]:
    """Team-draft interleaving of the control against each treatment, one row per treatment."""
    U, I = Columns.USER, Columns.ITEM
    engaged: dict[str, set[str]] = {}
    for user, item in holdout.select(U, I).unique().iter_rows():
        engaged.setdefault(user, set()).add(item)
    control = experiment.control_variant
    rows = []
    for treatment in experiment.variant_names:
        if treatment == control:
            continue
        wins_c = wins_t = ties = 0
        for user, ranked_c in lists[control].items():
            rng = np.random.default_rng(_user_seed(user, experiment))
            items, teams = team_draft(ranked_c, lists[treatment].get(user, []), k, rng)
            liked = engaged.get(user, set())
            credit = [0, 0]
            for item, team in zip(items, teams):
                credit[team] += item in liked
            if credit[1] > credit[0]:
                wins_t += 1
            elif credit[0] > credit[1]:
                wins_c += 1
            else:
                ties += 1
        decided = wins_c + wins_t
        if decided:
            test = stats.binomtest(wins_t, decided, 0.5)
            ci = test.proportion_ci(confidence_level=1 - experiment.alpha, method="wilson")
            share, low, high, p = wins_t / decided, ci.low, ci.high, test.pvalue
        else:
            share = low = high = float("nan")
            p = 1.0
        rows.append({"variant": treatment, "control": control, "users": decided + ties, "wins": wins_t,
                     "losses": wins_c, "ties": ties, "win_share": share, "ci_low": float(low),
                     "ci_high": float(high), "p_value": float(p), "significant": bool(p < experiment.alpha)})
    return rows


def _interleaving_markdown(rows: list[dict[str, Any]], alpha: float) -> str:
    lines = ["## Team-draft interleaving", "",
             "Each holdout user sees one list interleaving both rankings; a team wins the user when more of "
             "the user's holdout interactions fall on the items it contributed.", "",
             f"| variant | vs | users | wins | losses | ties | win share of decided | {100 * (1 - alpha):g}% "
             "interval | p-value (binomial) |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['control']} | {r['users']} | {r['wins']} | {r['losses']} | "
                     f"{r['ties']} | {r['win_share']:.4f} | [{r['ci_low']:.4f}, {r['ci_high']:.4f}] | "
                     f"{r['p_value']:.3g} |")
    return "\n".join(lines)


def replay(experiment: Experiment, models: dict[str, ServedModel], holdout: pl.DataFrame, k: int = 10,
           looks: int = DEFAULT_LOOKS) -> tuple[Analysis, ReplayData]:
    """Replayed A/B analysis plus interleaving (under ``analysis.extra``)."""
    data = replay_data(experiment, models, holdout, k)
    analysis = analyze(data.exposures, data.outcomes, experiment, looks=looks)
    rows = interleave(experiment, data.lists, holdout, k)
    analysis.extra["replay"] = {"k": k, "holdout_users": data.exposures.height,
                                "holdout_interactions": holdout.height, "artifact_versions": data.versions,
                                "markdown": "## Replay\n\nA/B figures above are replayed on logged holdout "
                                            f"interactions: top-{k} lists per variant; a click is a holdout "
                                            "interaction with a recommended item. Artifacts: "
                                            + ", ".join(f"{n} = `{v}`" for n, v in data.versions.items()) + "."}
    analysis.extra["interleaving"] = {"rows": rows, "markdown": _interleaving_markdown(rows, experiment.alpha)}
    return analysis, data
