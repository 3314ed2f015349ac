"""Small file helpers shared by the jobs: id lists in, Parquet out (atomically)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import polars as pl

from tlrec.training.data import DataError


def read_id_list(path: Path, what: str) -> list[str]:
    """Ids from a text file, one per line (blank lines skipped); DataError names the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file of {what} ids (byte {exc.start})") from None
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{path}: no {what} ids (expected one id a line)")
    return ids


def write_parquet_atomic(frame: pl.DataFrame, out: Path) -> None:
    """Write ``frame`` to ``out`` via a temp file in the same folder, fsync, rename."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        frame.write_parquet(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
