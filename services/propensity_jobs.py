"""The jobs behind `tlrec train --task propensity`, `tlrec predict` and `tlrec evaluate --task propensity`.

Like ``services.jobs``: inputs validated first (one-line errors naming file, row and column),
outputs written atomically (a version is published whole or not at all; an output file
appears complete or not at all).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tlrec.embeddings.embed_catalog import embed_catalog
from tlrec.embeddings.vectors import load_item_vectors
from tlrec.files import write_json_atomic, write_parquet_atomic
from tlrec.services.batch_scoring import MODEL_VERSION
from tlrec.services.jobs import VECTORS_IN_ARTIFACT, input_record
from tlrec.tables import Columns, DataError, read_table
from tlrec.training.artifacts import ArtifactError, new_version, open_version, staged_version
from tlrec.training.data import load_catalog, load_interactions
from tlrec.training.id_map import IdMap
from tlrec.training.positive_spec import PositiveSpec
from tlrec.training.probability_metrics import ECE_BINS, probability_metrics, reliability
from tlrec.training.propensity_artifact import PropensityArtifact, labelled_pairs, propensity_config
from tlrec.training.train import align_vectors

logger = logging.getLogger(__name__)

__all__ = ["evaluate_propensity_job", "load_propensity", "predict_pairs_job", "train_propensity_job"]


def train_propensity_job(catalog_path: Path, interactions_path: Path, artifacts_root: Path, positive: str,
                         vectors_path: Path | None = None, strict: bool = False,
                         config: dict[str, Any] | None = None) -> Path:
    """Label every interaction by ``positive`` (a SPEC), fit the calibrated propensity model on it
    (content from ``vectors_path``, else embedded now into the version) and publish a version.
    Returns the version directory; ``artifacts_root/current`` names it."""
    spec = PositiveSpec.parse(positive)
    propensity_config(config)  # a bad setting fails before any work
    catalog = load_catalog(catalog_path)
    interactions = load_interactions(interactions_path, catalog=catalog, strict=strict)
    spec.labels(interactions, str(interactions_path))  # a SPEC that cannot label these fails before any work
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
        artifact = PropensityArtifact.fit(interactions, items, spec, align_vectors(items, vectors), config,
                                          where=str(interactions_path))
        manifest.update(artifact.write(stage))
    logger.info("published propensity model %s (positive: %s; validation %s)", artifacts_root / version, spec.text,
                artifact.training["validation"])
    return artifacts_root / version


def load_propensity(artifacts: Path) -> tuple[PropensityArtifact, str]:
    """The verified propensity version ``artifacts`` names (a root's ``current`` or a version dir),
    and its version name. ``ArtifactError`` (one line) when it holds another task's model."""
    version = open_version(Path(artifacts))
    task = version.manifest.get("task", "recommend")
    if task != "propensity":
        raise ArtifactError(f"{version.path}: holds a {task!r} model, not a propensity model (train one with "
                            "`tlrec train --task propensity --positive SPEC`)")
    return PropensityArtifact.read(version), version.name


def predict_pairs_job(artifacts: Path, pairs_path: Path, out: Path) -> pl.DataFrame:
    """Probabilities of the pairs in ``pairs_path`` (``user_id``, ``item_id`` columns; CSV, Parquet or
    JSONL) into ``out`` (Parquet: ``user_id, item_id, probability, known_user, known_item,
    model_version``, input order). Returns the frame written."""
    artifact, version = load_propensity(artifacts)
    pairs = read_table(pairs_path, string_columns=(Columns.USER, Columns.ITEM))
    missing = [c for c in (Columns.USER, Columns.ITEM) if c not in pairs.columns]
    if missing:
        raise DataError.at(pairs_path, f"missing column(s) {', '.join(missing)} (found: "
                                       f"{', '.join(pairs.columns) or 'none'})")
    frame = artifact.predict(pairs[Columns.USER], pairs[Columns.ITEM], where=str(pairs_path))
    frame = frame.with_columns(pl.lit(version).alias(MODEL_VERSION))
    write_parquet_atomic(frame, out)
    logger.info("wrote %d probabilities to %s (%d from unknown users, %d for new items; model %s)", frame.height, out,
                int((~frame["known_user"]).sum()), int((~frame["known_item"]).sum()), version)
    return frame


def evaluate_propensity_job(artifacts: Path, interactions_path: Path, report: Path | None = None
                            ) -> dict[str, dict[str, float]]:
    """Probability metrics (``probability_metrics``) of every (user, item) pair of the test
    interactions (catalog items), labelled by the model's own SPEC (``labelled_pairs``): ``{"all": ..., "known items": ..., "new items": ...,
    "unknown users": ...}`` (empty segments left out). ``report``: Markdown, JSON and a
    reliability diagram (PNG) there."""
    artifact, version = load_propensity(artifacts)
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
        _write_report(report, results, y, p, version, artifact.positive.text, interactions_path)
    return results


def _write_report(out: Path, results: dict[str, dict[str, float]], y: np.ndarray, p: np.ndarray, version: str,
                  positive: str, interactions_path: Path) -> None:
    """report.md, propensity.json and reliability.png (predicted against observed rate, 15 bins)."""
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
           title=f"reliability ({positive}, {ECE_BINS} bins)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=110)
    plt.close(fig)
    names = ["roc_auc", "pr_auc", "log_loss", "brier", "ece", "base_rate", "n"]
    lines = [f"# Propensity evaluation of {version}", "",
             f"Positive: `{positive}`; test interactions `{interactions_path}` (each user-item pair one example).", "",
             "| segment | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {s} | " + " | ".join(str(int(r[n])) if n == "n" else f"{r[n]:.4f}" for n in names) + " |"
              for s, r in results.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n\n![reliability](reliability.png)\n", encoding="utf-8")
    write_json_atomic(out / "propensity.json", results)
    logger.info("wrote %s", out / "report.md")
