"""The jobs behind `tlrec train --task propensity|return` and `tlrec evaluate --task propensity|return`:
the calibrated probability models (`tlrec predict` is ``batch_predict``).

Like ``services.jobs``: inputs validated first (one-line errors naming file, row and column),
outputs written atomically (a version is published whole or not at all; an output file
appears complete or not at all).
"""

from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from tlrec.embeddings.embed_catalog import embed_catalog
from tlrec.embeddings.vectors import load_item_vectors
from tlrec.files import write_json_atomic
from tlrec.services.jobs import VECTORS_IN_ARTIFACT, input_record
from tlrec.tables import Columns, DataError
from tlrec.training.artifacts import new_version, staged_version
from tlrec.training.data import load_catalog, load_interactions
from tlrec.training.id_map import IdMap
from tlrec.training.positive_spec import PositiveSpec
from tlrec.training.probability_metrics import ECE_BINS, probability_metrics, reliability
from tlrec.training.propensity_artifact import PropensityArtifact, labelled_pairs, propensity_config
from tlrec.training.return_artifact import ReturnArtifact, return_config
from tlrec.training.return_model import DAY
from tlrec.training.train import align_vectors

logger = logging.getLogger(__name__)

__all__ = ["evaluate_propensity_job", "evaluate_return_job", "train_propensity_job", "train_return_job"]


def train_propensity_job(catalog_path: Path, interactions_path: Path, artifacts_root: Path, positive: str,
                         vectors_path: Path | None = None, strict: bool = False,
                         config: dict[str, Any] | None = None) -> Path:
    """Label every interaction by ``positive`` (a SPEC), fit the calibrated propensity model on it
    (content from ``vectors_path``, else embedded now into the version) and publish a version.
    Returns the version directory; ``artifacts_root/current`` names it."""
    spec = PositiveSpec.parse(positive)
    propensity_config(config)  # a bad setting fails before any work

    def fit(interactions: pl.DataFrame, items: IdMap, content: np.ndarray) -> PropensityArtifact:
        return PropensityArtifact.fit(interactions, items, spec, content, config, where=str(interactions_path))

    def check(interactions: pl.DataFrame) -> None:  # a SPEC that cannot label these fails before any work
        spec.labels(interactions, str(interactions_path))

    version = _train_and_publish(catalog_path, interactions_path, artifacts_root, vectors_path, strict, fit, check)
    logger.info("published propensity model %s (positive: %s)", version, spec.text)
    return version


def train_return_job(catalog_path: Path, interactions_path: Path, artifacts_root: Path, horizon: int,
                     as_of: int | None = None, vectors_path: Path | None = None, strict: bool = False,
                     config: dict[str, Any] | None = None) -> Path:
    """Fit the calibrated return model (``P(an event within horizon seconds after as_of)``, windows from the
    users' own past up to ``as_of``, default the newest event) and publish a version."""
    settings = {**(config or {}), "horizon": horizon}
    return_config(settings)  # a bad setting fails before any work

    def fit(interactions: pl.DataFrame, items: IdMap, content: np.ndarray) -> ReturnArtifact:
        return ReturnArtifact.fit(interactions, items, content, settings, as_of)

    version = _train_and_publish(catalog_path, interactions_path, artifacts_root, vectors_path, strict, fit)
    logger.info("published return model %s (horizon %g days)", version, horizon / DAY)
    return version


def _train_and_publish(catalog_path: Path, interactions_path: Path, artifacts_root: Path, vectors_path: Path | None,
                       strict: bool, fit: Callable[[pl.DataFrame, IdMap, np.ndarray], Any],
                       check: Callable[[pl.DataFrame], None] | None = None) -> Path:
    """Validate the inputs (``check`` adds a task's own), then ``fit(interactions, catalog ids, content
    [n_items, c])`` inside a staged version (embedding the catalog into it when no vectors are given)
    and publish the artifact it returns (``write(stage)`` gives its manifest fields)."""
    catalog = load_catalog(catalog_path)
    interactions = load_interactions(interactions_path, catalog=catalog, strict=strict)
    if check is not None:
        check(interactions)
    vectors = load_item_vectors(vectors_path) if vectors_path is not None else None
    manifest: dict[str, Any] = {"inputs": {"catalog": input_record(catalog_path),
                                           "interactions": input_record(interactions_path)}}
    if vectors_path is not None:
        manifest["inputs"]["vectors"] = input_record(vectors_path)
    version = new_version()
    artifacts_root.mkdir(parents=True, exist_ok=True)
    with staged_version(artifacts_root, version=version, manifest=manifest) as stage:
        if vectors is None:
            vectors = load_item_vectors(embed_catalog(catalog, stage / VECTORS_IN_ARTIFACT))
        manifest["encoders"] = vectors.manifest.get("encoders")
        items = IdMap(catalog[Columns.ITEM].to_list())
        artifact = fit(interactions, items, align_vectors(items, vectors))
        manifest.update(artifact.write(stage))
    logger.info("validation of %s: %s", version, artifact.training["validation"])
    return artifacts_root / version


