"""Next-item prediction behind the real HTTP API: `GET /v1/users/{id}/next` (training events, then
fresh ones: a click changes the answer at once) and `POST /v1/next` (an anonymous sequence, in order,
with event types and times), served by a `tlrec train --task next-item` artifact."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import polars as pl
import pytest

from tlrec.services.jobs import evaluate_job, train_job

SASREC = {"dim": 16, "heads": 1, "blocks": 1, "max_len": 16, "epochs": 4, "eval_every": 2, "content_hidden": 16,
          "progress": False}


@pytest.fixture(scope="module")
def next_api(world, make_server, tmp_path_factory) -> Iterator:
    root = tmp_path_factory.mktemp("next")
    version = train_job(world.catalog, world.train, root / "artifacts", vectors_path=world.vectors, model="sasrec",
                        config=SASREC, task="next-item")
    server = make_server(root / "artifacts", root / "events").start()
    try:
        yield server, version
    finally:
        server.stop()


def _ids(body: dict) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def test_manifest_records_the_task(next_api):
    _, version = next_api
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["task"] == "next-item" and manifest["model"] == "sasrec"


def test_user_next_reacts_to_a_fresh_click(next_api, world):
    server, version = next_api
    train = pl.read_parquet(world.train)
    uid = train["user_id"].unique().sort()[5]
    seen = set(train.filter(pl.col("user_id") == uid)["item_id"])
    with server.client() as client:
        before = client.get(f"/v1/users/{uid}/next", params={"k": 10}).json()
        assert before["source"] == "model" and before["model_version"] == version.name and len(before["items"]) == 10
        assert not seen & set(_ids(before))
        clicked = _ids(before)[-1]
        ack = client.post("/v1/events", json={"events": [{"user_id": uid, "item_id": clicked, "event": "click"}]},
                          headers={"Idempotency-Key": uuid.uuid4().hex}).json()
        assert ack["accepted"] == 1
        after = client.get(f"/v1/users/{uid}/next", params={"k": 10}).json()
        assert clicked not in _ids(after) and _ids(after) != _ids(before)


def test_post_next_reads_the_order_events_and_times(next_api, world):
    server, _ = next_api
    items = pl.read_parquet(world.train)["item_id"].unique().sort().to_list()[:6]
    sequence = [{"item_id": i, "event": "view", "timestamp": 1_700_000_000 + 60 * t} for t, i in enumerate(items)]
    with server.client() as client:
        forward = client.post("/v1/next", json={"history": sequence, "k": 5}).json()
        assert forward["source"] == "history" and len(forward["items"]) == 5
        assert not set(items) & set(_ids(forward))
        backward = client.post("/v1/next", json={"history": sequence[::-1], "k": 5}).json()
        assert [i["score"] for i in backward["items"]] != [i["score"] for i in forward["items"]], "order matters"
        unknown = client.post("/v1/next", json={"history": [{"item_id": "no-such-item"}], "k": 5}).json()
        assert unknown["source"] == "popular" and unknown["fallback_reason"] == "no_known_items"
        bad = client.post("/v1/next", json={"history": [{"item_id": items[0], "event": ""}], "k": 5})
        assert bad.status_code == 422


def test_evaluate_next_item_reports_hit_rate_ndcg_and_mrr(next_api, world):
    _, version = next_api
    results = evaluate_job(version, world.test, (10,), task="next-item")
    (metrics,) = results.values()
    assert set(metrics) == {"hit_rate@10", "ndcg@10", "mrr", "users"}
    assert metrics["users"] > 0 and 0 <= metrics["ndcg@10"] <= metrics["hit_rate@10"] <= 1
    assert metrics["mrr"] <= 1
