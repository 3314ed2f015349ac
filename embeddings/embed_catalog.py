"""Embedding a catalog: one batch of rows at a time, reusing a previous output's unchanged vectors.

Two drivers share the pieces here: :func:`embed_catalog` (in process, for small
catalogs) and ``embeddings.batch.embed_catalog_ray`` (a Ray Data job). Both run
:func:`embed_rows` on batches of catalog rows, look previous vectors up with
:class:`PreviousVectors`, and write through ``VectorsFileWriter`` with a manifest
from ``ManifestBuilder`` (``embeddings.vectors_writer``), so their outputs are
identical. Re-running on an existing output reuses vectors whose content hash and
encoder version are unchanged, so only changed items are embedded again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tlrec.embeddings.base import MODALITIES, Encoder, Modality
from tlrec.embeddings.catalog_inputs import (
    check_catalog,
    content_hashes,
    encoder_inputs,
    has_input,
    resolve_encoders,
)
from tlrec.embeddings.fusion import fuse
from tlrec.embeddings.vectors import (
    FUSED_COL,
    ID_COL,
    check_checksum,
    column_matrix,
    error_line,
    read_manifest,
    vector_column,
)
from tlrec.embeddings.vectors_writer import (
    EMBEDDED,
    FAILED,
    NO_INPUT,
    REUSED,
    ManifestBuilder,
    VectorsFileWriter,
    check_out_path,
    error_col,
    hash_col,
    state_col,
)
from tlrec.errors import InputError

logger = logging.getLogger(__name__)


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
            logger.warning("ignoring existing %s for reuse: %s", path, error_line(exc))
            return None

    @classmethod
    def _open(cls, path: Path) -> PreviousVectors:
        import pyarrow.parquet as pq

        manifest = read_manifest(path)
        check_checksum(path, manifest)
        pf = pq.ParquetFile(path)
        absent = [c for c in (ID_COL, *manifest.get("modalities", [])) if c not in pf.schema_arrow.names]
        if absent:
            raise InputError(f"item vectors file {path} lacks columns {absent}")
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
            self._cache[key] = column_matrix(table, modality, self.dims.get(modality), self.path)
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
        values = encoder_inputs(rows, modality, base)
        hashes = content_hashes(modality, values)
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
    columns.update({m: vector_column(b) for m, b in blocks.items()})
    columns[FUSED_COL] = vector_column(fused)
    columns.update(extra)
    return pa.table(columns)


# ---------------------------------------------------------------------------
# the in-process driver

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
    check_catalog(catalog)
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
