"""Data contracts for tlrec: reading and validating catalogs and interactions.

Everything that enters training goes through here:

* :func:`read_table` reads Parquet, CSV or JSON lines into a polars DataFrame.
* :func:`load_catalog` / :func:`load_interactions` validate the two input tables
  against the contracts in ``DESIGN.md`` and normalise their types.
* :class:`IdMap` maps external string ids to contiguous internal ints.
* :class:`InteractionData` holds interactions indexed by user and item maps and
  builds the sparse user x item matrices the models train on.

Bad input raises :class:`DataError`, whose message is a single line naming the
file, the 1-based data row (header not counted) and the column.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from tlrec.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "Columns",
    "DataError",
    "IdMap",
    "InteractionData",
    "load_catalog",
    "load_events",
    "load_interactions",
    "read_table",
]


class Columns:
    """Column names used across tlrec (use these instead of string literals)."""

    USER = "user_id"
    ITEM = "item_id"
    TIMESTAMP = "timestamp"
    EVENT = "event"
    VALUE = "value"
    TITLE = "title"
    DESCRIPTION = "description"
    IMAGE_PATH = "image_path"
    AUDIO_PATH = "audio_path"
    SCORE = "score"
    RANK = "rank"
    USER_IDX = "user_idx"
    ITEM_IDX = "item_idx"


DEFAULT_EVENT = "interaction"
DEFAULT_VALUE = 1.0

#: Extensions :func:`read_table` accepts, by format.
TABLE_EXTENSIONS: dict[str, str] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}

_MAX_DETAIL = 200


def _one_line(text: str, limit: int = _MAX_DETAIL) -> str:
    """Collapse whitespace so ``text`` fits on one line, cut to ``limit`` chars."""
    flat = re.sub(r"\s+", " ", str(text)).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class DataError(InputError):
    """User-facing input error; ``str(e)`` is ONE line naming file, row and column.

    ``row`` is the 1-based data row (the CSV header is not counted), ``column``
    the column name; both are ``None`` when the error is about the whole file.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        super().__init__(_one_line(message, limit=1000))
        self.file = file
        self.row = row
        self.column = column

    @classmethod
    def at(
        cls,
        path: str | Path,
        message: str,
        *,
        row: int | None = None,
        column: str | None = None,
    ) -> DataError:
        """Build ``"<file> row <row>, column <column>: <message>"`` (parts optional)."""
        name = Path(path).name
        where = name
        if row is not None:
            where += f" row {row}"
        if column is not None:
            where += f", column {column}" if row is not None else f" column {column}"
        return cls(f"{where}: {message}", file=name, row=row, column=column)


# --------------------------------------------------------------------------- reading


def _csv_bad_row(path: Path) -> int | None:
    """Return the 1-based data row whose field count differs from the header."""
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                return None
            for i, fields in enumerate(reader, start=1):
                if fields and len(fields) != len(header):
                    return i
    except (OSError, csv.Error):
        return None
    return None


def _jsonl_bad_row(path: Path) -> tuple[int, str] | None:
    """Return (1-based data row, reason) of the first non-blank line that is not a JSON object."""
    row = 0
    try:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                row += 1
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    return row, f"not valid JSON ({exc.msg})"
                if not isinstance(obj, dict):
                    return row, f"expected a JSON object, got {type(obj).__name__}"
    except (OSError, UnicodeDecodeError) as exc:
        return 1, _one_line(str(exc))
    return None


