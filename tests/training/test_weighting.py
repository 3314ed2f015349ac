"""Count-valued interactions (plays, views) as confidence: detection, the log weighting, EASE's choice."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tlrec.training.id_map import IdMap
from tlrec.training.interaction_data import InteractionData
from tlrec.training.models import EASEConfig, EASEModel


def _data(values: list[float], users: list[str] | None = None, items: list[str] | None = None) -> InteractionData:
    n = len(values)
    users = users or [f"u{i % 7}" for i in range(n)]
    items = items or [f"i{i % 11}" for i in range(n)]
    df = pl.DataFrame({"user_id": users, "item_id": items, "timestamp": list(range(n)), "event": ["play"] * n,
                       "value": values})
    return InteractionData.build(df, IdMap(sorted(set(items))))


def test_log_weighting_known_answer():
    data = _data([1.0, 10.0, 100.0], users=["a", "a", "b"], items=["x", "y", "x"])
    m = data.weighted("log").toarray()
    assert m[0, 0] == pytest.approx(1.0) and m[0, 1] == pytest.approx(1 + np.log(10))
    assert m[1, 0] == pytest.approx(1 + np.log(100))
    assert (data.weighted("binary").toarray() == (m > 0)).all()


def test_repeated_events_sum_before_the_log():
    data = _data([3.0, 7.0], users=["a", "a"], items=["x", "x"])
    assert data.weighted("log").toarray()[0, 0] == pytest.approx(1 + np.log(10))


def test_counts_are_told_from_ratings_and_binary():
    rng = np.random.default_rng(0)
    plays = np.floor(rng.lognormal(1.0, 1.5, 400)) + 1
    assert _data(plays.tolist()).has_counts()
    assert not _data(rng.choice([0.5, 1, 2, 3, 3.5, 4, 5], 400).tolist()).has_counts()  # ratings
    assert not _data([1.0] * 400).has_counts()  # binary
    assert not _data((-plays).tolist()).has_counts()


def test_ease_tries_log_counts_on_count_data_and_keeps_weights_on_reload(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for u in range(60):
        group = u % 3
        for j in rng.choice(np.arange(group * 10, group * 10 + 10), 6, replace=False):
            rows.append((f"u{u}", f"i{j}", float(np.floor(rng.lognormal(1.0, 1.5)) + 1)))
    df = pl.DataFrame(rows, schema=["user_id", "item_id", "value"], orient="row").with_columns(
        pl.int_range(pl.len()).alias("timestamp"), pl.lit("play").alias("event"))
    data = InteractionData.build(df, IdMap([f"i{j}" for j in range(30)]))
    assert data.has_counts()
    model = EASEModel(EASEConfig(l2_grid=[10.0, 100.0])).fit(data)
    assert model.weighting_ in ("binary", "log")
    model.save(tmp_path / "ease")
    again = EASEModel.load(tmp_path / "ease")
    users = np.arange(5)
    np.testing.assert_allclose(again.score(users), model.score(users), rtol=1e-6)
    forced = EASEModel(EASEConfig(l2=10.0, weighting="log")).fit(data)
    assert forced.weighting_ == "log" and not np.allclose(forced.user_items.data, 1.0)