def evaluate_propensity_job(artifacts: Path, interactions_path: Path, report: Path | None = None
                            ) -> dict[str, dict[str, float]]:
    """Probability metrics (``probability_metrics``) of every (user, item) pair of the test
    interactions (catalog items), labelled by the model's own SPEC (``labelled_pairs``): ``{"all": ..., "known items": ..., "new items": ...,
    "unknown users": ...}`` (empty segments left out). ``report``: Markdown, JSON and a
    reliability diagram (PNG) there."""
    artifact, version = PropensityArtifact.load(artifacts)
    test = load_interactions(interactions_path)
    known = test[Columns.ITEM].is_in(list(artifact.items.external))
    if (~known).any():
        logger.warning("%d test interactions name items outside the model's catalog; dropped", int((~known).sum()))
        test = test.filter(known)
    pairs = labelled_pairs(test, artifact.positive, str(interactions_path), keys=(Columns.USER, Columns.ITEM))
    y = pairs["label"].to_numpy().astype(np.float64)
    pred = artifact.predict(pairs[Columns.USER], pairs[Columns.ITEM], where=str(interactions_path))
    p = pred["probability"].to_numpy()
    segments = {"all": np.ones(len(y), bool), "known items": pred["known_item"].to_numpy(),
                "new items": ~pred["known_item"].to_numpy(), "unknown users": ~pred["known_user"].to_numpy()}
    results = {name: probability_metrics(y[m], p[m]) for name, m in segments.items()
               if m.sum() and 0 < y[m].sum() < m.sum()}
    if report is not None:
        _write_report(report, "propensity", results, y, p, version,
                      f"Positive: `{artifact.positive.text}`; test interactions `{interactions_path}` (each user-item "
                      "pair one example).", f"reliability ({artifact.positive.text}, {ECE_BINS} bins)")
    return results


def evaluate_return_job(artifacts: Path, interactions_path: Path, report: Path | None = None
                        ) -> dict[str, dict[str, float]]:
    """Probability metrics of every user the model knows: label = an event in the test interactions
    within ``(as_of, as_of + horizon]``. Segments ``all`` and ``<= 5 events`` (short histories).
    ``report``: Markdown, JSON and a reliability diagram (PNG) there."""
    artifact, version = ReturnArtifact.load(artifacts)
    model = artifact.model
    test = load_interactions(interactions_path)
    as_of, end = model.as_of, model.as_of + model.config.horizon
    early = int((test[Columns.TIMESTAMP] <= as_of).sum())
    if early:
        logger.warning("%s: %d test interactions at or before the model's as-of time %d; ignored (they are "
                       "training data)", interactions_path, early, as_of)
    if test.is_empty() or int(test[Columns.TIMESTAMP].max()) < end:
        logger.warning("%s: the test interactions end before as-of + horizon (%d): users who return after "
                       "them count as not returning", interactions_path, end)
    returned = test.filter(pl.col(Columns.TIMESTAMP).is_between(as_of, end, closed="right"))[Columns.USER].unique()
    pred = artifact.predict(artifact.users.external)
    known = pred["known_user"].to_numpy()
    y = pred[Columns.USER].is_in(returned.to_list()).to_numpy().astype(np.float64)[known]
    p = pred["probability"].to_numpy()[known]
    assert model.timeline is not None
    events = np.diff(model.timeline.indptr)[known]
    segments = {"all": np.ones(len(y), bool), "<= 5 events": events <= 5}
    results = {name: probability_metrics(y[m], p[m]) for name, m in segments.items()
               if m.sum() and 0 < y[m].sum() < m.sum()}
    if not results:
        raise DataError.at(interactions_path, "no user in both outcomes: every known user returned, or none did "
                                              f"(within {artifact.horizon_days:g} days after the as-of time)")
    if report is not None:
        _write_report(report, "return", results, y, p, version,
                      f"Return within {artifact.horizon_days:g} days after {as_of} (epoch s); test interactions "
                      f"`{interactions_path}`; every user known to the model is one example.",
                      f"reliability (return in {artifact.horizon_days:g} d, {ECE_BINS} bins)")
    return results


def _write_report(out: Path, task: str, results: dict[str, dict[str, float]], y: np.ndarray, p: np.ndarray,
                  version: str, what: str, title: str) -> None:
    """report.md (``what`` says what was measured), ``<task>.json`` and reliability.png (predicted
    against observed rate, 15 bins, titled ``title``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    bins = reliability(y, p)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect calibration")
    shown = bins["count"] > 0
    ax.plot(bins["confidence"][shown], bins["frequency"][shown], marker="o", label=version)
    ax.set(xlabel="predicted probability", ylabel="observed rate", xlim=(0, 1), ylim=(0, 1),
           title=title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=110)
    plt.close(fig)
    names = ["roc_auc", "pr_auc", "log_loss", "brier", "ece", "base_rate", "n"]
    lines = [f"# {task.capitalize()} evaluation of {version}", "", what, "",
             "| segment | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {s} | " + " | ".join(str(int(r[n])) if n == "n" else f"{r[n]:.4f}" for n in names) + " |"
              for s, r in results.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n\n![reliability](reliability.png)\n", encoding="utf-8")
    write_json_atomic(out / f"{task}.json", results)
    logger.info("wrote %s", out / "report.md")