def read_table(path: str | Path, string_columns: Iterable[str] = ()) -> pl.DataFrame:
    """Read a Parquet (.parquet/.pq), CSV (.csv) or JSON-lines (.jsonl/.ndjson/.json) table.

    Args:
        path: the file.
        string_columns: columns read as strings from CSV (so ids like ``"007"``
            keep their leading zeros); ignored for typed formats and absent columns.

    Returns:
        A DataFrame with at least one row.

    Raises:
        DataError: missing file, unknown extension, unreadable/corrupt file or
            empty table.
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise DataError(f"{name}: file not found ({path})", file=name)
    fmt = TABLE_EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        allowed = ", ".join(TABLE_EXTENSIONS)
        raise DataError(
            f"{name}: unknown file extension {path.suffix or '(none)'!r} (allowed: {allowed})",
            file=name,
        )
    try:
        if fmt == "parquet":
            df = pl.read_parquet(path)
        elif fmt == "csv":
            overrides = {col: pl.String for col in string_columns}
            df = pl.read_csv(path, schema_overrides=overrides, infer_schema_length=None)
        else:
            df = pl.read_ndjson(path, infer_schema_length=None)
    except pl.exceptions.NoDataError:
        raise DataError(f"{name}: empty file", file=name) from None
    except Exception as exc:  # polars, pyarrow and OS errors all mean "unreadable"
        detail = _one_line(str(exc).split("\n\n")[0])
        if fmt == "csv":
            bad = _csv_bad_row(path)
            if bad is not None:
                raise DataError.at(
                    path, f"not a valid CSV file (wrong number of fields; {detail})", row=bad
                ) from None
            raise DataError(f"{name}: not a valid CSV file ({detail})", file=name) from None
        if fmt == "jsonl":
            bad_json = _jsonl_bad_row(path)
            if bad_json is not None:
                row, reason = bad_json
                raise DataError.at(
                    path, f"not a valid JSON-lines file: {reason}", row=row
                ) from None
            raise DataError(f"{name}: not a valid JSON-lines file ({detail})", file=name) from None
        raise DataError(f"{name}: not a valid Parquet file ({detail})", file=name) from None
    if df.height == 0:
        raise DataError(f"{name}: empty table (no data rows)", file=name)
    return df


# --------------------------------------------------------------------------- helpers

_ROW = "__tlrec_row"


def _require_columns(df: pl.DataFrame, required: Sequence[str], path: Path) -> None:
    for col in required:
        if col not in df.columns:
            found = ", ".join(df.columns) or "(none)"
            raise DataError(
                f"{path.name}: missing column {col!r} (found: {found})", file=path.name
            )


def _first_row(df: pl.DataFrame, mask: pl.Series | pl.Expr) -> tuple[int, dict[str, Any]] | None:
    """1-based row number and values of the first row where ``mask`` holds (needs ``_ROW``)."""
    hit = df.filter(mask).head(1)
    if hit.height == 0:
        return None
    rec = hit.row(0, named=True)
    return int(rec[_ROW]) + 1, rec


def _ids_to_str(df: pl.DataFrame, col: str, path: Path) -> pl.DataFrame:
    """Cast an id column to stripped strings; ints (and integral floats) allowed.

    Raises DataError on unsupported types and on the first null/empty id.
    """
    dtype = df.schema[col]
    s = df[col]
    if dtype.is_float():
        finite = s.drop_nulls()
        if finite.len() and bool(((finite % 1) == 0).all()):
            s = s.cast(pl.Int64)
        else:
            bad = _first_row(df, (pl.col(col) % 1 != 0) | pl.col(col).is_nan())
            row = bad[0] if bad else None
            value = bad[1][col] if bad else None
            raise DataError.at(
                path, f"ids must be strings or integers, got {value!r}", row=row, column=col
            )
    elif not (dtype == pl.String or dtype.is_integer() or dtype == pl.Categorical):
        raise DataError.at(path, f"ids must be strings or integers, got type {dtype}", column=col)
    s = s.cast(pl.String).str.strip_chars()
    df = df.with_columns(s.alias(col))
    bad = _first_row(df, pl.col(col).is_null() | (pl.col(col) == ""))
    if bad is not None:
        raise DataError.at(path, "missing id (null or empty)", row=bad[0], column=col)
    return df


def _text_or_empty(df: pl.DataFrame, col: str) -> pl.Expr:
    if col not in df.columns:
        return pl.lit("", dtype=pl.String).alias(col)
    return pl.col(col).cast(pl.String).fill_null("").alias(col)


def _resolve_media(value: str | None, base: Path) -> str | None:
    """Make a media path absolute relative to ``base``; URLs and nulls pass through."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if "://" in value:
        return value
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))


