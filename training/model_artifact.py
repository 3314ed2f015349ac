"""What one model version holds on disk: the file names, writing a complete set, reading it back.

The layout inside a version directory (published, listed and checksummed by
``training.artifacts``)::

    model/config.json, model/weights.safetensors        the served model
    fallback/config.json, fallback/weights.safetensors  popularity, for unknown users
    items.json, users.json                              id maps (external ids, index = internal id)
    seen.safetensors                                    training interactions, CSR (indptr, indices, shape)
    index.faiss                                         FAISS index over the item vectors (retrieval models)
    training.json                                       what was fitted, how long it took

:class:`ModelArtifact` is the one owner of these names. :meth:`ModelArtifact.build` assembles
everything a fitted model is served with (fallback, id maps, seen matrix and, for a model with
the retrieval capability, the FAISS index over its item vectors); :meth:`~ModelArtifact.write`
writes the complete set into a staging directory; :meth:`~ModelArtifact.publish` does both
steps of a publish (``training.artifacts.staged_version``); :meth:`~ModelArtifact.read` reads
a verified version back, every file parsed with its shapes and indices checked and the parts
checked against each other, raising ``ArtifactError`` (one line ``<file>: <what is wrong>``).
``training.json`` is listed and verified, not read back (the manifest carries the same fields).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.torch import save_file

from tlrec.files import json_bytes
from tlrec.tables import DataError
from tlrec.training.artifacts import (
    ArtifactError,
    VerifiedVersion,
    checked_csr,
    load_tensors,
    new_version,
    read_json,
    staged_version,
    tensor_array,
)
from tlrec.training.id_map import IdMap
from tlrec.training.index import CALIBRATION_QUERIES, EXACT_MAX_ITEMS, VectorIndex
from tlrec.training.interaction_data import InteractionData
from tlrec.training.models import PopularityModel, Recommender, get_model_class
from tlrec.training.models.base import CONFIG_FILE

logger = logging.getLogger(__name__)

__all__ = ["FALLBACK_DIR", "INDEX_FILE", "ITEMS_FILE", "MODEL_DIR", "ModelArtifact", "SEEN_FILE", "TRAINING_FILE",
           "USERS_FILE", "read_id_map"]

MODEL_DIR = "model"
FALLBACK_DIR = "fallback"
ITEMS_FILE = "items.json"
USERS_FILE = "users.json"
SEEN_FILE = "seen.safetensors"
INDEX_FILE = "index.faiss"
TRAINING_FILE = "training.json"


@dataclass
class ModelArtifact:
    """A fitted model and everything it is served with; one version directory on disk."""

    model: Recommender
    fallback: PopularityModel
    items: IdMap
    users: IdMap
    seen: sp.csr_matrix  # binary [n_users, n_items]: the training interactions
    index: VectorIndex | None = None  # over ``model.item_vectors()``; models with the retrieval capability
    training: dict[str, Any] = field(default_factory=dict)  # what ``training.json`` holds

    @classmethod
    def build(cls, model: Recommender, data: InteractionData, fit_seconds: float = 0.0) -> ModelArtifact:
        """The complete set for ``model`` fitted on ``data``: popularity fallback, id maps, seen items, index."""
        index = VectorIndex.build(model.item_vectors(), queries=_sample_queries(model)) if model.retrieval else None
        training: dict[str, Any] = {
            "model": model.name,
            "config": model.config.model_dump(mode="json"),
            "n_users": data.n_users,
            "n_items": data.n_items,
            "n_interactions": data.interactions.height,
            "fit_seconds": round(fit_seconds, 3),
        }
        if model.validation_ndcg_ is not None:
            training["validation_ndcg@10"] = round(model.validation_ndcg_, 5)
        if index is not None:
            training["index"] = {"type": type(index.index).__name__, "dim": index.dim, "ntotal": index.ntotal}
        return cls(model, PopularityModel().fit(data), data.items, data.users, data.seen(), index, training)

    # ------------------------------------------------------------------ writing
    def write(self, directory: Path) -> dict[str, Any]:
        """Write every file of the layout into ``directory`` (a staging dir); returns the manifest fields."""
        directory = Path(directory)
        self.model.save(directory / MODEL_DIR)
        self.fallback.save(directory / FALLBACK_DIR)
        self.items.save(directory / ITEMS_FILE)
        self.users.save(directory / USERS_FILE)
        _save_seen(directory / SEEN_FILE, self.seen)
        if self.index is not None:
            self.index.save(directory / INDEX_FILE)
        (directory / TRAINING_FILE).write_bytes(json_bytes(self.training))
        return dict(self.training)

    def publish(self, root: Path, manifest: dict[str, Any] | None = None, version: str | None = None) -> Path:
        """Write and atomically publish a new version under ``root`` (``root/current`` names it); returns its dir.

        ``manifest``: extra manifest keys (the training fields are added to them).
        """
        version = version if version is not None else new_version()
        doc = dict(manifest or {})
        with staged_version(Path(root), version=version, manifest=doc) as stage:
            doc.update(self.write(stage))
        return Path(root) / version

    # ------------------------------------------------------------------ reading
    @classmethod
    def read(cls, version: VerifiedVersion) -> ModelArtifact:
        """Read a verified version (``training.artifacts.open_version``); every part checked.

        Each file is taken through ``version`` (listed in the manifest, unchanged since it was
        hashed) and parsed with its dtypes, shapes and indices checked; then the parts must
        agree with each other (model, fallback, id maps, seen matrix, index). Raises
        ``ArtifactError``: one line ``<file>: <what is wrong>``.
        """
        version_dir = version.path
        if (task := version.manifest.get("task", "recommend")) not in ("recommend", "next-item"):
            raise ArtifactError(f"{version_dir}: holds a {task!r} model, not a recommender (`tlrec predict` "
                                "answers it)")
        config_path = version.file(MODEL_DIR, CONFIG_FILE)
        meta = read_json(config_path)
        name = meta.get("model") if isinstance(meta, dict) else None
        try:
            model_class = get_model_class(str(name))
        except ValueError as exc:
            raise ArtifactError(f"{config_path}: {exc}") from None
        model = model_class.load(version_dir / MODEL_DIR, version)
        fallback = PopularityModel.load(version_dir / FALLBACK_DIR, version)
        items = read_id_map(version.file(ITEMS_FILE))
        users = read_id_map(version.file(USERS_FILE))
        seen = _load_seen(version.file(SEEN_FILE))
        if model.n_items != len(items):
            raise ArtifactError(f"{version_dir / ITEMS_FILE}: {len(items)} items, but {config_path} says "
                                f"{model.n_items}")
        if model.n_users != len(users):
            raise ArtifactError(f"{version_dir / USERS_FILE}: {len(users)} users, but {config_path} says "
                                f"{model.n_users}")
        if fallback.n_items != len(items):
            raise ArtifactError(f"{version_dir / FALLBACK_DIR / CONFIG_FILE}: fallback over {fallback.n_items} "
                                f"items, but {ITEMS_FILE} holds {len(items)}")
        if seen.shape != (len(users), len(items)):
            raise ArtifactError(f"{version_dir / SEEN_FILE}: shape {list(seen.shape)}, expected "
                                f"[{len(users)}, {len(items)}] (users x items)")
        index = None
        if model.retrieval:
            index = VectorIndex.load(version.file(INDEX_FILE))
            dim = model.item_vectors().shape[1]
            if index.dim != dim or index.ntotal != model.n_items:
                raise ArtifactError(f"{version_dir / INDEX_FILE}: index holds {index.ntotal} x {index.dim}, "
                                    f"model expects {model.n_items} x {dim}")
        return cls(model, fallback, items, users, seen, index)


def _sample_queries(model: Recommender) -> np.ndarray | None:
    """Query vectors of up to ``CALIBRATION_QUERIES`` users (seed 0) that calibrate an approximate index;
    None when the index will be exact (or the model has no users)."""
    if model.n_items <= EXACT_MAX_ITEMS or model.n_users == 0:
        return None
    users = np.random.default_rng(0).choice(model.n_users, min(model.n_users, CALIBRATION_QUERIES), replace=False)
    return model.query_vectors(np.sort(users))


def read_id_map(path: Path) -> IdMap:
    """An artifact's id map; ``ArtifactError`` naming the file if it is not a JSON list of unique strings."""
    try:
        return IdMap.load(path)
    except DataError as exc:
        raise ArtifactError(f"{path}: {str(exc).removeprefix(f'{path.name}: ')}") from None


def _save_seen(path: Path, matrix: sp.csr_matrix) -> None:
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


def _load_seen(path: Path) -> sp.csr_matrix:
    """Inverse of ``_save_seen``: float32 CSR of ones.

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
