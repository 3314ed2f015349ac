"""Item-vector files: embed a catalog once, hand the vectors to training/serving on disk.

File layout (see DESIGN.md, "item vectors"):

* ``<out>.parquet``: ``item_id`` (string), one ``list<float32>`` column per
  modality used (``text``, ``image``, ``audio``; null where the item has no
  input or its input failed) and ``fused`` (never null; all zeros for an
  item with no modality).
* ``<out stem>.manifest.json`` (``vectors.parquet`` -> ``vectors.manifest.json``):
  encoders (model cards: name, version, dim ...), fused dim and weights,
  per-item content hash per modality (sha256 of the text / file bytes),
  failures with item ids, and the sha256 of the Parquet file.

Both files are written atomically (temp file in the same directory, fsync,
``os.replace``); on any error no partial file remains and an existing output
is left untouched. Re-running on an existing output reuses vectors whose
content hash and encoder version are unchanged, so only changed items are
embedded again.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import tempfile
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from embeddings.base import MODALITIES, Modality, file_sha256
from embeddings.fusion import fuse, fused_dim

logger = logging.getLogger(__name__)

FORMAT = "tlrec/item-vectors"
FORMAT_VERSION = 1
ID_COL = "item_id"
FUSED_COL = "fused"
PATH_COLS: dict[Modality, str] = {"image": "image_path", "audio": "audio_path"}
TEXT_COLS = ("title", "description")


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


# ---------------------------------------------------------------------------
# inputs


def _validate_catalog(catalog: pl.DataFrame) -> list[str]:
    if not isinstance(catalog, pl.DataFrame):
        raise TypeError(f"catalog must be a polars DataFrame, got {type(catalog).__name__}")
    if ID_COL not in catalog.columns:
        raise ValueError(f"catalog has no column {ID_COL!r} (columns: {', '.join(catalog.columns)})")
    ids = catalog.get_column(ID_COL).cast(pl.String, strict=False)
    nulls = ids.is_null()
    if nulls.any():
        row = int(nulls.arg_max())  # first null
        raise ValueError(f"catalog row {row}, column {ID_COL!r}: item_id is null or not a string")
    dup = ids.is_duplicated()
    if dup.any():
        row = int(dup.arg_max())
        raise ValueError(f"catalog row {row}, column {ID_COL!r}: duplicate item_id {ids[row]!r}")
    return ids.to_list()


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _texts(catalog: pl.DataFrame) -> list[str | None]:
    """``"title. description"`` per row (just one part if the other is missing; None if both are)."""
    cols = {c: catalog.get_column(c).cast(pl.String, strict=False).to_list() if c in catalog.columns
            else [None] * catalog.height for c in TEXT_COLS}
    out: list[str | None] = []
    for title, desc in zip(cols["title"], cols["description"]):
        parts = [p for p in (_clean(title), _clean(desc)) if p]
        out.append(". ".join(parts) if parts else None)
    return out


def _paths(catalog: pl.DataFrame, column: str, base_dir: Path | None) -> list[Path | None]:
    if column not in catalog.columns:
        return [None] * catalog.height
    out: list[Path | None] = []
    for value in catalog.get_column(column).cast(pl.String, strict=False).to_list():
        text = _clean(value)
        if text is None:
            out.append(None)
            continue
        path = Path(text).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        out.append(path)
    return out


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _path_hash(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None  # the encoder reports the failure


# ---------------------------------------------------------------------------
# previous output (incremental re-runs)


def _previous(out_path: Path) -> ItemVectors | None:
    if not out_path.exists():
        return None
    try:
        return load_item_vectors(out_path)
    except ValueError as exc:
        logger.warning("ignoring existing %s for reuse: %s", out_path, exc)
        return None


def _reusable(prev: ItemVectors | None, modality: str, version: str, item_ids: list[str],
              hashes: list[str | None]) -> dict[int, np.ndarray]:
    """Row index -> previous vector, for items whose input and encoder are unchanged."""
    if prev is None or modality not in prev.blocks:
        return {}
    enc = prev.manifest.get("encoders", {}).get(modality, {})
    if enc.get("version") != version:
        return {}
    old_hashes = prev.manifest.get("content_hashes", {}).get(modality, {})
    old_rows = {iid: i for i, iid in enumerate(prev.item_ids)}
    block = prev.blocks[modality]
    reuse: dict[int, np.ndarray] = {}
    for i, (iid, h) in enumerate(zip(item_ids, hashes)):
        j = old_rows.get(iid)
        if h is not None and j is not None and old_hashes.get(iid) == h and not np.isnan(block[j]).any():
            reuse[i] = block[j]
    return reuse


# ---------------------------------------------------------------------------
# writing


def _list_array(mat: np.ndarray) -> Any:
    """float32 ``[n, d]`` with NaN rows -> Arrow ``large_list<float32>`` with nulls."""
    import pyarrow as pa

    n, d = mat.shape
    missing = np.isnan(mat).any(axis=1)
    values = pa.array(np.ascontiguousarray(mat[~missing], dtype=np.float32).reshape(-1), type=pa.float32())
    lengths = np.where(missing, 0, d).astype(np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), type=pa.int64())
    return pa.LargeListArray.from_arrays(offsets, values, mask=pa.array(missing, type=pa.bool_()))


def _fsync_dir(directory: Path) -> None:
    with suppress(OSError):  # not supported on every platform / filesystem
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temp_path(target: Path) -> Path:
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    with suppress(OSError):
        os.chmod(name, 0o644)  # mkstemp creates 0600; the published file should be readable like any other
    return Path(name)


def _write_outputs(out_path: Path, table: Any, manifest: dict[str, Any]) -> None:
    """Write Parquet + manifest atomically; remove temp files on any error."""
    import pyarrow.parquet as pq

    man_path = manifest_path(out_path)
    tmp_vec = tmp_man = None
    try:
        tmp_vec = _temp_path(out_path)
        pq.write_table(table, tmp_vec)
        with open(tmp_vec, "rb+") as fh:
            os.fsync(fh.fileno())
        manifest["vectors_sha256"] = file_sha256(tmp_vec)
        tmp_man = _temp_path(man_path)
        with open(tmp_man, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_vec, out_path)
        tmp_vec = None
        os.replace(tmp_man, man_path)
        tmp_man = None
        _fsync_dir(out_path.parent)
    finally:
        for tmp in (tmp_vec, tmp_man):
            if tmp is not None:
                with suppress(OSError):
                    tmp.unlink()


# ---------------------------------------------------------------------------
# public API

EncodeRunner = Callable[[str, list[Any], int, bool], np.ndarray]


def _run_in_process(name: str, inputs: list[Any], batch_size: int, progress: bool) -> np.ndarray:
    """Encode ``inputs`` with the registry's encoder ``name`` in this process."""
    from embeddings.registry import get_encoder

    return get_encoder(name).encode(inputs, batch_size=batch_size, progress=progress)