# --------------------------------------------------------------------------- catalog


def load_catalog(path: str | Path) -> pl.DataFrame:
    """Load and validate a catalog.

    Required columns ``item_id``, ``title``; optional ``description``,
    ``image_path``, ``audio_path`` (added as null strings when absent); any other
    column is kept as metadata, after the standard ones.

    ``item_id`` becomes a stripped string (integer ids allowed); null titles and
    descriptions become ``""``; media paths become absolute path strings resolved
    against the catalog file's folder (null/empty stays null, URLs unchanged).

    Returns:
        DataFrame ``[n_items, 5 + n_metadata]``, one row per item, file order.

    Raises:
        DataError: unreadable file, missing required column, null/empty or
            duplicate ``item_id``.
    """
    path = Path(path)
    C = Columns
    std = [C.ITEM, C.TITLE, C.DESCRIPTION, C.IMAGE_PATH, C.AUDIO_PATH]
    df = read_table(path, string_columns=std)
    _require_columns(df, [C.ITEM, C.TITLE], path)
    df = df.with_row_index(_ROW)
    df = _ids_to_str(df, C.ITEM, path)

    dup = df.with_columns(
        pl.col(_ROW).first().over(C.ITEM).alias("__first"),
    ).filter(pl.col(_ROW) != pl.col("__first"))
    if dup.height:
        rec = dup.row(0, named=True)
        raise DataError.at(
            path,
            f"duplicate id {rec[C.ITEM]!r} (first at row {rec['__first'] + 1})",
            row=rec[_ROW] + 1,
            column=C.ITEM,
        )

    base = path.resolve().parent
    media = []
    for col in (C.IMAGE_PATH, C.AUDIO_PATH):
        if col in df.columns:
            resolved = [_resolve_media(v, base) for v in df[col].cast(pl.String).to_list()]
            media.append(pl.Series(col, resolved, dtype=pl.String))
        else:
            media.append(pl.lit(None, dtype=pl.String).alias(col))
    df = df.with_columns(_text_or_empty(df, C.TITLE), _text_or_empty(df, C.DESCRIPTION), *media)
    meta = [c for c in df.columns if c not in std and c != _ROW]
    out = df.select(*std, *meta)
    logger.info("loaded catalog %s: %d items, %d metadata columns", path.name, out.height, len(meta))
    return out


# --------------------------------------------------------------------------- interactions

_TS_HELP = "expected epoch seconds, a datetime or an ISO-8601 string"


def _parse_iso(value: str) -> int | None:
    """ISO-8601 string -> epoch seconds (naive = UTC), or None if unparseable."""
    text = value.strip()
    if not text:
        return None
    try:
        parsed = _dt.datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = _dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return math.floor(parsed.timestamp())


