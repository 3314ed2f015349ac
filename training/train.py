"""Fit a model on interactions (+ item vectors) and write its files into an artifact dir.

Layout written into ``out_dir`` (a staging directory; ``training.artifacts`` publishes it):

    model/config.json, model/weights.safetensors   the ranked model
    fallback/config.json, fallback/weights.safetensors   popularity, for unknown users
    items.json, users.json                          IdMaps (external ids, index = internal id)
    seen.safetensors                                training interactions, CSR (indptr, indices)
    training.json                                   what was fitted, how long it took
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from tlrec.embeddings.finetune import TextTopLayers
from tlrec.embeddings.registry import get_encoder
from tlrec.embeddings.text import TextEncoder
from tlrec.embeddings.vectors import ItemVectors, item_texts
from tlrec.errors import ConfigError
from tlrec.training.artifacts import ArtifactError, checked_csr, load_tensors, tensor_array
from tlrec.training.data import Columns, IdMap, InteractionData
from tlrec.training.models import NCFModel, PopularityModel, Recommender, get_model_class

logger = logging.getLogger(__name__)

MODEL_DIR = "model"
FALLBACK_DIR = "fallback"
ITEMS_FILE = "items.json"
USERS_FILE = "users.json"
SEEN_FILE = "seen.safetensors"
TRAINING_FILE = "training.json"


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
    if finetune and content is not None and isinstance(recommender, NCFModel):
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


def write_model_dir(out_dir: Path, recommender: Recommender, data: InteractionData, fit_seconds: float) -> dict[str, Any]:
    """Write a fitted model and what serving needs beside it; returns manifest fields."""
    recommender.save(out_dir / MODEL_DIR)
    PopularityModel().fit(data).save(out_dir / FALLBACK_DIR)
    data.items.save(out_dir / ITEMS_FILE)
    data.users.save(out_dir / USERS_FILE)
    save_seen(out_dir / SEEN_FILE, data.seen())
    info = {
        "model": recommender.name,
        "config": recommender.config.model_dump(mode="json"),
        "n_users": data.n_users,
        "n_items": data.n_items,
        "n_interactions": data.interactions.height,
        "fit_seconds": round(fit_seconds, 3),
    }
    (out_dir / TRAINING_FILE).write_text(json.dumps(info, indent=2))
    return info


def train_into(
    out_dir: Path,
    catalog: pl.DataFrame,
    interactions: pl.DataFrame,
    vectors: ItemVectors | None = None,
    model: str = "ncf",
    config: dict[str, Any] | None = None,
) -> tuple[Recommender, dict[str, Any]]:
    """Fit and write everything but the index into ``out_dir``; returns (model, manifest fields)."""
    start = time.perf_counter()
    recommender, data = fit_model(catalog, interactions, vectors, model, config)
    info = write_model_dir(out_dir, recommender, data, time.perf_counter() - start)
    logger.info("trained %s on %d interactions in %.1fs", model, info["n_interactions"], info["fit_seconds"])
    return recommender, info


def save_seen(path: Path, matrix: sp.csr_matrix) -> None:
    """Store a binary CSR ``[n_users, n_items]`` as safetensors (indptr, indices, shape)."""
    m = matrix.tocsr()
    save_file(
        {
            "indptr": torch.from_numpy(m.indptr.astype(np.int64)),
            "indices": torch.from_numpy(m.indices.astype(np.int64)),
            "shape": torch.tensor(m.shape, dtype=torch.int64),
        },
        path,
    )


def load_seen(path: Path) -> sp.csr_matrix:
    """Inverse of ``save_seen``: float32 CSR of ones.

    Raises ``ArtifactError`` naming ``path`` for an unreadable file, a missing tensor, a
    wrong dtype, or indices that do not fit the stored shape.
    """
    t = load_tensors(path)
    try:
        shape = tensor_array(t, "shape", "int64", (2,))
        return checked_csr(tensor_array(t, "indptr", "int64"), tensor_array(t, "indices", "int64"), None,
                           (int(shape[0]), int(shape[1])), "seen matrix")
    except ValueError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