def embed_catalog(catalog: pl.DataFrame, out_path: str | Path, text: str | None = "minilm",
                  image: str | None = "efficientnet-lite0", audio: str | None = "crepe-tiny",
                  progress: bool = True, *, base_dir: str | Path | None = None,
                  weights: dict[str, float] | None = None, batch_size: int = 32,
                  reuse: bool = True, runner: EncodeRunner | None = None) -> Path:
    """Embed every catalog item and write the item-vectors Parquet + manifest.

    Args:
        catalog: columns ``item_id`` (unique, non-null), ``title``,
            ``description`` (text is ``"title. description"``), ``image_path``,
            ``audio_path`` (absolute paths, or relative to ``base_dir``; null
            means the item has no such input). Missing columns are fine.
        out_path: Parquet file to write; the manifest goes next to it.
        text, image, audio: registry names of the encoders, or ``None`` to
            skip a modality. A modality with no input in any row is skipped.
        progress: show tqdm progress bars.
        base_dir: directory that relative media paths are relative to (e.g.
            the catalog file's directory); default: the working directory.
        weights: fusion weight per modality (default equal).
        batch_size: items per encoder batch.
        reuse: reuse vectors from an existing ``out_path`` whose content hash
            and encoder version are unchanged.
        runner: runs an encoder over inputs, ``runner(name, inputs, batch_size,
            progress) -> float32 [len(inputs), dim]``; default: in this process.
            ``embeddings.batch`` passes one that runs a Ray Data job.

    Returns:
        ``out_path``. Items whose input cannot be read get a null block, a
        WARNING, and are listed under ``failures`` in the manifest.

    Raises:
        ValueError: bad catalog (names the row and column) or encoder name.
        Any error leaves no partial output behind.
    """
    from embeddings.registry import canonical_name, get_encoder, modality_of

    out_path = Path(out_path)
    if out_path.is_dir():
        raise ValueError(f"output path {out_path} is a directory; give a .parquet file path")
    if not out_path.parent.is_dir():
        raise ValueError(f"output directory {out_path.parent} does not exist")
    item_ids = _validate_catalog(catalog)
    if not item_ids:
        raise ValueError("catalog is empty: nothing to embed")
    requested: dict[Modality, str | None] = {"text": text, "image": image, "audio": audio}
    for modality, name in requested.items():
        if name is not None and modality_of(name) != modality:
            raise ValueError(f"encoder {name!r} is for {modality_of(name)}, not {modality}")

    base = Path(base_dir) if base_dir is not None else None
    inputs: dict[Modality, list[Any]] = {}
    hashes: dict[Modality, list[str | None]] = {}
    for modality in MODALITIES:
        if requested[modality] is None:
            continue
        if modality == "text":
            values: list[Any] = _texts(catalog)
            row_hashes = [_text_hash(t) if t is not None else None for t in values]
        else:
            values = _paths(catalog, PATH_COLS[modality], base)
            row_hashes = [_path_hash(p) if p is not None else None for p in values]
        if all(v is None for v in values):
            logger.info("no item has %s input; skipping the %s encoder", modality, modality)
            continue
        inputs[modality], hashes[modality] = values, row_hashes

    prev = _previous(out_path) if reuse else None
    n = len(item_ids)
    blocks: dict[str, np.ndarray] = {}
    encoders: dict[str, dict[str, Any]] = {}
    failures: dict[str, dict[str, Any]] = {}
    missing: dict[str, int] = {}
    reused: dict[str, int] = {}
    for modality, values in inputs.items():
        name = canonical_name(requested[modality])  # type: ignore[arg-type]
        encoder = get_encoder(name)
        card = encoder.card
        block = np.full((n, card.dim), np.nan, dtype=np.float32)
        old = _reusable(prev, modality, card.version, item_ids, hashes[modality])
        for i, vec in old.items():
            block[i] = vec
        todo = [i for i, v in enumerate(values) if v is not None and i not in old]
        logger.info("%s: embedding %d items with %s (%d reused, %d without input)", modality, len(todo),
                    card.name, len(old), sum(v is None for v in values))
        if todo:
            run = runner or _run_in_process
            block[todo] = run(name, [values[i] for i in todo], batch_size, progress)
        failed = [item_ids[i] for i in todo if np.isnan(block[i]).any()]
        if failed:
            logger.warning("%s: %d of %d items failed to embed (first: %s)", modality, len(failed),
                           len(todo), ", ".join(failed[:5]))
        blocks[modality] = block
        encoders[modality] = card.to_dict()
        failures[modality] = {"count": len(failed), "item_ids": failed}
        missing[modality] = sum(v is None for v in values)
        reused[modality] = len(old)

    if not blocks:
        raise ValueError("nothing to embed: every modality is disabled or has no input in the catalog")
    fused = fuse(blocks, weights)

    import pyarrow as pa

    columns = {ID_COL: pa.array(item_ids, type=pa.string())}
    columns.update({m: _list_array(b) for m, b in blocks.items()})
    columns[FUSED_COL] = _list_array(fused)
    table = pa.table(columns)
    dims = {m: int(b.shape[1]) for m, b in blocks.items()}
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "vectors_file": out_path.name,
        "n_items": n,
        "modalities": list(blocks),
        "encoders": encoders,
        "dims": dims,
        "fused_dim": fused_dim(dims),
        "fusion": {"order": list(blocks), "weights": {m: float((weights or {}).get(m, 1.0)) for m in blocks}},
        "content_hashes": {m: dict(zip(item_ids, hashes[m])) for m in blocks},
        "failures": failures,
        "missing_input": missing,
        "reused": reused,
    }
    _write_outputs(out_path, table, manifest)
    logger.info("wrote %d item vectors (fused dim %d) to %s", n, manifest["fused_dim"], out_path)
    return out_path


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _column_matrix(table: Any, name: str, dim: int | None, path: Path) -> np.ndarray:
    """Arrow list column -> float32 ``[n, dim]`` with NaN rows for nulls."""
    import pyarrow.compute as pc

    col = table.column(name).combine_chunks()
    n = len(col)
    valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    lengths = np.asarray(lengths[valid], dtype=np.int64) if n else np.zeros(0, np.int64)
    if dim is None:
        if not len(lengths):
            raise ValueError(f"{path}: column {name!r} is empty and the manifest gives no dimension")
        dim = int(lengths[0])
    if len(lengths) and not (lengths == dim).all():
        raise ValueError(f"{path}: column {name!r} has vectors of length other than {dim}")
    flat = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    out = np.full((n, dim), np.nan, dtype=np.float32)
    out[valid] = flat.reshape(-1, dim) if dim else flat.reshape(int(valid.sum()), 0)
    return out


