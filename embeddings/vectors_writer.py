"""Writing an item-vectors file and its manifest (the layout is in ``embeddings.vectors``).

Batches come from ``embeddings.embed_catalog.embed_rows``: the vectors-file columns plus
bookkeeping columns per modality (:func:`hash_col`, :func:`state_col`, :func:`error_col`).
:class:`ManifestBuilder` turns the bookkeeping into the manifest and hands back the
vectors-file columns; :class:`VectorsFileWriter` streams those into the Parquet file and
publishes it and the manifest atomically (temp file in the same directory, fsync,
``os.replace``): on any error no partial file remains and an existing output is left
untouched.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Mapping
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import numpy as np

from tlrec.embeddings.fusion import fused_dim
from tlrec.embeddings.vectors import (
    FORMAT,
    FORMAT_VERSION,
    FUSED_COL,
    ID_COL,
    ROW_GROUP_ROWS,
    manifest_path,
    vectors_schema,
)
from tlrec.errors import UsageError
from tlrec.files import atomic_path, json_bytes, sha256_file

logger = logging.getLogger(__name__)

# Bookkeeping columns of an embedded batch (see ``embed_rows``); never written to the vectors file.
NO_INPUT, EMBEDDED, REUSED, FAILED = 0, 1, 2, 3


def hash_col(modality: str) -> str:
    return f"__hash_{modality}"


def state_col(modality: str) -> str:
    return f"__state_{modality}"


def error_col(modality: str) -> str:
    return f"__error_{modality}"


def check_out_path(out_path: str | Path) -> Path:
    """The output path as a ``Path``; ``ValueError`` if it is a directory or its folder is missing."""
    out_path = Path(out_path)
    if out_path.is_dir():
        raise UsageError(f"output path {out_path} is a directory; give a .parquet file path")
    if not out_path.parent.is_dir():
        raise UsageError(f"output directory {out_path.parent} does not exist")
    return out_path


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
