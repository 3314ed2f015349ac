"""Item-vector files: embed a catalog once, hand the vectors to training/serving on disk.

File layout (see DESIGN.md, "item vectors"):

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

Both files are written atomically (temp file in the same directory, fsync,
``os.replace``); on any error no partial file remains and an existing output
is left untouched. Re-running on an existing output reuses vectors whose
content hash and encoder version are unchanged, so only changed items are
embedded again.

Two drivers share the pieces below: :func:`embed_catalog` (in process, for
small catalogs) and ``embeddings.batch.embed_catalog_ray`` (a Ray Data job).
Both run :func:`embed_rows` on batches of catalog rows, look previous vectors
up with :class:`PreviousVectors`, and write through :class:`VectorsFileWriter`
with a manifest from :class:`ManifestBuilder`, so their outputs are identical.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tlrec.embeddings.base import MODALITIES, Encoder, Modality
from tlrec.files import atomic_path, json_bytes, sha256_file
from tlrec.embeddings.fusion import fuse, fused_dim
from tlrec.errors import ConfigError, InputError, UsageError

logger = logging.getLogger(__name__)

FORMAT = "tlrec/item-vectors"
FORMAT_VERSION = 1
ID_COL = "item_id"
FUSED_COL = "fused"
PATH_COLS: dict[Modality, str] = {"image": "image_path", "audio": "audio_path"}
TEXT_COLS = ("title", "description")
#: Catalog columns the embedding job reads (any others are metadata and ignored).
CATALOG_COLS = (ID_COL, *TEXT_COLS, *PATH_COLS.values())
#: Largest row group written; bounds the memory of readers that fetch part of a file.
ROW_GROUP_ROWS = 1024

# Bookkeeping columns of an embedded batch (see ``embed_rows``); never written to the vectors file.
NO_INPUT, EMBEDDED, REUSED, FAILED = 0, 1, 2, 3


def hash_col(modality: str) -> str:
    return f"__hash_{modality}"


def state_col(modality: str) -> str:
    return f"__state_{modality}"


def error_col(modality: str) -> str:
    return f"__error_{modality}"


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


def check_out_path(out_path: str | Path) -> Path:
    """The output path as a ``Path``; ``ValueError`` if it is a directory or its folder is missing."""
    out_path = Path(out_path)
    if out_path.is_dir():
        raise UsageError(f"output path {out_path} is a directory; give a .parquet file path")
    if not out_path.parent.is_dir():
        raise UsageError(f"output directory {out_path.parent} does not exist")
    return out_path


def resolve_encoders(text: str | None, image: str | None, audio: str | None) -> dict[Modality, str]:
    """Modality -> canonical registry name for the requested encoders (``None`` = skip).

    Raises ``ValueError`` for unknown names (listing the allowed ones) or an
    encoder given for the wrong modality. Loads no model.
    """
    from tlrec.embeddings.registry import canonical_name, modality_of

    requested: dict[Modality, str | None] = {"text": text, "image": image, "audio": audio}
    names: dict[Modality, str] = {}
    for modality, name in requested.items():
        if name is None:
            continue
        if modality_of(name) != modality:
            raise ConfigError(f"encoder {name!r} is for {modality_of(name)}, not {modality}")
        names[modality] = canonical_name(name)
    return names


def _validate_catalog(catalog: pl.DataFrame) -> list[str]:
    if not isinstance(catalog, pl.DataFrame):
        raise TypeError(f"catalog must be a polars DataFrame, got {type(catalog).__name__}")
    if ID_COL not in catalog.columns:
        raise InputError(f"catalog has no column {ID_COL!r} (columns: {', '.join(catalog.columns)})")
    ids = catalog.get_column(ID_COL).cast(pl.String, strict=False)
    nulls = ids.is_null()
    if nulls.any():
        row = int(nulls.arg_max())  # first null
        raise InputError(f"catalog row {row}, column {ID_COL!r}: item_id is null or not a string")
    dup = ids.is_duplicated()
    if dup.any():
        row = int(dup.arg_max())
        raise InputError(f"catalog row {row}, column {ID_COL!r}: duplicate item_id {ids[row]!r}")
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


def item_texts(catalog: pl.DataFrame) -> list[str | None]:
    """The text the embedding job encodes for each catalog row: ``"title. description"`` (None: no text)."""
    return _texts(catalog)


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
        return sha256_file(path)
    except OSError:
        return None  # the encoder reports the failure


def _inputs(rows: pl.DataFrame, modality: Modality, base_dir: Path | None) -> list[Any]:
    """The encoder input per row for ``modality`` (None where the row has none)."""
    return _texts(rows) if modality == "text" else _paths(rows, PATH_COLS[modality], base_dir)


def has_input(rows: pl.DataFrame, modality: Modality) -> bool:
    """Whether any row has an input for ``modality`` (non-empty text / path)."""
    return any(v is not None for v in _inputs(rows, modality, None))


# ---------------------------------------------------------------------------
# previous output (incremental re-runs)


class PreviousVectors:
    """Index of an existing vectors file, to reuse vectors whose input is unchanged.

    Holds the item ids, their row groups, the per-item content hashes and the
    encoder versions from the manifest; vectors are read from the Parquet file
    only when asked for, one row group at a time (a small cache keeps the last
    few). Picklable (the open file and caches are not sent), so a Ray job can
    ship one index to all its actors.
    """

    _CACHE_SIZE = 4

    def __init__(self, path: Path, manifest: dict[str, Any], item_ids: list[str], group_rows: list[int]) -> None:
        self.path = Path(path)
        self.versions = {m: e.get("version") for m, e in manifest.get("encoders", {}).items()}
        self.dims = {m: int(d) for m, d in manifest.get("dims", {}).items()}
        self.modalities = list(manifest.get("modalities", []))
        self.hashes: dict[str, dict[str, str | None]] = {
            m: dict(manifest.get("content_hashes", {}).get(m, {})) for m in self.modalities}
        self.item_ids = item_ids
        self.group_starts = np.concatenate([[0], np.cumsum(group_rows)]).astype(np.int64)
        self._local()

    def _local(self) -> None:
        self._row_of: dict[str, int] | None = None
        self._file: Any = None
        self._cache: dict[tuple[int, str], np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_row_of", "_file", "_cache")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local()

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def open(cls, out_path: str | Path) -> PreviousVectors | None:
        """Index ``out_path`` if it is a valid vectors file; ``None`` (with a WARNING) otherwise."""
        path = Path(out_path)
        if not path.exists():
            return None
        try:
            return cls._open(path)
        except Exception as exc:  # noqa: BLE001 - any problem means: embed everything again
            logger.warning("ignoring existing %s for reuse: %s", path, _one_line(exc))
            return None

    @classmethod
    def _open(cls, path: Path) -> PreviousVectors:
        import pyarrow.parquet as pq

        manifest = _read_manifest(path)
        _check_checksum(path, manifest)
        pf = pq.ParquetFile(path)
        absent = [c for c in (ID_COL, *manifest.get("modalities", [])) if c not in pf.schema_arrow.names]
        if absent:
            raise ValueError(f"item vectors file {path} lacks columns {absent}")
        ids: list[str] = []
        rows: list[int] = []
        for g in range(pf.num_row_groups):
            col = pf.read_row_group(g, columns=[ID_COL]).column(ID_COL)
            ids.extend(str(x) for x in col.to_pylist())
            rows.append(len(col))
        return cls(path, manifest, ids, rows)

    def lookup(self, modality: str, version: str, item_ids: list[str],
               hashes: list[str | None]) -> dict[int, np.ndarray]:
        """Position in ``item_ids`` -> previous vector, for items whose hash and encoder version match.

        Items whose previous vector is null (no input or failed then) are not
        returned, so they are embedded again.
        """
        if modality not in self.modalities or self.versions.get(modality) != version:
            return {}
        old_hashes = self.hashes.get(modality, {})
        if self._row_of is None:
            self._row_of = {iid: i for i, iid in enumerate(self.item_ids)}
        wanted: dict[int, list[tuple[int, int]]] = {}
        for i, (iid, h) in enumerate(zip(item_ids, hashes)):
            row = self._row_of.get(iid)
            if h is None or row is None or old_hashes.get(iid) != h:
                continue
            group = int(np.searchsorted(self.group_starts, row, side="right") - 1)
            wanted.setdefault(group, []).append((i, row - int(self.group_starts[group])))
        out: dict[int, np.ndarray] = {}
        for group, pairs in wanted.items():
            block = self._group_block(group, modality)
            for i, offset in pairs:
                vec = block[offset]
                if not np.isnan(vec).any():
                    out[i] = vec
        return out

    def _group_block(self, group: int, modality: str) -> np.ndarray:
        import pyarrow.parquet as pq

        key = (group, modality)
        if key not in self._cache:
            if self._file is None:
                self._file = pq.ParquetFile(self.path)
            table = self._file.read_row_group(group, columns=[modality])
            if len(self._cache) >= self._CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = _column_matrix(table, modality, self.dims.get(modality), self.path)
        return self._cache[key]


# ---------------------------------------------------------------------------
# embedding one batch of rows (shared by the in-process and the Ray paths)


@contextmanager
def _captured_warnings() -> Iterator[list[str]]:
    """Collect WARNING messages logged under ``embeddings`` (encoders name the input and the reason)."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if len(messages) < 10_000:
                with suppress(Exception):
                    messages.append(record.getMessage())

    handler = _Collect(level=logging.WARNING)
    root = logging.getLogger("tlrec.embeddings")
    root.addHandler(handler)
    try:
        yield messages
    finally:
        root.removeHandler(handler)