def _timestamps_to_epoch(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Replace the ``timestamp`` column by Int64 epoch seconds.

    Accepts integer/float seconds, Datetime (naive = UTC), Date, and strings
    holding numbers or ISO-8601 datetimes/dates.
    """
    col = Columns.TIMESTAMP
    dtype = df.schema[col]
    s = df[col]
    if dtype.is_integer():
        out = s.cast(pl.Int64)
    elif dtype.is_float():
        bad = _first_row(df, ~pl.col(col).is_finite())
        if bad is not None:
            raise DataError.at(
                path, f"cannot parse {bad[1][col]!r} as a timestamp ({_TS_HELP})",
                row=bad[0], column=col,
            )
        out = s.floor().cast(pl.Int64, strict=False)
        if out.is_null().any():
            i = int(out.is_null().arg_true()[0])
            raise DataError.at(
                path, f"timestamp {s[i]!r} out of range ({_TS_HELP})", row=int(df[_ROW][i]) + 1, column=col
            )
    elif isinstance(dtype, pl.Datetime):
        out = s.dt.epoch("s")
    elif dtype == pl.Date:
        out = s.cast(pl.Datetime("us")).dt.epoch("s")
    elif dtype == pl.String or dtype == pl.Categorical:
        s = s.cast(pl.String).str.strip_chars()
        numeric = s.cast(pl.Float64, strict=False)
        numeric = numeric.set(~numeric.is_finite().fill_null(False), None)
        todo = s.filter(numeric.is_null() & s.is_not_null()).unique()
        mapping = {v: _parse_iso(v) for v in todo.to_list()}
        if mapping:
            parsed = s.replace_strict(
                list(mapping), list(mapping.values()), default=None, return_dtype=pl.Int64
            )
        else:
            parsed = pl.Series(col, [None] * len(s), dtype=pl.Int64)
        out = numeric.floor().cast(pl.Int64, strict=False).fill_null(parsed)
        failed = out.is_null() & s.is_not_null()
        if failed.any():
            i = int(failed.arg_true()[0])
            raise DataError.at(
                path, f"cannot parse {s[i]!r} as a timestamp ({_TS_HELP})",
                row=int(df[_ROW][i]) + 1, column=col,
            )
    else:
        raise DataError.at(path, f"unsupported timestamp type {dtype} ({_TS_HELP})", column=col)
    out = out.alias(col)
    if out.len():
        med = out.drop_nulls().median()
        if med is not None and float(med) > 1e11:  # type: ignore[arg-type]
            logger.warning(
                "%s: timestamps look like milliseconds (median %s); tlrec expects seconds",
                path.name, med,
            )
    return df.with_columns(out)


def _values_to_float(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    col = Columns.VALUE
    if col not in df.columns:
        return df.with_columns(pl.lit(DEFAULT_VALUE, dtype=pl.Float64).alias(col))
    dtype = df.schema[col]
    if dtype.is_numeric() or dtype == pl.Boolean:
        vals = df[col].cast(pl.Float64)
    elif dtype == pl.String or dtype == pl.Null:
        vals = df[col].str.strip_chars().cast(pl.Float64, strict=False) if dtype == pl.String \
            else df[col].cast(pl.Float64)
        failed = vals.is_null() & df[col].is_not_null()
        if dtype == pl.String:
            failed = failed & (df[col].str.strip_chars() != "")
        if failed.any():
            i = int(failed.arg_true()[0])
            raise DataError.at(
                path, f"value {df[col][i]!r} is not a number", row=int(df[_ROW][i]) + 1, column=col
            )
    else:
        raise DataError.at(path, f"value must be numeric, got type {dtype}", column=col)
    vals = vals.fill_null(DEFAULT_VALUE)
    bad = ~vals.is_finite()
    if bad.any():
        i = int(bad.arg_true()[0])
        raise DataError.at(
            path, f"value {vals[i]!r} is not a finite number", row=int(df[_ROW][i]) + 1, column=col
        )
    return df.with_columns(vals.alias(col))


def load_interactions(
    path: str | Path, catalog: pl.DataFrame | None = None, strict: bool = False
) -> pl.DataFrame:
    """Load and validate interactions.

    Required columns ``user_id``, ``item_id``, ``timestamp``; optional ``event``
    (default/null -> ``"interaction"``) and ``value`` (Float64, default/null -> 1.0).
    Timestamps may be int/float epoch seconds, datetimes (naive = UTC), dates or
    ISO-8601 strings; they become Int64 epoch seconds (floored).

    Args:
        path: the interactions file.
        catalog: if given, rows whose ``item_id`` is not in ``catalog["item_id"]``
            are dropped with a WARNING (or raise under ``strict``).
        strict: raise instead of dropping unknown items.

    Returns:
        DataFrame ``[n_interactions, 5]`` with exactly ``user_id`` (str), ``item_id``
        (str), ``timestamp`` (Int64), ``event`` (str), ``value`` (Float64), sorted
        by user_id then timestamp (ties keep file order).

    Raises:
        DataError: unreadable file, missing column, null id or timestamp,
            unparseable timestamp, non-numeric value, unknown item under ``strict``.
    """
    path = Path(path)
    C = Columns
    df = read_table(path, string_columns=(C.USER, C.ITEM, C.EVENT))
    _require_columns(df, [C.USER, C.ITEM, C.TIMESTAMP], path)
    df = df.with_row_index(_ROW)
    df = _ids_to_str(df, C.USER, path)
    df = _ids_to_str(df, C.ITEM, path)
    bad = _first_row(df, pl.col(C.TIMESTAMP).is_null())
    if bad is not None:
        raise DataError.at(path, "missing timestamp (null)", row=bad[0], column=C.TIMESTAMP)
    df = _timestamps_to_epoch(df, path)
    df = _values_to_float(df, path)
    if C.EVENT in df.columns:
        df = df.with_columns(
            pl.col(C.EVENT).cast(pl.String).str.strip_chars().replace("", None)
            .fill_null(DEFAULT_EVENT).alias(C.EVENT)
        )
    else:
        df = df.with_columns(pl.lit(DEFAULT_EVENT, dtype=pl.String).alias(C.EVENT))

    if catalog is not None:
        if C.ITEM not in catalog.columns:
            raise DataError(f"catalog has no {C.ITEM!r} column (found: {', '.join(catalog.columns)})")
        known = catalog[C.ITEM].cast(pl.String).unique()
        unknown = ~df[C.ITEM].is_in(known.implode())
        n_bad = int(unknown.sum())
        if n_bad:
            bad_rows = df.filter(unknown)
            if strict:
                rec = bad_rows.row(0, named=True)
                raise DataError.at(
                    path, f"item {rec[C.ITEM]!r} is not in the catalog",
                    row=rec[_ROW] + 1, column=C.ITEM,
                )
            ids = bad_rows[C.ITEM].unique(maintain_order=True)
            examples = ", ".join(repr(x) for x in ids.head(3).to_list())
            logger.warning(
                "%s: dropped %d interactions with %d item ids not in the catalog (e.g. %s)",
                path.name, n_bad, ids.len(), examples,
            )
            df = df.filter(~unknown)

    out = df.sort([C.USER, C.TIMESTAMP], maintain_order=True).select(
        C.USER, C.ITEM, C.TIMESTAMP, C.EVENT, C.VALUE
    )
    logger.info(
        "loaded interactions %s: %d rows, %d users, %d items",
        path.name, out.height, out[C.USER].n_unique(), out[C.ITEM].n_unique(),
    )
    return out


def load_events(
    path: str | Path, required: Sequence[str] = (Columns.USER, Columns.TIMESTAMP),
    string_columns: Sequence[str] = (),
) -> pl.DataFrame:
    """Load a table of timestamped per-user events that are not item interactions.

    For A/B exposures (``user_id, experiment, variant, timestamp``) and outcomes
    (``user_id, event, value, timestamp``). ``user_id`` becomes a stripped string,
    ``timestamp`` Int64 epoch seconds (same parsing as :func:`load_interactions`),
    ``value`` Float64 (null -> 1.0) when present, ``event`` a string (null ->
    ``"interaction"``) when present; each of ``string_columns`` a stripped,
    non-empty string. Other columns are kept as read; row order is the file's.

    Raises:
        DataError: unreadable file, missing required column, null id, empty
            string in ``string_columns``, unparseable timestamp or value
            (naming file, row and column).
    """
    path = Path(path)
    C = Columns
    df = read_table(path, string_columns=(C.USER, C.EVENT, *string_columns))
    _require_columns(df, list(dict.fromkeys([*required, C.USER, C.TIMESTAMP, *string_columns])), path)
    df = df.with_row_index(_ROW)
    df = _ids_to_str(df, C.USER, path)
    for col in string_columns:
        df = df.with_columns(pl.col(col).cast(pl.String).str.strip_chars())
        bad = _first_row(df, pl.col(col).is_null() | (pl.col(col) == ""))
        if bad is not None:
            raise DataError.at(path, "missing value (null or empty)", row=bad[0], column=col)
    bad = _first_row(df, pl.col(C.TIMESTAMP).is_null())
    if bad is not None:
        raise DataError.at(path, "missing timestamp (null)", row=bad[0], column=C.TIMESTAMP)
    df = _timestamps_to_epoch(df, path)
    if C.VALUE in df.columns:
        df = _values_to_float(df, path)
    if C.EVENT in df.columns:
        df = df.with_columns(
            pl.col(C.EVENT).cast(pl.String).str.strip_chars().replace("", None)
            .fill_null(DEFAULT_EVENT).alias(C.EVENT)
        )
    return df.drop(_ROW)


# --------------------------------------------------------------------------- IdMap


class IdMap:
    """External string ids <-> contiguous internal ints ``0..n-1``.

    ``external[i]`` is the external id of internal id ``i``.
    """

    def __init__(self, external: Sequence[str] | pl.Series | np.ndarray) -> None:
        values = external.to_list() if isinstance(external, pl.Series) else list(external)
        index: dict[str, int] = {}
        for i, ext in enumerate(values):
            if not isinstance(ext, str):
                raise TypeError(f"IdMap ids must be str, got {type(ext).__name__} {ext!r} at {i}")
            if ext in index:
                raise ValueError(f"duplicate id {ext!r} at positions {index[ext]} and {i}")
            index[ext] = i
        arr = np.empty(len(values), dtype=object)
        arr[:] = [str(v) for v in values]
        arr.flags.writeable = False
        self.external: np.ndarray = arr
        self._index = index

    @classmethod
    def from_values(cls, values: Iterable[str] | pl.Series) -> IdMap:
        """Unique values in order of first appearance."""
        if isinstance(values, pl.Series):
            return cls(values.unique(maintain_order=True).to_list())
        return cls(list(dict.fromkeys(values)))

    def __len__(self) -> int:
        return len(self.external)

    def __contains__(self, ext: object) -> bool:
        return ext in self._index

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdMap):
            return NotImplemented
        return len(self) == len(other) and bool(np.array_equal(self.external, other.external))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = ", ".join(repr(x) for x in self.external[:3])
        more = ", ..." if len(self) > 3 else ""
        return f"IdMap(n={len(self)}: [{head}{more}])"

    def to_internal(
        self,
        ids: Sequence[str] | pl.Series | np.ndarray,
        missing: Literal["raise", "ignore"] = "raise",
    ) -> np.ndarray:
        """External ids -> int64 array ``[len(ids)]``.

        ``missing="ignore"`` gives -1 for unknown ids; ``"raise"`` raises
        KeyError naming the first unknown id.
        """
        if missing not in ("raise", "ignore"):
            raise ValueError(f"missing must be 'raise' or 'ignore', got {missing!r}")
        values = ids.to_list() if isinstance(ids, pl.Series) else ids
        get = self._index.get
        out = np.fromiter((get(x, -1) for x in values), dtype=np.int64, count=len(values))
        if missing == "raise" and out.size and (out < 0).any():
            first = values[int(np.flatnonzero(out < 0)[0])]
            raise KeyError(f"unknown id {first!r}")
        return out

    def to_external(self, idx: np.ndarray | Sequence[int]) -> list[str]:
        """Internal ids ``[n]`` -> external ids; IndexError for anything outside ``0..n-1``."""
        arr = np.asarray(idx)
        if arr.size == 0:
            return []
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"internal ids must be integers, got dtype {arr.dtype}")
        bad = (arr < 0) | (arr >= len(self))
        if bad.any():
            raise IndexError(f"internal id {int(arr[bad][0])} out of range 0..{len(self) - 1}")
        return self.external[arr.ravel()].tolist()

    def save(self, path: Path) -> None:
        """Write the ids as a JSON list of strings (atomically)."""
        from tlrec.training.artifacts import write_json_atomic

        write_json_atomic(Path(path), self.external.tolist())

    @classmethod
    def load(cls, path: Path) -> IdMap:
        """Read a map written by :meth:`save`; DataError if the file is not a JSON list of strings."""
        path = Path(path)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path.name}: file not found ({path})", file=path.name) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(
                f"{path.name}: not a valid id map ({_one_line(str(exc))})", file=path.name
            ) from None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise DataError(f"{path.name}: not a valid id map (expected a JSON list of strings)",
                            file=path.name)
        try:
            return cls(values)
        except ValueError as exc:
            raise DataError(f"{path.name}: not a valid id map ({exc})", file=path.name) from None


# --------------------------------------------------------------------------- InteractionData


@dataclass
class InteractionData:
    """Interactions indexed for training: items = the whole catalog (so items
    without interactions have indices).

    ``interactions`` has user_id, item_id, timestamp, event, value plus
    ``user_idx`` and ``item_idx`` (Int64) in ``users`` / ``items``.
    """

    interactions: pl.DataFrame
    users: IdMap
    items: IdMap

    @classmethod
    def build(
        cls, interactions: pl.DataFrame, items: IdMap, users: IdMap | None = None
    ) -> InteractionData:
        """Index ``interactions`` by ``items`` (and ``users``).

        Rows whose item is not in ``items`` (or whose user is not in ``users``,
        when given) are dropped with a warning. Without ``users`` the map is
        built from the remaining rows in order of first appearance (which is
        sorted order for the output of :func:`load_interactions`).
        """
        C = Columns
        missing = [c for c in (C.USER, C.ITEM) if c not in interactions.columns]
        if missing:
            raise DataError(
                f"interactions missing column(s) {missing} (found: {', '.join(interactions.columns)})"
            )
        df = interactions.drop([c for c in (C.USER_IDX, C.ITEM_IDX) if c in interactions.columns])
        df = df.with_columns(pl.col(C.USER).cast(pl.String), pl.col(C.ITEM).cast(pl.String))
        item_idx = items.to_internal(df[C.ITEM], missing="ignore")
        keep = item_idx >= 0
        n_drop_items = int((~keep).sum())
        if users is not None:
            user_idx = users.to_internal(df[C.USER], missing="ignore")
            keep &= user_idx >= 0
        n_drop = int((~keep).sum())
        if n_drop:
            logger.warning(
                "dropped %d of %d interactions (%d with unknown items, %d with unknown users)",
                n_drop, df.height, n_drop_items, n_drop - n_drop_items,
            )
            df = df.filter(pl.Series(keep))
            item_idx = item_idx[keep]
        if users is None:
            users = IdMap.from_values(df[C.USER])
            user_idx = users.to_internal(df[C.USER])
        else:
            user_idx = user_idx[keep]
        df = df.with_columns(
            pl.Series(C.USER_IDX, user_idx, dtype=pl.Int64),
            pl.Series(C.ITEM_IDX, item_idx, dtype=pl.Int64),
        )
        return cls(interactions=df, users=users, items=items)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def matrix(self, binary: bool = True) -> sp.csr_matrix:
        """User x item matrix, float32 ``[n_users, n_items]``.

        ``binary=True``: 1 wherever the user has any interaction with the item;
        else the sum of ``value`` over the pair's interactions.
        """
        df = self.interactions
        rows = df[Columns.USER_IDX].to_numpy().astype(np.int64, copy=False)
        cols = df[Columns.ITEM_IDX].to_numpy().astype(np.int64, copy=False)
        if binary or Columns.VALUE not in df.columns:
            data = np.ones(len(rows), dtype=np.float32)
        else:
            data = df[Columns.VALUE].cast(pl.Float64).fill_null(DEFAULT_VALUE).to_numpy()
        mat = sp.coo_matrix(
            (data, (rows, cols)), shape=(self.n_users, self.n_items)
        ).tocsr()  # sums duplicates
        mat.sum_duplicates()
        if binary:
            mat.data[:] = 1.0
        return mat.astype(np.float32)

    def seen(self) -> sp.csr_matrix:
        """Same as ``matrix(binary=True)``: which items each user has interacted with."""
        return self.matrix(binary=True)
