"""Fit a model on interactions (+ item vectors) and write a complete model version into an artifact dir.

``train_into`` fits and writes into ``out_dir`` (a staging directory; ``training.artifacts``
publishes it) every file the version holds; the layout (file names, formats, the index) is
``training.model_artifact.ModelArtifact``'s.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import ValidationError

from tlrec.embeddings.finetune import TextTopLayers
from tlrec.embeddings.registry import get_encoder
from tlrec.embeddings.text import TextEncoder
from tlrec.embeddings.catalog_inputs import item_texts
from tlrec.embeddings.vectors import ItemVectors
from tlrec.errors import ConfigError
from tlrec.tables import Columns
from tlrec.training.id_map import IdMap
from tlrec.training.interaction_data import InteractionData
from tlrec.training.model_artifact import ModelArtifact
from tlrec.training.models import Recommender, get_model_class

logger = logging.getLogger(__name__)


def align_vectors(items: IdMap, vectors: ItemVectors) -> np.ndarray:
    """Item vectors float32 ``[len(items), d]`` in catalog order; items without a vector get zeros."""
    matrix = np.zeros((len(items), vectors.fused.shape[1]), dtype=np.float32)
    idx = items.to_internal(vectors.item_ids, missing="ignore")
    ok = idx >= 0
    matrix[idx[ok]] = vectors.fused[ok]
    missing = len(items) - int(ok.sum())
    if missing:
        logger.warning("%d catalog items have no vector in the vectors file; they get zero content", missing)
    return matrix


def build_model(model: str, config: dict[str, Any] | None = None) -> Recommender:
    """An unfitted model of registry name ``model``; ``ConfigError`` names the bad key."""
    model_class = get_model_class(model)
    try:
        return model_class(model_class.config_class.model_validate(config or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "config"
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{model} config: {where}: {msg}{more}") from None


def fit_model(
    catalog: pl.DataFrame,
    interactions: pl.DataFrame,
    vectors: ItemVectors | None = None,
    model: str = "ncf",
    config: dict[str, Any] | None = None,
) -> tuple[Recommender, InteractionData]:
    """Fit ``model`` on validated frames; returns the fitted model and its indexed data."""
    recommender = build_model(model, config)
    items = IdMap(catalog[Columns.ITEM].to_list())
    data = InteractionData.build(interactions, items)
    content = align_vectors(items, vectors) if vectors is not None and recommender.wants_item_vectors() else None
    finetune = int(getattr(recommender.config, "finetune_layers", 0) or 0)
    if finetune and content is not None and recommender.finetunes_text:
        assert vectors is not None
        recommender.set_text_finetuning(*text_finetuning(catalog, vectors, finetune))
    recommender.fit(data, content)
    return recommender, data


def text_finetuning(catalog: pl.DataFrame, vectors: ItemVectors, n_layers: int) -> tuple[TextTopLayers, slice]:
    """The trainable top ``n_layers`` of the vectors' text encoder over the catalog's texts (catalog order),
    and where the text block sits in the fused vectors."""
    if "text" not in vectors.blocks:
        raise ConfigError(f"--finetune-layers needs text vectors; the vectors have "
                          f"{', '.join(vectors.blocks) or 'none'}")
    offset = 0
    for name, block in vectors.blocks.items():
        if name == "text":
            break
        offset += block.shape[1]
    text_slice = slice(offset, offset + vectors.blocks["text"].shape[1])
    name = str((vectors.manifest.get("encoders") or {}).get("text", {}).get("name", "minilm"))
    encoder = get_encoder(name)
    if not isinstance(encoder, TextEncoder):
        raise ConfigError(f"--finetune-layers: text encoder {name!r} is not a transformers text model")
    return TextTopLayers(encoder, item_texts(catalog), n_layers), text_slice


def train_into(
    out_dir: Path,
    catalog: pl.DataFrame,
    interactions: pl.DataFrame,
    vectors: ItemVectors | None = None,
    model: str = "ncf",
    config: dict[str, Any] | None = None,
) -> tuple[Recommender, dict[str, Any]]:
    """Fit and write the complete version (``ModelArtifact``) into ``out_dir``; returns (model, manifest fields)."""
    start = time.perf_counter()
    recommender, data = fit_model(catalog, interactions, vectors, model, config)
    info = ModelArtifact.build(recommender, data, time.perf_counter() - start).write(out_dir)
    logger.info("trained %s on %d interactions in %.1fs", model, info["n_interactions"], info["fit_seconds"])
    return recommender, info