def _reason(item: Any, messages: list[str]) -> str:
    name = str(item)
    for message in messages:
        if name in message:
            return message
    return "the encoder returned no vector (unreadable or empty input)"


def embed_rows(rows: pl.DataFrame, encoders: Mapping[Modality, Encoder], *, base_dir: str | Path | None = None,
               batch_size: int = 32, weights: dict[str, float] | None = None,
               previous: PreviousVectors | None = None, progress: bool = False) -> Any:
    """Embed one batch of catalog rows: the unit of work of both embedding drivers.

    Args:
        rows: catalog rows (``item_id``, ``title``, ``description``,
            ``image_path``, ``audio_path``; missing columns mean no input).
        encoders: modality -> encoder, for the modalities of the output (in
            ``MODALITIES`` order); each row gets a vector per modality (null
            without input or on failure) and a fused vector.
        base_dir: directory relative media paths are relative to.
        batch_size: items per encoder forward pass.
        weights: fusion weights (fusion is per row, so batches fuse exactly
            as a whole catalog would).
        previous: reuse vectors from a previous output whose content hash and
            encoder version match; only the other rows are encoded.
        progress: encoder progress bars.

    Returns:
        ``pyarrow.Table``: ``item_id``, one ``large_list<float32>`` column per
        modality, ``fused``, and bookkeeping columns per modality
        (``hash_col``: content hash, ``state_col``: ``NO_INPUT`` /
        ``EMBEDDED`` / ``REUSED`` / ``FAILED``, ``error_col``: failure reason)
        that :class:`ManifestBuilder` turns into the manifest.
    """
    import pyarrow as pa

    base = Path(base_dir) if base_dir is not None else None
    item_ids = rows.get_column(ID_COL).cast(pl.String, strict=False).to_list()
    n = len(item_ids)
    blocks: dict[str, np.ndarray] = {}
    extra: dict[str, Any] = {}
    for modality in MODALITIES:
        if modality not in encoders:
            continue
        encoder = encoders[modality]
        card = encoder.card
        values = _inputs(rows, modality, base)
        if modality == "text":
            hashes = [_text_hash(t) if t is not None else None for t in values]
        else:
            hashes = [_path_hash(p) if p is not None else None for p in values]
        block = np.full((n, card.dim), np.nan, dtype=np.float32)
        old = previous.lookup(modality, card.version, item_ids, hashes) if previous is not None else {}
        for i, vec in old.items():
            block[i] = vec
        todo = [i for i, v in enumerate(values) if v is not None and i not in old]
        state = np.array([NO_INPUT if v is None else REUSED if i in old else EMBEDDED
                          for i, v in enumerate(values)], dtype=np.int8)
        errors: list[str | None] = [None] * n
        logger.debug("%s: embedding %d of %d rows with %s (%d reused)", modality, len(todo), n, card.name,
                     len(old))
        if todo:
            with _captured_warnings() as messages:
                block[todo] = encoder.encode([values[i] for i in todo], batch_size=batch_size, progress=progress)
            for i in todo:
                if np.isnan(block[i]).any():
                    state[i] = FAILED
                    errors[i] = _reason(values[i], messages)
        blocks[modality] = block
        extra[hash_col(modality)] = pa.array(hashes, type=pa.string())
        extra[state_col(modality)] = pa.array(state, type=pa.int8())
        extra[error_col(modality)] = pa.array(errors, type=pa.string())
    if not blocks:
        raise ValueError("embed_rows needs at least one encoder")
    fused = fuse(blocks, weights)
    columns: dict[str, Any] = {ID_COL: pa.array(item_ids, type=pa.string())}
    columns.update({m: _list_array(b) for m, b in blocks.items()})
    columns[FUSED_COL] = _list_array(fused)
    columns.update(extra)
    return pa.table(columns)


