"""Tests for training/data.py (validation messages, timestamps), IdMap, InteractionData."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tlrec.tables import Columns, DataError
from tlrec.training.data import load_catalog, load_interactions
from tlrec.training.id_map import IdMap
from tlrec.training.interaction_data import InteractionData

C = Columns


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def assert_one_line(err: pytest.ExceptionInfo, *fragments: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    return msg


# --------------------------------------------------------------------------- load_catalog


def test_load_catalog_normalises(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    path = write(
        tmp_path / "catalog.csv",
        "item_id,title,image_path,genre\n"
        "1,Alpha,media/a.jpg,rock\n"
        "2,,,jazz\n"
        "3,Gamma,/abs/c.png,pop\n",
    )
    cat = load_catalog(path)
    assert cat.columns == [C.ITEM, C.TITLE, C.DESCRIPTION, C.IMAGE_PATH, C.AUDIO_PATH, "genre"]
    assert cat[C.ITEM].to_list() == ["1", "2", "3"]
    assert cat.schema[C.ITEM] == pl.String
    assert cat[C.TITLE].to_list() == ["Alpha", "", "Gamma"]
    assert cat[C.DESCRIPTION].to_list() == ["", "", ""]
    assert cat[C.IMAGE_PATH].to_list() == [str(tmp_path.resolve() / "media" / "a.jpg"), None, "/abs/c.png"]
    assert cat[C.AUDIO_PATH].to_list() == [None, None, None]
    assert cat.schema[C.AUDIO_PATH] == pl.String
    assert cat["genre"].to_list() == ["rock", "jazz", "pop"]


def test_load_catalog_parquet_int_ids(tmp_path: Path) -> None:
    path = tmp_path / "catalog.parquet"
    pl.DataFrame({"item_id": [10, 20], "title": ["a", None], "description": [None, "d"]}).write_parquet(path)
    cat = load_catalog(path)
    assert cat[C.ITEM].to_list() == ["10", "20"]
    assert cat[C.TITLE].to_list() == ["a", ""]
    assert cat[C.DESCRIPTION].to_list() == ["", "d"]


def test_load_catalog_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path / "catalog.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(DataError) as err:
        load_catalog(path)
    msg = assert_one_line(err)
    assert msg == "catalog.csv: missing column 'item_id' (found: a, b, c)"


def test_load_catalog_null_item_id_names_row(tmp_path: Path) -> None:
    path = write(tmp_path / "catalog.csv", "item_id,title\na,A\nb,B\n,C\n")
    with pytest.raises(DataError) as err:
        load_catalog(path)
    assert_one_line(err, "catalog.csv row 3, column item_id")


def test_load_catalog_duplicate_id(tmp_path: Path) -> None:
    rows = [f"i{n},t" for n in range(1, 17)] + ["i3,again"]  # data row 17 repeats row 3
    path = write(tmp_path / "catalog.csv", "item_id,title\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as err:
        load_catalog(path)
    msg = assert_one_line(err)
    assert msg == "catalog.csv row 17, column item_id: duplicate id 'i3' (first at row 3)"


# --------------------------------------------------------------------------- load_interactions

T0 = 1_600_000_000


def test_load_interactions_defaults_and_order(tmp_path: Path) -> None:
    path = write(
        tmp_path / "inter.csv",
        "user_id,item_id,timestamp,extra\n"
        f"u2,a,{T0 + 5},x\n"
        f"u1,b,{T0 + 9},x\n"
        f"u1,a,{T0 + 1},x\n"
        f"u1,c,{T0 + 1},x\n",  # tie with the row above: file order kept
    )
    df = load_interactions(path)
    assert df.columns == [C.USER, C.ITEM, C.TIMESTAMP, C.EVENT, C.VALUE]
    assert df.schema[C.TIMESTAMP] == pl.Int64
    assert df.schema[C.VALUE] == pl.Float64
    assert df.rows() == [
        ("u1", "a", T0 + 1, "interaction", 1.0),
        ("u1", "c", T0 + 1, "interaction", 1.0),
        ("u1", "b", T0 + 9, "interaction", 1.0),
        ("u2", "a", T0 + 5, "interaction", 1.0),
    ]


def test_load_interactions_timestamp_strings(tmp_path: Path) -> None:
    path = write(
        tmp_path / "inter.csv",
        "user_id,item_id,timestamp\n"
        "u,a,1600000000\n"
        "u,b,2020-09-13T12:26:40Z\n"  # == 1600000000
        "u,c,2020-09-13T14:26:41+02:00\n"  # == 1600000001
        "u,d,2020-09-13 12:26:42\n"  # naive -> UTC
        "u,e,2020-09-14\n"  # midnight UTC = 1600041600
        "u,f,1600000003.9\n",  # floored
    )
    got = dict(load_interactions(path).select(C.ITEM, C.TIMESTAMP).iter_rows())
    assert got == {"a": T0, "b": T0, "c": T0 + 1, "d": T0 + 2, "e": 1_600_041_600, "f": T0 + 3}


def test_load_interactions_datetime_and_float_columns(tmp_path: Path) -> None:
    path = tmp_path / "inter.parquet"
    pl.DataFrame(
        {
            "user_id": [1, 1, 2],
            "item_id": [5, 6, 5],
            "timestamp": [  # naive datetimes are read as UTC
                dt.datetime(2020, 9, 13, 12, 26, 40),
                dt.datetime(2020, 9, 13, 12, 26, 41),
                dt.datetime(2020, 9, 13, 12, 26, 42),
            ],
        }
    ).write_parquet(path)
    df = load_interactions(path)
    assert df[C.TIMESTAMP].to_list() == [T0, T0 + 1, T0 + 2]
    assert df[C.USER].to_list() == ["1", "1", "2"]

    path_tz = tmp_path / "tz.parquet"
    pl.DataFrame(
        {"user_id": ["u"], "item_id": ["a"], "timestamp": [dt.datetime(2020, 9, 13, 14, 26, 40)]}
    ).with_columns(pl.col("timestamp").dt.replace_time_zone("Etc/GMT-2")).write_parquet(path_tz)
    assert load_interactions(path_tz)[C.TIMESTAMP].to_list() == [T0]  # 14:26:40+02:00

    path2 = tmp_path / "dates.parquet"
    pl.DataFrame(
        {"user_id": ["u"], "item_id": ["a"], "timestamp": [dt.date(2020, 9, 14)]}
    ).write_parquet(path2)
    assert load_interactions(path2)[C.TIMESTAMP].to_list() == [1_600_041_600]

    path3 = tmp_path / "floats.jsonl"
    write(path3, '{"user_id": "u", "item_id": "a", "timestamp": 1600000000.7, "value": 3}\n')
    df3 = load_interactions(path3)
    assert df3[C.TIMESTAMP].to_list() == [T0]
    assert df3[C.VALUE].to_list() == [3.0]


def test_load_interactions_bad_timestamp(tmp_path: Path) -> None:
    path = write(
        tmp_path / "inter.csv",
        "user_id,item_id,timestamp\nu,a,2020-01-01\nu,b,yesterday\nu,c,also bad\n",
    )
    with pytest.raises(DataError) as err:
        load_interactions(path)
    assert_one_line(err, "inter.csv row 2, column timestamp", "'yesterday'")


def test_load_interactions_null_ids_and_timestamps(tmp_path: Path) -> None:
    path = write(tmp_path / "inter.csv", "user_id,item_id,timestamp\nu,a,1\n,b,2\n")
    with pytest.raises(DataError) as err:
        load_interactions(path)
    assert_one_line(err, "inter.csv row 2, column user_id")

    path = write(tmp_path / "inter2.csv", "user_id,item_id,timestamp\nu,a,1\nu,b,2\nu,,3\n")
    with pytest.raises(DataError) as err:
        load_interactions(path)
    assert_one_line(err, "inter2.csv row 3, column item_id")

    path = write(tmp_path / "inter3.csv", "user_id,item_id,timestamp\nu,a,1\nu,b,\n")
    with pytest.raises(DataError) as err:
        load_interactions(path)
    assert_one_line(err, "inter3.csv row 2, column timestamp")


def test_load_interactions_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path / "inter.csv", "user_id,item_id\nu,a\n")
    with pytest.raises(DataError) as err:
        load_interactions(path)
    assert_one_line(err, "inter.csv: missing column 'timestamp' (found: user_id, item_id)")


def test_load_interactions_bad_value(tmp_path: Path) -> None:
    path = write(
        tmp_path / "inter.csv",
        "user_id,item_id,timestamp,event,value\nu,a,1,view,2.5\nu,b,2,,\nu,c,3,buy,lots\n",
    )
    with pytest.raises(DataError) as err:
        load_interactions(path)
    assert_one_line(err, "inter.csv row 3, column value", "'lots'")


def test_load_interactions_event_and_value(tmp_path: Path) -> None:
    path = write(
        tmp_path / "inter.csv",
        "user_id,item_id,timestamp,event,value\nu,a,1,view,2.5\nu,b,2,,\n",
    )
    df = load_interactions(path)
    assert df[C.EVENT].to_list() == ["view", "interaction"]
    assert df[C.VALUE].to_list() == [2.5, 1.0]


def _catalog_and_interactions(tmp_path: Path) -> tuple[pl.DataFrame, Path]:
    catalog = load_catalog(write(tmp_path / "catalog.csv", "item_id,title\na,A\nb,B\n"))
    path = write(
        tmp_path / "inter.csv",
        "user_id,item_id,timestamp\nu,a,1\nu,x,2\nv,y,3\nv,b,4\nv,x,5\n",
    )
    return catalog, path


def test_unknown_items_dropped_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    catalog, path = _catalog_and_interactions(tmp_path)
    with caplog.at_level(logging.WARNING, logger="tlrec.training.data"):
        df = load_interactions(path, catalog=catalog)
    assert df[C.ITEM].to_list() == ["a", "b"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "dropped 3 interactions with 2 item ids not in the catalog (e.g. 'x', 'y')" in w
        for w in warnings
    ), warnings


def test_unknown_items_strict(tmp_path: Path) -> None:
    catalog, path = _catalog_and_interactions(tmp_path)
    with pytest.raises(DataError) as err:
        load_interactions(path, catalog=catalog, strict=True)
    assert_one_line(err, "inter.csv row 2, column item_id", "'x'", "catalog")


# --------------------------------------------------------------------------- IdMap


def test_idmap_round_trip_and_unknowns(tmp_path: Path) -> None:
    m = IdMap.from_values(["b", "a", "b", "c"])
    assert len(m) == 3
    assert m.external.dtype == object
    assert m.external.tolist() == ["b", "a", "c"]
    assert "a" in m and "z" not in m
    idx = m.to_internal(["c", "b", "a"])
    assert idx.dtype == np.int64
    assert idx.tolist() == [2, 0, 1]
    assert m.to_external(idx) == ["c", "b", "a"]
    assert m.to_internal(pl.Series(["a", "zz"]), missing="ignore").tolist() == [1, -1]
    with pytest.raises(KeyError, match="zz"):
        m.to_internal(["a", "zz"])
    with pytest.raises(ValueError, match="missing"):
        m.to_internal(["a"], missing="skip")  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        m.to_external([3])
    with pytest.raises(IndexError):
        m.to_external([-1])
    with pytest.raises(ValueError, match="duplicate"):
        IdMap(["a", "a"])

    path = tmp_path / "items.json"
    m.save(path)
    assert json.loads(path.read_text()) == ["b", "a", "c"]
    assert IdMap.load(path) == m

    write(tmp_path / "bad.json", '{"not": "a list"}')
    with pytest.raises(DataError, match="bad.json"):
        IdMap.load(tmp_path / "bad.json")


# --------------------------------------------------------------------------- InteractionData


def test_interaction_data_matrix() -> None:
    inter = pl.DataFrame(
        {
            C.USER: ["u1", "u1", "u1", "u2", "u2"],
            C.ITEM: ["a", "c", "a", "c", "zz"],  # 'zz' is not in the catalog -> dropped
            C.TIMESTAMP: [1, 2, 3, 4, 5],
            C.EVENT: ["view"] * 5,
            C.VALUE: [1.0, 2.0, 3.0, 0.5, 9.0],
        }
    )
    items = IdMap(["a", "b", "c"])  # 'b' has no interactions but keeps an index
    data = InteractionData.build(inter, items)
    assert data.n_users == 2 and data.n_items == 3
    assert data.users.external.tolist() == ["u1", "u2"]
    assert data.interactions.height == 4
    assert data.interactions[C.USER_IDX].to_list() == [0, 0, 0, 1]
    assert data.interactions[C.ITEM_IDX].to_list() == [0, 2, 0, 2]
    assert data.interactions.schema[C.ITEM_IDX] == pl.Int64

    binary = data.matrix()
    assert binary.dtype == np.float32 and binary.shape == (2, 3)
    np.testing.assert_array_equal(binary.toarray(), [[1, 0, 1], [0, 0, 1]])
    # u1/a: 1 + 3; u1/c: 2; u2/c: 0.5
    np.testing.assert_array_equal(data.matrix(binary=False).toarray(), [[4, 0, 2], [0, 0, 0.5]])
    np.testing.assert_array_equal(data.seen().toarray(), binary.toarray())

    # with a given user map, unknown users are dropped and indices follow the map
    users = IdMap(["u2", "u9"])
    data2 = InteractionData.build(inter, items, users=users)
    assert data2.n_users == 2
    np.testing.assert_array_equal(data2.matrix().toarray(), [[0, 0, 1], [0, 0, 0]])
