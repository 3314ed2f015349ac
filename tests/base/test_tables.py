"""Tests for tlrec/tables.py: reading a table file, DataError messages, the catalog contract."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tlrec.tables import (
    CATALOG_COLUMNS,
    CATALOG_MEDIA,
    CATALOG_OPTIONAL,
    CATALOG_REQUIRED,
    CATALOG_TEXT,
    Columns,
    DataError,
    read_table,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def assert_one_line(err: pytest.ExceptionInfo, *fragments: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    return msg


# --------------------------------------------------------------------------- read_table

FRAME = pl.DataFrame({"item_id": ["a", "b"], "n": [1, 2], "x": [0.5, None]})


@pytest.mark.parametrize("suffix", [".parquet", ".pq", ".csv", ".jsonl", ".ndjson", ".json"])
def test_read_table_round_trips_every_format(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"t{suffix}"
    if suffix in (".parquet", ".pq"):
        FRAME.write_parquet(path)
    elif suffix == ".csv":
        FRAME.write_csv(path)
    else:
        FRAME.write_ndjson(path)
    got = read_table(path)
    assert got.equals(FRAME)


def test_read_table_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        read_table(tmp_path / "nope.csv")
    assert_one_line(err, "nope.csv", "not found")


def test_read_table_unknown_extension_names_allowed(tmp_path: Path) -> None:
    path = write(tmp_path / "data.xlsx", "x")
    with pytest.raises(DataError) as err:
        read_table(path)
    assert_one_line(err, "data.xlsx", ".xlsx", ".parquet", ".csv", ".jsonl")


def test_read_table_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "catalog.parquet"
    path.write_bytes(b"definitely not parquet")
    with pytest.raises(DataError) as err:
        read_table(path)
    assert_one_line(err, "catalog.parquet: not a valid Parquet file (")


def test_read_table_corrupt_jsonl_names_row(tmp_path: Path) -> None:
    path = write(tmp_path / "events.jsonl", '{"a": 1}\n{"a": 2}\n{oops\n')
    with pytest.raises(DataError) as err:
        read_table(path)
    assert_one_line(err, "events.jsonl row 3", "JSON")
    assert err.value.row == 3


def test_read_table_ragged_csv_names_row(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "a,b\n1,2\n3,4\n5,6,7\n")
    with pytest.raises(DataError) as err:
        read_table(path)
    assert_one_line(err, "t.csv row 3", "CSV")


@pytest.mark.parametrize("content", ["", "a,b\n"])
def test_read_table_empty(tmp_path: Path, content: str) -> None:
    path = write(tmp_path / "empty.csv", content)
    with pytest.raises(DataError) as err:
        read_table(path)
    assert_one_line(err, "empty.csv", "empty")


def test_read_table_keeps_leading_zeros_for_string_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "item_id,n\n007,1\n")
    assert read_table(path, string_columns=["item_id"])["item_id"].to_list() == ["007"]


# --------------------------------------------------------------------------- DataError


def test_data_error_at_names_file_row_and_column() -> None:
    err = DataError.at("/some/dir/inter.csv", "missing id\n(null)", row=4, column=Columns.USER)
    assert str(err) == "inter.csv row 4, column user_id: missing id (null)"
    assert (err.file, err.row, err.column) == ("inter.csv", 4, "user_id")
    assert isinstance(err, ValueError)


# --------------------------------------------------------------------------- catalog contract


def test_catalog_contract_is_one_list_of_columns() -> None:
    assert CATALOG_COLUMNS == ("item_id", "title", "description", "image_path", "audio_path")
    assert set(CATALOG_REQUIRED) | set(CATALOG_OPTIONAL) == set(CATALOG_COLUMNS)
    assert not set(CATALOG_REQUIRED) & set(CATALOG_OPTIONAL)
    assert set(CATALOG_TEXT) | set(CATALOG_MEDIA.values()) | {Columns.ITEM} == set(CATALOG_COLUMNS)


def test_training_and_embeddings_read_the_same_catalog_columns(tmp_path: Path) -> None:
    """load_catalog's standard columns are the ones the embedding job reads its inputs from."""
    from tlrec.embeddings.catalog_inputs import encoder_inputs, item_texts
    from tlrec.training.data import load_catalog

    (tmp_path / "a.jpg").write_bytes(b"")
    catalog = load_catalog(write(tmp_path / "catalog.csv", "item_id,title,description,image_path,genre\n"
                                                         "1,Lamp,Brass,a.jpg,home\n2,Chair,,,home\n"))
    assert tuple(catalog.columns[: len(CATALOG_COLUMNS)]) == CATALOG_COLUMNS
    assert item_texts(catalog) == ["Lamp. Brass", "Chair"]
    assert encoder_inputs(catalog, "image", None) == [Path(catalog[Columns.IMAGE_PATH][0]), None]
    assert encoder_inputs(catalog, "audio", None) == [None, None]