def load_item_vectors(path: str | Path) -> ItemVectors:
    """Load an item-vectors Parquet file and its manifest.

    Returns ``ItemVectors`` (``fused`` float32 ``[n, d]``; ``blocks`` with NaN
    rows where missing). Raises ``ValueError`` with a one-line message naming
    the file if either file is missing, unreadable, inconsistent, or the
    Parquet file does not match the checksum in the manifest.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    man_path = manifest_path(path)
    if not path.is_file():
        raise ValueError(f"item vectors file {path} not found")
    if not man_path.is_file():
        raise ValueError(f"manifest {man_path} for item vectors {path} not found")
    try:
        manifest = json.loads(man_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"manifest {man_path} is not valid JSON ({_one_line(exc)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"manifest {man_path} is not a {FORMAT} manifest")
    expected_sha = manifest.get("vectors_sha256")
    if expected_sha and file_sha256(path) != expected_sha:
        raise ValueError(f"item vectors file {path} does not match the checksum in {man_path.name} "
                         "(corrupt or written by another run)")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - any Arrow/IO error means a bad file
        raise ValueError(f"item vectors file {path} is not readable Parquet ({_one_line(exc)})") from None
    modalities = list(manifest.get("modalities", []))
    needed = [ID_COL, FUSED_COL, *modalities]
    absent = [c for c in needed if c not in table.column_names]
    if absent:
        raise ValueError(f"item vectors file {path} lacks columns {absent}")
    try:
        item_ids = [str(x) for x in table.column(ID_COL).to_pylist()]
        dims = manifest.get("dims", {})
        blocks = {m: _column_matrix(table, m, dims.get(m), path) for m in modalities}
        fused = _column_matrix(table, FUSED_COL, manifest.get("fused_dim"), path)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"item vectors file {path} has malformed vector columns ({_one_line(exc)})") from None
    if np.isnan(fused).any():
        raise ValueError(f"item vectors file {path} has null or NaN fused vectors")
    return ItemVectors(item_ids=item_ids, fused=fused, blocks=blocks, manifest=manifest)
