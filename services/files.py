"""Id lists in: the ``--users`` and ``--candidates`` files of the jobs (one id a line)."""

from __future__ import annotations

from pathlib import Path

from tlrec.tables import DataError


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