# ---------------------------------------------------------------------------
# manifest + writing


def vectors_schema(modalities: list[str]) -> Any:
    """Arrow schema of a vectors file with these modality columns."""
    import pyarrow as pa

    vec = pa.large_list(pa.float32())
    return pa.schema([(ID_COL, pa.string()), *[(m, vec) for m in modalities], (FUSED_COL, vec)])


class ManifestBuilder:
    """Accumulates the manifest's per-item parts from embedded batches, in output order."""

    def __init__(self, modalities: list[str]) -> None:
        self.modalities = list(modalities)
        self.n_items = 0
        self.hashes: dict[str, dict[str, str | None]] = {m: {} for m in self.modalities}
        self.failed: dict[str, dict[str, str]] = {m: {} for m in self.modalities}
        self.counts: dict[str, dict[int, int]] = {m: dict.fromkeys((NO_INPUT, EMBEDDED, REUSED, FAILED), 0)
                                                  for m in self.modalities}

    def add(self, batch: Any) -> Any:
        """Record a batch from ``embed_rows``; returns its vector columns (the vectors-file schema)."""
        ids = [str(x) for x in batch.column(ID_COL).to_pylist()]
        for m in self.modalities:
            self.hashes[m].update(zip(ids, batch.column(hash_col(m)).to_pylist()))
            states = np.asarray(batch.column(state_col(m)).to_numpy(zero_copy_only=False), dtype=np.int8)
            for code in self.counts[m]:
                self.counts[m][code] += int((states == code).sum())
            if (states == FAILED).any():
                errors = batch.column(error_col(m)).to_pylist()
                for j in np.flatnonzero(states == FAILED):
                    self.failed[m][ids[j]] = errors[j] or "failed"
        self.n_items += len(ids)
        return batch.select([ID_COL, *self.modalities, FUSED_COL])

    def log_summary(self) -> None:
        """One INFO line with the counts per modality, and a WARNING per modality with failures."""
        parts = [f"{m}: {c[EMBEDDED] + c[FAILED]} embedded ({c[FAILED]} failed), {c[REUSED]} reused, "
                 f"{c[NO_INPUT]} without input" for m, c in self.counts.items()]
        logger.info("%d items; %s", self.n_items, "; ".join(parts))
        for m, failed in self.failed.items():
            if failed:
                total = self.counts[m][EMBEDDED] + self.counts[m][FAILED]
                logger.warning("%s: %d of %d items failed to embed (first: %s)", m, len(failed), total,
                               ", ".join(list(failed)[:5]))

    def manifest(self, out_path: Path, cards: Mapping[str, dict[str, Any]],
                 weights: dict[str, float] | None) -> dict[str, Any]:
        """The manifest dict (without ``vectors_sha256``, which the writer adds)."""
        dims = {m: int(cards[m]["dim"]) for m in self.modalities}
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "vectors_file": Path(out_path).name,
            "n_items": self.n_items,
            "modalities": list(self.modalities),
            "encoders": {m: dict(cards[m]) for m in self.modalities},
            "dims": dims,
            "fused_dim": fused_dim(dims),
            "fusion": {"order": list(self.modalities),
                       "weights": {m: float((weights or {}).get(m, 1.0)) for m in self.modalities}},
            "content_hashes": self.hashes,
            "failures": {m: {"count": len(f), "item_ids": list(f)} for m, f in self.failed.items()},
            "failure_reasons": {m: dict(f) for m, f in self.failed.items()},
            "missing_input": {m: c[NO_INPUT] for m, c in self.counts.items()},
            "embedded": {m: c[EMBEDDED] + c[FAILED] for m, c in self.counts.items()},
            "reused": {m: c[REUSED] for m, c in self.counts.items()},
        }


