"""What an embedding job reads from a catalog: the encoders per modality, and per row the encoder input
and its content hash.

The catalog columns are the contract of :mod:`tlrec.tables`: ``item_id``, the text columns
``title`` and ``description`` (encoded as ``"title. description"``) and a media path
column per modality (``image_path``, ``audio_path``); any other column is ignored.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import polars as pl

from tlrec.embeddings.base import Modality
from tlrec.errors import ConfigError, InputError
from tlrec.files import sha256_file
from tlrec.tables import CATALOG_MEDIA, CATALOG_TEXT, Columns

ID_COL = Columns.ITEM


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


def check_catalog(catalog: pl.DataFrame) -> list[str]:
    """The catalog's item ids; ``ValueError`` naming the row if one is null or repeated, or the column is missing."""
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


def item_texts(catalog: pl.DataFrame) -> list[str | None]:
    """The text the embedding job encodes for each catalog row: ``"title. description"`` (None: no text).

    Just one part if the other is missing; None if both are.
    """
    title_col, desc_col = CATALOG_TEXT
    cols = {c: catalog.get_column(c).cast(pl.String, strict=False).to_list() if c in catalog.columns
            else [None] * catalog.height for c in CATALOG_TEXT}
    out: list[str | None] = []
    for title, desc in zip(cols[title_col], cols[desc_col]):
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


def encoder_inputs(rows: pl.DataFrame, modality: Modality, base_dir: Path | None) -> list[Any]:
    """The encoder input per row for ``modality`` (None where the row has none)."""
    return item_texts(rows) if modality == "text" else _paths(rows, CATALOG_MEDIA[modality], base_dir)


def has_input(rows: pl.DataFrame, modality: Modality) -> bool:
    """Whether any row has an input for ``modality`` (non-empty text / path)."""
    return any(v is not None for v in encoder_inputs(rows, modality, None))


def _path_hash(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None  # the encoder reports the failure


def content_hashes(modality: Modality, inputs: list[Any]) -> list[str | None]:
    """sha256 per input of :func:`encoder_inputs`: of the text's UTF-8, or of the file's bytes.

    None where the row has no input or its file cannot be read (the encoder then reports the failure).
    """
    if modality == "text":
        return [hashlib.sha256(t.encode("utf-8")).hexdigest() if t is not None else None for t in inputs]
    return [_path_hash(p) if p is not None else None for p in inputs]
