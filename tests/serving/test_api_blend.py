"""A blend (what `tlrec train --model auto` serves when EASE or a mix wins) behind the real HTTP API:
known users, fresh events, ad-hoc histories and new items all answered, through the same routes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import polars as pl
import pytest

from tlrec.services.jobs import train_job

BLEND = {
    "components": [
        {"model": "ease", "weight": 0.6, "config": {"l2": 100.0}},
        {"model": "ncf", "weight": 0.4, "config": {"epochs": 3, "dim": 16, "content_hidden": 32, "progress": False}},
    ],
    "cold_items_from": "ncf",
}


@pytest.fixture(scope="module")
def blend_api(world, make_server, tmp_path_factory) -> Iterator:
    root = tmp_path_factory.mktemp("blend")
    version = train_job(world.catalog, world.train, root / "artifacts", vectors_path=world.vectors, model="blend",
                        config=BLEND)
    server = make_server(root / "artifacts", root / "events").start()
    try:
        yield server, version
    finally:
        server.stop()


def _ids(body: dict) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def test_blend_serves_users_events_histories_and_new_items(blend_api, world):
    server, version = blend_api
    train = pl.read_parquet(world.train)
    uid = train["user_id"].unique().sort()[3]
    seen = set(train.filter(pl.col("user_id") == uid)["item_id"])
    with server.client() as client:
        body = client.get(f"/v1/users/{uid}/recommendations", params={"k": 8}).json()
        assert body["source"] == "model" and body["model_version"] == version.name and len(body["items"]) == 8
        assert not seen & set(_ids(body))

        first = _ids(body)[:2]
        events = [{"user_id": uid, "item_id": i, "event": "click", "timestamp": 1_800_000_000} for i in first]
        assert client.post("/v1/events", json={"events": events},
                           headers={"Idempotency-Key": uuid.uuid4().hex}).json()["accepted"] == 2
        after = client.get(f"/v1/users/{uid}/recommendations", params={"k": 8}).json()
        assert after["source"] in ("model", "history") and not set(first) & set(_ids(after))

        history = sorted(seen)[:3]
        hist = client.post("/v1/recommendations", json={"history": [{"item_id": i} for i in history], "k": 5}).json()
        assert hist["source"] == "history" and len(hist["items"]) == 5 and not set(history) & set(_ids(hist))

        catalog = pl.read_parquet(world.catalog)["item_id"]
        new_items = sorted(set(catalog) - set(train["item_id"]))[:5]  # no training event: scored from content
        assert new_items, "the demo world should have items without training events"
        ranked = client.post("/v1/recommendations", json={"history": [{"item_id": i} for i in history], "k": 3,
                                                          "candidates": new_items}).json()
        assert ranked["source"] == "history" and set(_ids(ranked)) <= set(new_items) and len(ranked["items"]) == 3
        scores = [i["score"] for i in ranked["items"]]
        assert scores == sorted(scores, reverse=True) and min(scores) > -1000, "new items get content scores"

        similar = client.get(f"/v1/items/{new_items[0]}/similar", params={"k": 4}).json()
        assert similar["source"] == "model" and len(similar["items"]) == 4, similar  # NCF's item space
        assert new_items[0] not in _ids(similar)