def _list_array(mat: np.ndarray) -> Any:
    """float32 ``[n, d]`` with NaN rows -> Arrow ``large_list<float32>`` with nulls."""
    import pyarrow as pa

    n, d = mat.shape
    missing = np.isnan(mat).any(axis=1)
    values = pa.array(np.ascontiguousarray(mat[~missing], dtype=np.float32).reshape(-1), type=pa.float32())
    lengths = np.where(missing, 0, d).astype(np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), type=pa.int64())
    return pa.LargeListArray.from_arrays(offsets, values, mask=pa.array(missing, type=pa.bool_()))


class VectorsFileWriter:
    """Stream tables into a vectors file, row group by row group, and publish it atomically.

    Use as a context manager: ``write()`` any number of tables (vectors-file
    columns), then ``commit(manifest)``. Rows go to a temp file next to
    ``out_path``; ``commit`` fsyncs it, records its sha256 in the manifest,
    writes the manifest the same way and renames both into place. Leaving the
    block without ``commit`` (or any error) removes the temp files and keeps
    an existing output untouched. Memory: one table at a time.
    """

    def __init__(self, out_path: str | Path, modalities: list[str]) -> None:
        self.out_path = Path(out_path)
        self.schema = vectors_schema(modalities)
        self.rows = 0
        self._publish: ExitStack | None = None
        self._tmp: Path | None = None
        self._writer: Any = None

    def __enter__(self) -> VectorsFileWriter:
        import pyarrow.parquet as pq

        self._publish = ExitStack()
        self._tmp = self._publish.enter_context(atomic_path(self.out_path))
        try:
            self._writer = pq.ParquetWriter(self._tmp, self.schema)
        except BaseException:
            self.__exit__()
            raise
        return self

    def write(self, table: Any) -> None:
        """Append ``table`` (its vectors-file columns; extra columns are dropped)."""
        if table.num_rows == 0:
            return
        table = table.select(self.schema.names).cast(self.schema)
        self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.rows += table.num_rows

    def commit(self, manifest: dict[str, Any]) -> None:
        """Close the Parquet file, then publish it and its manifest (the manifest last)."""
        assert self._publish is not None and self._tmp is not None, "commit() outside the with-block"
        self._writer.close()
        self._writer = None
        manifest["vectors_sha256"] = sha256_file(self._tmp)
        with atomic_path(manifest_path(self.out_path)) as tmp_manifest:
            tmp_manifest.write_bytes(json_bytes(manifest))
            publish, self._publish = self._publish, None
            publish.close()  # the vectors file goes into place just before its manifest

    def __exit__(self, *exc: Any) -> None:
        if self._writer is not None:
            with suppress(Exception):
                self._writer.close()
            self._writer = None
        if self._publish is not None:  # not committed: the temporary file is removed
            publish, self._publish = self._publish, None
            publish.__exit__(RuntimeError, RuntimeError("vectors file not committed"), None)


