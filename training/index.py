"""FAISS index over item vectors: maximum inner product search.

Exact (``IndexFlatIP``) up to ``EXACT_MAX_ITEMS`` items, HNSW above that. Saved with
``faiss.write_index`` (FAISS's own binary format, no pickle). Built at training time over
a retrieval model's item vectors and written with the rest of the version
(``training.model_artifact``); searched at serving time (``serving.served_model``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import faiss
import numpy as np

from tlrec.training.artifacts import ArtifactError

logger = logging.getLogger(__name__)

EXACT_MAX_ITEMS = 200_000


class IndexFileError(ArtifactError):
    """A FAISS index file that cannot be read or does not fit the model (an ``ArtifactError``)."""


def _faiss_reason(exc: BaseException) -> str:
    """The useful end of a FAISS error (``Error in <C++ signature> at <file>:<line>: <reason>``)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if text.startswith("Error in ") and ": " in text:
        text = text.split(".cpp:", 1)[-1].split(": ", 1)[-1]
    return text[:200]


class VectorIndex:
    """Inner-product index; ``search`` returns ``(scores, ids)`` float32/int64 ``[m, k]``."""

    def __init__(self, index: faiss.Index) -> None:
        self.index = index

    @classmethod
    def build(cls, vectors: np.ndarray, exact_max_items: int = EXACT_MAX_ITEMS) -> "VectorIndex":
        """Index float32 ``[n, d]`` vectors; row i gets id i."""
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"index: expected a non-empty [n, d] matrix, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("index: vectors contain NaN or inf")
        n, d = x.shape
        if n <= exact_max_items:
            index = faiss.IndexFlatIP(d)
        else:
            index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            index.hnsw.efSearch = 128
        index.add(x)
        logger.info("index: %s over %d items, dim %d", type(index).__name__, n, d)
        return cls(index)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` by inner product for float32 ``[m, dim]`` queries; missing slots get id -1."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"index: queries have shape {q.shape}, expected [m, {self.dim}]")
        k = max(1, min(k, self.ntotal))
        scores, ids = self.index.search(q, k)
        return scores, ids.astype(np.int64)

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path) -> "VectorIndex":
        """Read an index file; ``IndexFileError`` naming it if missing, corrupt, or not an inner-product index."""
        path = Path(path)
        if not path.is_file():
            raise IndexFileError(f"{path}: index file not found")
        try:
            index = faiss.read_index(str(path))
        except Exception as exc:  # noqa: BLE001 - FAISS raises RuntimeError, SWIG may raise others: a bad file
            raise IndexFileError(f"{path}: not a readable FAISS index ({_faiss_reason(exc)})") from None
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexFileError(f"{path}: index uses metric {index.metric_type}, expected inner product")
        if index.d < 1 or index.ntotal < 0:
            raise IndexFileError(f"{path}: index of dimension {index.d} holding {index.ntotal} vectors")
        return cls(index)
