"""Item-vector files: embed a catalog once, hand the vectors to training/serving on disk.

File layout (``docs/architecture.md``, "Data flow"):

* ``<out>.parquet``: ``item_id`` (string), one ``list<float32>`` column per
  modality used (``text``, ``image``, ``audio``; null where the item has no
  input or its input failed) and ``fused`` (never null; all zeros for an
  item with no modality). Row groups hold at most ``ROW_GROUP_ROWS`` rows, so
  a reader (or an incremental re-run) can fetch part of the file.
* ``<out stem>.manifest.json`` (``vectors.parquet`` -> ``vectors.manifest.json``):
  encoders (model cards: name, version, dim ...), fused dim and weights,
  per-item content hash per modality (sha256 of the text / file bytes),
  failures with item ids (and, under ``failure_reasons``, the reason per
  item), counts of embedded / reused / missing inputs, and the sha256 of the
  Parquet file.

This module is the file contract: the names and schema above, the vector
columns' encoding, and reading a file back (:func:`load_item_vectors`). Writing
one is the embedding job, in pieces shared by its two drivers:

* ``embeddings.catalog_inputs``: the catalog columns a job reads, the encoder
  input and content hash per row.
* ``embeddings.embed_catalog``: ``embed_rows`` (embed one batch of rows, reusing
  a previous output's vectors via ``PreviousVectors``) and ``embed_catalog``,
  the in-process driver for small catalogs.
* ``embeddings.batch``: ``embed_catalog_ray``, the same job on Ray Data.
* ``embeddings.vectors_writer``: ``ManifestBuilder`` and ``VectorsFileWriter``,
  which publish both files atomically (temp file in the same directory, fsync,
  ``os.replace``), so the drivers' outputs are identical.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlrec.errors import InputError
from tlrec.files import sha256_file
from tlrec.tables import Columns

FORMAT = "tlrec/item-vectors"
FORMAT_VERSION = 1
ID_COL = Columns.ITEM
FUSED_COL = "fused"
#: Largest row group written; bounds the memory of readers that fetch part of a file.
ROW_GROUP_ROWS = 1024


@dataclass
class ItemVectors:
    """Item vectors loaded from disk.

    Attributes:
        item_ids: external ids, row order of every matrix.
        fused: float32 ``[n, d]``, rows unit length (zeros for items with no modality).
        blocks: modality -> float32 ``[n, d_m]``, NaN rows where missing/failed.
        manifest: the parsed manifest dict.
    """

    item_ids: list[str]
    fused: np.ndarray
    blocks: dict[str, np.ndarray] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def dim(self) -> int:
        """Width of the fused vectors."""
        return int(self.fused.shape[1])


def manifest_path(out_path: str | Path) -> Path:
    """Manifest next to a vectors file: ``vectors.parquet`` -> ``vectors.manifest.json``."""
    return Path(out_path).with_suffix(".manifest.json")


def error_line(exc: BaseException) -> str:
    """``"<type>: <first line of the message>"``, for one-line errors and warnings about a file."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# ---------------------------------------------------------------------------
# vector columns


def vectors_schema(modalities: list[str]) -> Any:
    """Arrow schema of a vectors file with these modality columns."""
    import pyarrow as pa

    vec = pa.large_list(pa.float32())
    return pa.schema([(ID_COL, pa.string()), *[(m, vec) for m in modalities], (FUSED_COL, vec)])


def vector_column(mat: np.ndarray) -> Any:
    """float32 ``[n, d]`` with NaN rows -> Arrow ``large_list<float32>`` with nulls."""
    import pyarrow as pa

    n, d = mat.shape
    missing = np.isnan(mat).any(axis=1)
    values = pa.array(np.ascontiguousarray(mat[~missing], dtype=np.float32).reshape(-1), type=pa.float32())
    lengths = np.where(missing, 0, d).astype(np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), type=pa.int64())
    return pa.LargeListArray.from_arrays(offsets, values, mask=pa.array(missing, type=pa.bool_()))


def column_matrix(table: Any, name: str, dim: int | None, path: Path) -> np.ndarray:
    """Arrow list column -> float32 ``[n, dim]`` with NaN rows for nulls."""
    import pyarrow.compute as pc

    col = table.column(name).combine_chunks()
    n = len(col)
    valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    lengths = np.asarray(lengths[valid], dtype=np.int64) if n else np.zeros(0, np.int64)
    if dim is None:
        if not len(lengths):
            raise InputError(f"{path}: column {name!r} is empty and the manifest gives no dimension")
        dim = int(lengths[0])
    if len(lengths) and not (lengths == dim).all():
        raise InputError(f"{path}: column {name!r} has vectors of length other than {dim}")
    flat = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    out = np.full((n, dim), np.nan, dtype=np.float32)
    out[valid] = flat.reshape(-1, dim) if dim else flat.reshape(int(valid.sum()), 0)
    return out


# ---------------------------------------------------------------------------
# reading


def read_manifest(path: Path) -> dict[str, Any]:
    """The parsed manifest of vectors file ``path``; ``ValueError`` naming the file if missing or invalid."""
    man_path = manifest_path(path)
    if not path.is_file():
        raise InputError(f"item vectors file {path} not found")
    if not man_path.is_file():
        raise InputError(f"manifest {man_path} for item vectors {path} not found")
    try:
        manifest = json.loads(man_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"manifest {man_path} is not valid JSON ({error_line(exc)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"manifest {man_path} is not a {FORMAT} manifest")
    return manifest


def check_checksum(path: Path, manifest: dict[str, Any]) -> None:
    """``ValueError`` if the vectors file does not match the sha256 its manifest records."""
    expected_sha = manifest.get("vectors_sha256")
    if expected_sha and sha256_file(path) != expected_sha:
        raise InputError(f"item vectors file {path} does not match the checksum in {manifest_path(path).name} "
                         "(corrupt or written by another run)")


def load_item_vectors(path: str | Path) -> ItemVectors:
    """Load an item-vectors Parquet file and its manifest.

    Returns ``ItemVectors`` (``fused`` float32 ``[n, d]``; ``blocks`` with NaN
    rows where missing). Raises ``ValueError`` with a one-line message naming
    the file if either file is missing, unreadable, inconsistent, or the
    Parquet file does not match the checksum in the manifest.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    manifest = read_manifest(path)
    check_checksum(path, manifest)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - any Arrow/IO error means a bad file
        raise InputError(f"item vectors file {path} is not readable Parquet ({error_line(exc)})") from None
    modalities = list(manifest.get("modalities", []))
    needed = [ID_COL, FUSED_COL, *modalities]
    absent = [c for c in needed if c not in table.column_names]
    if absent:
        raise InputError(f"item vectors file {path} lacks columns {absent}")
    try:
        item_ids = [str(x) for x in table.column(ID_COL).to_pylist()]
        dims = manifest.get("dims", {})
        blocks = {m: column_matrix(table, m, dims.get(m), path) for m in modalities}
        fused = column_matrix(table, FUSED_COL, manifest.get("fused_dim"), path)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"item vectors file {path} has malformed vector columns ({error_line(exc)})") from None
    if np.isnan(fused).any():
        raise InputError(f"item vectors file {path} has null or NaN fused vectors")
    return ItemVectors(item_ids=item_ids, fused=fused, blocks=blocks, manifest=manifest)