# ---------------------------------------------------------------------------
# public API

EncodeRunner = Callable[[str, list[Any], int, bool], np.ndarray]


class _RunnerEncoder:
    """An encoder whose ``encode`` is delegated to an ``EncodeRunner``."""

    def __init__(self, name: str, runner: EncodeRunner) -> None:
        from tlrec.embeddings.registry import get_encoder

        self.name, self.runner = name, runner
        self.card = get_encoder(name).card

    def encode(self, inputs: list[Any], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        return self.runner(self.name, list(inputs), batch_size, progress)


def embed_catalog(catalog: pl.DataFrame, out_path: str | Path, text: str | None = "minilm",
                  image: str | None = "efficientnet-lite0", audio: str | None = "crepe-tiny",
                  progress: bool = True, *, base_dir: str | Path | None = None,
                  weights: dict[str, float] | None = None, batch_size: int = 32,
                  reuse: bool = True, runner: EncodeRunner | None = None) -> Path:
    """Embed every catalog item in this process and write the item-vectors Parquet + manifest.

    For large catalogs use ``embeddings.batch.embed_catalog_ray`` (same output,
    streamed through a Ray Data job with bounded memory).

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
            progress) -> float32 [len(inputs), dim]``; default: the registry's
            encoder in this process.

    Returns:
        ``out_path``. Items whose input cannot be read get a null block, a
        WARNING, and are listed under ``failures`` (reasons under
        ``failure_reasons``) in the manifest.

    Raises:
        ValueError: bad catalog (names the row and column) or encoder name.
        Any error leaves no partial output behind.
    """
    from tlrec.embeddings.registry import get_encoder

    out_path = check_out_path(out_path)
    _validate_catalog(catalog)
    if catalog.height == 0:
        raise InputError("catalog is empty: nothing to embed")
    names = resolve_encoders(text, image, audio)
    active: list[Modality] = []
    for modality in names:
        if has_input(catalog, modality):
            active.append(modality)
        else:
            logger.info("no item has %s input; skipping the %s encoder", modality, modality)
    if not active:
        raise InputError("nothing to embed: every modality is disabled or has no input in the catalog")

    encoders: dict[Modality, Any] = {
        m: _RunnerEncoder(names[m], runner) if runner is not None else get_encoder(names[m]) for m in active}
    previous = PreviousVectors.open(out_path) if reuse else None
    batch = embed_rows(catalog, encoders, base_dir=base_dir, batch_size=batch_size, weights=weights,
                       previous=previous, progress=progress)
    builder = ManifestBuilder(active)
    vectors = builder.add(batch)
    manifest = builder.manifest(out_path, {m: e.card.to_dict() for m, e in encoders.items()}, weights)
    with VectorsFileWriter(out_path, active) as writer:
        writer.write(vectors)
        writer.commit(manifest)
    builder.log_summary()
    logger.info("wrote %d item vectors (fused dim %d) to %s", builder.n_items, manifest["fused_dim"], out_path)
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
            raise InputError(f"{path}: column {name!r} is empty and the manifest gives no dimension")
        dim = int(lengths[0])
    if len(lengths) and not (lengths == dim).all():
        raise InputError(f"{path}: column {name!r} has vectors of length other than {dim}")
    flat = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    out = np.full((n, dim), np.nan, dtype=np.float32)
    out[valid] = flat.reshape(-1, dim) if dim else flat.reshape(int(valid.sum()), 0)
    return out


def _read_manifest(path: Path) -> dict[str, Any]:
    """The parsed manifest of vectors file ``path``; ``ValueError`` naming the file if missing or invalid."""
    man_path = manifest_path(path)
    if not path.is_file():
        raise InputError(f"item vectors file {path} not found")
    if not man_path.is_file():
        raise InputError(f"manifest {man_path} for item vectors {path} not found")
    try:
        manifest = json.loads(man_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"manifest {man_path} is not valid JSON ({_one_line(exc)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"manifest {man_path} is not a {FORMAT} manifest")
    return manifest


def _check_checksum(path: Path, manifest: dict[str, Any]) -> None:
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
    manifest = _read_manifest(path)
    _check_checksum(path, manifest)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - any Arrow/IO error means a bad file
        raise InputError(f"item vectors file {path} is not readable Parquet ({_one_line(exc)})") from None
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
        raise InputError(f"item vectors file {path} has malformed vector columns ({_one_line(exc)})") from None
    if np.isnan(fused).any():
        raise InputError(f"item vectors file {path} has null or NaN fused vectors")
    return ItemVectors(item_ids=item_ids, fused=fused, blocks=blocks, manifest=manifest)
