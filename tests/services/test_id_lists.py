"""--users and --candidates files: plain lines, or a table with the id column (issue 16, item 6)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tlrec.services.files import read_id_list
from tlrec.tables import DataError


def test_plain_lines_keep_order_and_skip_blanks(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_text("u2\n\n  u1 \nu2\n")
    assert read_id_list(path, "user", "user_id") == ["u2", "u1", "u2"]


def test_a_header_line_is_a_column_name_not_a_user(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_text("user_id,segment\n007,a\nu1,b\n")
    assert read_id_list(path, "user", "user_id") == ["007", "u1"]  # before: "user_id" was scored as a user


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_tables_give_their_id_column(tmp_path: Path, suffix: str) -> None:
    frame = pl.DataFrame({"segment": ["a", "b", "c"], "item_id": ["007", "i2", None]})
    path = tmp_path / f"items{suffix}"
    {".csv": frame.write_csv, ".parquet": frame.write_parquet, ".jsonl": frame.write_ndjson}[suffix](path)
    assert read_id_list(path, "candidate item", "item_id") == ["007", "i2"]  # leading zeros kept, nulls dropped


def test_a_table_without_the_column_names_what_it_has(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    pl.DataFrame({"customer": ["a"]}).write_csv(path)
    with pytest.raises(DataError, match=r"users\.csv: no user_id column \(columns: customer\)"):
        read_id_list(path, "user", "user_id")


@pytest.mark.parametrize("text, match", [("", "no user ids"), ("\n \n", "no user ids"),
                                         ("user_id\n", "no user ids")])
def test_empty_lists_are_one_line_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "users.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        read_id_list(path, "user", "user_id")


def test_binary_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "users.txt").write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(DataError, match="not a UTF-8 text file of user ids"):
        read_id_list(tmp_path / "users.txt", "user", "user_id")
    with pytest.raises(DataError, match="user file not found"):
        read_id_list(tmp_path / "nope.txt", "user", "user_id")
