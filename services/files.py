"""Id lists in: the ``--users`` and ``--candidates`` files of the jobs.

A file is either plain text, one id a line, or a table (Parquet, CSV or JSON lines, by its
extension; a ``.txt`` or extension-less file whose first line is the column's name is read as
CSV) with the id column (``user_id`` or ``item_id``); other columns are ignored.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tlrec.tables import TABLE_EXTENSIONS, DataError, read_table


def read_id_list(path: Path, what: str, column: str) -> list[str]:
    """Ids (strings, in file order, blanks dropped) of ``what`` (``"user"``) from ``path``: plain lines, or
    a table's ``column``. DataError names the file and what was wrong."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    if path.suffix.lower() in TABLE_EXTENSIONS:
        ids = _table_column(path, read_table(path, string_columns=[column]), column)
    else:
        try:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not a UTF-8 text file of {what} ids (byte {exc.start})") from None
        lines = [line for line in lines if line]
        if lines and lines[0].split(",")[0].strip('"') == column:  # a CSV with a header, whatever its name
            try:
                frame = pl.read_csv(path, schema_overrides={column: pl.String}, infer_schema_length=None)
            except Exception as exc:  # polars' parse errors: one line
                raise DataError(f"{path}: starts with a {column} header but is not a valid CSV file "
                                f"({str(exc).splitlines()[0]})") from None
            ids = _table_column(path, frame, column)
        else:
            ids = lines
    if not ids:
        raise DataError(f"{path}: no {what} ids (expected one id a line, or a table with a {column} column)")
    return ids


def _table_column(path: Path, frame: pl.DataFrame, column: str) -> list[str]:
    if column not in frame.columns:
        raise DataError(f"{path}: no {column} column (columns: {', '.join(frame.columns)})")
    values = frame[column].cast(pl.String).drop_nulls().str.strip_chars()
    return [v for v in values.to_list() if v]
