"""Reading and validating the input tables: catalogs, interactions and other events.

Everything that enters training goes through here: :func:`load_catalog` /
:func:`load_interactions` validate the two input tables against the contract in
:mod:`tlrec.tables` (columns, defaults) and normalise their types;
:func:`load_events` does the same for per-user events that are not item
interactions (A/B exposures and outcomes).

Bad input raises :class:`tlrec.tables.DataError`, whose message is a single line
naming the file, the 1-based data row (header not counted) and the column.
Indexing the validated tables for the models is :mod:`training.id_map` and
:mod:`training.interaction_data`.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from tlrec.tables import (
    CATALOG_COLUMNS,
    CATALOG_MEDIA,
    CATALOG_REQUIRED,
    CATALOG_TEXT,
    DEFAULT_EVENT,
    DEFAULT_VALUE,
    INTERACTIONS_COLUMNS,
    INTERACTIONS_REQUIRED,
    Columns,
    DataError,
    read_table,
)

logger = logging.getLogger(__name__)

__all__ = ["load_catalog", "load_events", "load_interactions", "parse_time"]


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
    std = list(CATALOG_COLUMNS)
    df = read_table(path, string_columns=std)
    _require_columns(df, CATALOG_REQUIRED, path)
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
    for col in CATALOG_MEDIA.values():
        if col in df.columns:
            resolved = [_resolve_media(v, base) for v in df[col].cast(pl.String).to_list()]
            media.append(pl.Series(col, resolved, dtype=pl.String))
        else:
            media.append(pl.lit(None, dtype=pl.String).alias(col))
    df = df.with_columns(*(_text_or_empty(df, col) for col in CATALOG_TEXT), *media)
    meta = [c for c in df.columns if c not in std and c != _ROW]
    out = df.select(*std, *meta)
    logger.info("loaded catalog %s: %d items, %d metadata columns", path.name, out.height, len(meta))
    return out


# --------------------------------------------------------------------------- interactions

_TS_HELP = "expected epoch seconds, a datetime or an ISO-8601 string"


def parse_time(text: str) -> int:
    """Epoch seconds of ``text``: an integer (epoch seconds) or an ISO-8601 date/time (naive = UTC).
    ``ValueError`` (one line) otherwise."""
    value = str(text).strip()
    if value.lstrip("-").isdigit():
        return int(value)
    parsed = _parse_iso(value)
    if parsed is None:
        raise ValueError(f"{text!r} is not a time ({_TS_HELP})")
    return parsed


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
    _require_columns(df, INTERACTIONS_REQUIRED, path)
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

    out = df.sort([C.USER, C.TIMESTAMP], maintain_order=True).select(*INTERACTIONS_COLUMNS)
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
