"""The table contract shared by every layer: column names, the catalog and interactions
columns, reading a table file, and :class:`DataError`.

* :class:`Columns` names every column tlrec reads or writes (use it instead of literals).
* ``CATALOG_*``: the catalog's columns. ``training.data.load_catalog`` validates a catalog
  file against them; ``embeddings`` reads the same columns to embed the items.
* ``INTERACTIONS_*``, ``DEFAULT_EVENT``, ``DEFAULT_VALUE``: the interactions' columns and
  the values of the optional ones when absent or null.
* :func:`read_table` reads Parquet, CSV or JSON lines into a polars DataFrame.

Bad input raises :class:`DataError`, whose message is a single line naming the file, the
1-based data row (header not counted) and the column.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from tlrec.errors import InputError, one_line

__all__ = [
    "CATALOG_COLUMNS",
    "CATALOG_MEDIA",
    "CATALOG_OPTIONAL",
    "CATALOG_REQUIRED",
    "CATALOG_TEXT",
    "DEFAULT_EVENT",
    "DEFAULT_VALUE",
    "INTERACTIONS_COLUMNS",
    "INTERACTIONS_REQUIRED",
    "TABLE_EXTENSIONS",
    "Columns",
    "DataError",
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


# --------------------------------------------------------------------------- catalog contract

#: Columns every catalog file must have.
CATALOG_REQUIRED: tuple[str, ...] = (Columns.ITEM, Columns.TITLE)
#: The text columns an item is described by, in the order they are joined (``"title. description"``).
CATALOG_TEXT: tuple[str, ...] = (Columns.TITLE, Columns.DESCRIPTION)
#: Modality -> column of the item's media file (absolute, relative to the catalog file's
#: folder, or a URL; null when the item has none).
CATALOG_MEDIA: dict[str, str] = {"image": Columns.IMAGE_PATH, "audio": Columns.AUDIO_PATH}
#: Standard columns a catalog may leave out (they are then empty / null).
CATALOG_OPTIONAL: tuple[str, ...] = (Columns.DESCRIPTION, *CATALOG_MEDIA.values())
#: Every standard catalog column, in the order ``load_catalog`` returns them; any other
#: column is metadata (kept by ``load_catalog``, ignored by the embedding jobs).
CATALOG_COLUMNS: tuple[str, ...] = (Columns.ITEM, *CATALOG_TEXT, *CATALOG_MEDIA.values())

# --------------------------------------------------------------------------- interactions contract

#: Columns every interactions file must have.
INTERACTIONS_REQUIRED: tuple[str, ...] = (Columns.USER, Columns.ITEM, Columns.TIMESTAMP)
#: The columns of validated interactions, in order.
INTERACTIONS_COLUMNS: tuple[str, ...] = (*INTERACTIONS_REQUIRED, Columns.EVENT, Columns.VALUE)
#: ``event`` of a row whose event is absent, null or empty.
DEFAULT_EVENT = "interaction"
#: ``value`` of a row whose value is absent or null.
DEFAULT_VALUE = 1.0

# --------------------------------------------------------------------------- DataError

_MAX_DETAIL = 200


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
        super().__init__(one_line(message, 1000))
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

#: Extensions :func:`read_table` accepts, by format.
TABLE_EXTENSIONS: dict[str, str] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


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
        return 1, one_line(exc, _MAX_DETAIL)
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
        detail = one_line(str(exc).split("\n\n")[0], _MAX_DETAIL)
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
