"""FAISS index over item vectors: maximum inner product search.

Exact (``IndexFlatIP``) up to ``EXACT_MAX_ITEMS`` items. Above that, an inverted-file index
(``IndexIVFFlat``: the items in k-means cells, a query scans the ``nprobe`` cells nearest to it)
with its parameters set by one rule, not by hand per dataset:

* ``nlist = round(sqrt(n))`` cells, k-means trained on ``TRAIN_PER_CELL`` sampled items per
  cell (FAISS asks for 39 to 256);
* ``nprobe``: the smallest number of cells whose recall@10 against exact search reaches
  ``TARGET_RECALL`` on ``CALIBRATION_QUERIES`` sample queries (the model's own query vectors
  when given, else item vectors), measured at build time and stored in the index file.

Figures at a million items: ``bench/results/million.md``. Saved with
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
#: recall@10 against exact search the approximate index is calibrated to (at build time)
TARGET_RECALL = 0.97
CALIBRATION_QUERIES = 256
#: items per k-means cell sampled to train the cells
TRAIN_PER_CELL = 40


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
    def build(cls, vectors: np.ndarray, exact_max_items: int = EXACT_MAX_ITEMS,
              queries: np.ndarray | None = None) -> "VectorIndex":
        """Index float32 ``[n, d]`` vectors; row i gets id i.

        ``queries`` (float32 ``[m, d]``, optional): typical query vectors, to calibrate an
        approximate index's ``nprobe`` (see the module docstring); without them, item vectors are.
        """
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"index: expected a non-empty [n, d] matrix, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("index: vectors contain NaN or inf")
        n, d = x.shape
        if n <= exact_max_items:
            index = faiss.IndexFlatIP(d)
            index.add(x)
            logger.info("index: exact over %d items, dim %d", n, d)
            return cls(index)
        return cls(_inverted_file(x, queries))

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


def _inverted_file(x: np.ndarray, queries: np.ndarray | None) -> faiss.Index:
    """``IndexIVFFlat`` over ``x`` ``[n, d]`` with ``nlist`` and ``nprobe`` set by the module's rule."""
    n, d = x.shape
    rng = np.random.default_rng(0)
    nlist = max(1, round(np.sqrt(n)))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    train = x[np.sort(rng.choice(n, min(n, TRAIN_PER_CELL * nlist), replace=False))]
    index.train(train)
    index.add(x)
    if queries is None or len(queries) == 0:
        queries = x
    q = np.ascontiguousarray(queries[rng.choice(len(queries), min(len(queries), CALIBRATION_QUERIES),
                                                replace=False)], dtype=np.float32)
    _, truth = faiss.knn(q, x, 10, metric=faiss.METRIC_INNER_PRODUCT)  # exact, without a copy of x

    def recall_at(nprobe: int) -> float:
        index.nprobe = nprobe
        _, got = index.search(q, 10)
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), truth.tolist())]))

    # the first power of two that reaches the target, then bisect down to the smallest nprobe that does
    low, high = 0, 1
    while high < nlist and recall_at(high) < TARGET_RECALL:
        low, high = high, min(2 * high, nlist)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if recall_at(mid) >= TARGET_RECALL else (mid, high)
    recall = recall_at(high)
    logger.info("index: IVF over %d items, dim %d: %d cells, nprobe %d (recall@10 %.3f on %d sample queries)",
                n, d, nlist, index.nprobe, recall, len(q))
    return index
