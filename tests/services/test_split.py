"""`tlrec split` and the evaluation warning on training data (issue 16, item 5)."""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from tlrec.services.cli import app
from tlrec.services.jobs import evaluate_job
from tlrec.services.split import split_job


def _both(out: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    return pl.read_parquet(out / "train.parquet"), pl.read_parquet(out / "test.parquet")


def test_split_by_time_holds_out_each_users_newest_events(tiny_world, tmp_path: Path) -> None:
    result = split_job(tiny_world.train, tmp_path, "time", 0.25)
    train, test = _both(tmp_path)
    everything = pl.read_parquet(tiny_world.train)
    assert (result.by, result.train_rows + result.test_rows) == ("time", everything.height)
    assert pl.concat([train, test]).sort(pl.all()).equals(everything.sort(pl.all()))
    last_train = train.group_by("user_id").agg(pl.col("timestamp").max())
    first_test = test.group_by("user_id").agg(pl.col("timestamp").min())
    both = last_train.join(first_test, on="user_id", suffix="_test")
    assert both.height == test["user_id"].n_unique() and (both["timestamp"] <= both["timestamp_test"]).all()


@pytest.mark.parametrize("by, column", [("users", "user_id"), ("items", "item_id")])
def test_split_by_users_or_items_shares_none(tiny_world, tmp_path: Path, by: str, column: str) -> None:
    split_job(tiny_world.train, tmp_path, by, 0.2)
    train, test = _both(tmp_path)
    assert set(train[column]).isdisjoint(set(test[column]))
    share = test[column].n_unique() / (train[column].n_unique() + test[column].n_unique())
    assert share == pytest.approx(0.2, abs=0.02)


def test_auto_says_what_it_chose_and_the_cli_prints_the_files(tiny_world, tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["split", "--interactions", str(tiny_world.train), "--out", str(tmp_path)])
    assert done.exit_code == 0, done.output
    assert done.stdout.split() == [str(tmp_path / "train.parquet"), str(tmp_path / "test.parquet")]


@pytest.mark.parametrize("args, message", [
    (["--by", "month"], "--by: expected one of auto, time, random, global-time, users, items, got 'month'"),
    (["--test-fraction", "1.5"], "--test-fraction: expected a number between 0 and 1, got 1.5"),
])
def test_bad_options_are_one_line(tiny_world, tmp_path: Path, args: list[str], message: str) -> None:
    done = CliRunner().invoke(app, ["split", "--interactions", str(tiny_world.train), "--out", str(tmp_path), *args])
    assert done.exit_code == 2 and message in done.stderr and not (tmp_path / "train.parquet").exists()


def test_evaluating_on_the_training_data_warns_and_says_why(tiny_world, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tlrec.services.jobs"):
        results = evaluate_job(tiny_world.artifacts, tiny_world.train, [10])
    assert results["all"]["ndcg@10"] == 0.0  # every test item is seen, so excluded: the figures say nothing
    assert "100% of the test interactions are user-item pairs the model was trained on" in caplog.text
    assert "tlrec split" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tlrec.services.jobs"):
        evaluate_job(tiny_world.artifacts, tiny_world.test, [10])  # held-out events: no warning
    assert "trained on" not in caplog.text
