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

from tlrec.embeddings.catalog_inputs import item_texts
from tlrec.embeddings.finetune import TextTopLayers
from tlrec.embeddings.registry import get_encoder
from tlrec.embeddings.text import TextEncoder
from tlrec.embeddings.vectors import ItemVectors
from tlrec.errors import ConfigError, UsageError
from tlrec.ray_cluster import TaskRunner, in_process
from tlrec.tables import Columns
from tlrec.training.id_map import IdMap
from tlrec.training.interaction_data import InteractionData
from tlrec.training.model_artifact import ModelArtifact
from tlrec.training.models import Recommender, build_model
from tlrec.training.selection import (
    AUTO,
    TASKS,
    Selection,
    candidate_configs,
    check_task,
    select_model,
    task_split,
)

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


def fit_model(
    catalog: pl.DataFrame,
    interactions: pl.DataFrame,
    vectors: ItemVectors | None = None,
    model: str = AUTO,
    config: dict[str, Any] | None = None,
    keep_candidates: bool = False,
    task: str = "recommend",
    run: TaskRunner = in_process,
) -> tuple[Recommender, InteractionData, Selection | None]:
    """Fit ``model`` on validated frames (``auto``: choose one by validation, ``training.selection``).

    ``task`` (``selection.TASKS``) sets the candidates of ``auto`` and how validation holds
    events out (``next-item``: each user's last event), for a named model too.
    Returns the fitted model, its indexed data and, for ``auto``, how it was chosen
    (``keep_candidates``: with every tuned candidate, see ``select_model``; ``run``: how its
    candidates are tuned, here or as Ray tasks).
    """
    items = IdMap(catalog[Columns.ITEM].to_list())
    data = InteractionData.build(interactions, items)
    if model == AUTO:
        check_model_choice(model, config, task)
        selection = select_model(data, align_vectors(items, vectors) if vectors is not None else None, config,
                                 keep_candidates=keep_candidates, task=task, run=run)
        return selection.model, data, selection
    recommender = build_model(model, config)
    content = align_vectors(items, vectors) if vectors is not None and recommender.wants_item_vectors() else None
    finetune = int(getattr(recommender.config, "finetune_layers", 0) or 0)
    if finetune and content is not None and recommender.finetunes_text:
        assert vectors is not None
        recommender.set_text_finetuning(*text_finetuning(catalog, vectors, finetune))
    split = task_split(data, task) if task != "recommend" and recommender.chooses_on_validation() else None
    recommender.fit(data, content, validation=split)
    return recommender, data, None


def check_model_choice(model: str, config: dict[str, Any] | None, task: str = "recommend") -> bool:
    """Fail fast on a bad task, model name or config (one line); returns whether the fit uses item vectors."""
    check_task(task)
    if model == AUTO:
        if any(key.split(".")[-1] == "finetune_layers" and value for key, value in (config or {}).items()):
            raise UsageError("--finetune-layers fine-tunes NCF's text encoder: use it with --model ncf")
        for name, cfg in candidate_configs(config, TASKS[task][0]).items():
            build_model(name, cfg)
        return True
    return build_model(model, config).wants_item_vectors()


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
    model: str = AUTO,
    config: dict[str, Any] | None = None,
    task: str = "recommend",
    run: TaskRunner = in_process,
) -> tuple[Recommender, dict[str, Any]]:
    """Fit and write the complete version (``ModelArtifact``) into ``out_dir``; returns (model, manifest fields)."""
    start = time.perf_counter()
    recommender, data, selection = fit_model(catalog, interactions, vectors, model, config, task=task, run=run)
    artifact = ModelArtifact.build(recommender, data, time.perf_counter() - start)
    artifact.training["task"] = task
    if selection is not None:
        artifact.training["selection"] = selection.to_dict()
    info = artifact.write(out_dir)
    logger.info("trained %s on %d interactions in %.1fs", recommender.name, info["n_interactions"],
                info["fit_seconds"])
    return recommender, info
