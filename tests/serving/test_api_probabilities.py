"""Calibrated probabilities behind the real HTTP API: `POST /v1/users/{id}/propensity` and
`GET /v1/users/{id}/return`, served beside the recommender by `tlrec serve --propensity --return`;
the same answers as `tlrec predict`, and fresh events count at once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import polars as pl
import pytest

from tlrec.services.propensity_jobs import train_propensity_job, train_return_job
from tlrec.training.propensity_artifact import PropensityArtifact
from tlrec.training.return_artifact import ReturnArtifact

DAY = 86_400
#: The server runs each model call on one thread (``intra_op_threads``), this process on two, so the
#: float32 sums inside the nets round in another order: a logit may differ in its last bit.
FLOAT32_ROUNDING = 1e-6


@pytest.fixture(scope="module")
def probability_api(world, make_server, tmp_path_factory) -> Iterator:
    root = tmp_path_factory.mktemp("probabilities")
    settings = {"progress": False}
    propensity = train_propensity_job(world.catalog, world.train, root / "propensity", "click",
                                      vectors_path=world.vectors, config={**settings, "epochs": 5})
    returns = train_return_job(world.catalog, world.train, root / "return", 7 * DAY, vectors_path=world.vectors,
                               config=settings)
    server = make_server(world.artifacts, root / "events",
                         args=("--propensity", str(root / "propensity"), "--return", str(root / "return"))).start()
    try:
        yield server, PropensityArtifact.load(propensity)[0], ReturnArtifact.load(returns)[0]
    finally:
        server.stop()


def _post_events(client, events: list[dict]) -> None:
    ack = client.post("/v1/events", json={"events": events}, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert ack.status_code == 200, ack.text


def test_propensity_answers_as_tlrec_predict_does(probability_api, world):
    server, artifact, _ = probability_api
    train = pl.read_parquet(world.train)
    user = train["user_id"].unique().sort()[3]
    items = train["item_id"].unique().sort().to_list()[:5]
    expected = artifact.predict([user] * len(items), items)["probability"].to_list()
    with server.client() as client:
        body = client.post(f"/v1/users/{user}/propensity", json={"item_ids": items}).json()
        assert body["event"] == "click" and body["known_user"] and body["fresh_events"] == 0
        assert [i["item_id"] for i in body["items"]] == items
        assert [i["probability"] for i in body["items"]] == pytest.approx(expected, abs=FLOAT32_ROUNDING)
        assert client.post(f"/v1/users/{user}/propensity", json={"item_ids": items, "event": "click"}).status_code == 200
        wrong = client.post(f"/v1/users/{user}/propensity", json={"item_ids": items, "event": "purchase"})
        assert wrong.status_code == 422 and "'click'" in wrong.json()["error"]
        missing = client.post(f"/v1/users/{user}/propensity", json={"item_ids": [items[0], "no-such-item"]})
        assert missing.status_code == 404 and "no-such-item" in missing.json()["error"]
        assert client.post(f"/v1/users/{user}/propensity", json={"item_ids": []}).status_code == 422


def test_fresh_events_change_the_propensity_at_once(probability_api, world):
    server, artifact, _ = probability_api
    items = pl.read_parquet(world.train)["item_id"].unique().sort().to_list()[:4]
    user = f"newcomer-{uuid.uuid4().hex[:6]}"
    with server.client() as client:
        before = client.post(f"/v1/users/{user}/propensity", json={"item_ids": items}).json()
        assert not before["known_user"] and before["fresh_events"] == 0
        _post_events(client, [{"user_id": user, "item_id": i, "event": "click"} for i in items * 3])
        after = client.post(f"/v1/users/{user}/propensity", json={"item_ids": items}).json()
    assert after["fresh_events"] == 12
    fresh = [(i, "click", None) for i in items * 3]
    expected = artifact.predict_user(user, items, fresh)["probability"].to_list()
    assert [i["probability"] for i in after["items"]] == pytest.approx(expected, abs=FLOAT32_ROUNDING)
    # a user who clicks everything they see is more likely to click: the user's rate counts
    assert sum(i["probability"] for i in after["items"]) > sum(i["probability"] for i in before["items"])


def test_return_answers_as_tlrec_predict_does_and_a_fresh_event_moves_the_as_of(probability_api, world):
    server, _, artifact = probability_api
    train = pl.read_parquet(world.train)
    last_seen = train.group_by("user_id").agg(pl.col("timestamp").max()).sort("timestamp")
    quiet = last_seen["user_id"][0]  # the user quiet for longest: a low chance of coming back
    expected = artifact.predict([quiet, "stranger"])
    with server.client() as client:
        body = client.get(f"/v1/users/{quiet}/return").json()
        assert body["known_user"] and body["horizon_days"] == 7.0 and body["as_of"] == artifact.model.as_of
        assert body["probability"] == pytest.approx(expected["probability"][0], abs=FLOAT32_ROUNDING)
        stranger = client.get("/v1/users/stranger/return").json()
        assert not stranger["known_user"] and stranger["probability"] == pytest.approx(artifact.model.prior)
        when = artifact.model.as_of + DAY
        _post_events(client, [{"user_id": quiet, "item_id": train["item_id"][0], "timestamp": when + 60 * k}
                              for k in range(5)])
        after = client.get(f"/v1/users/{quiet}/return").json()
    assert after["as_of"] == when + 240 and after["probability"] > body["probability"]


def test_a_model_that_is_not_served_is_a_404_that_says_how(world, make_server, tmp_path):
    server = make_server(world.artifacts, tmp_path / "events").start()
    try:
        with server.client() as client:
            response = client.get("/v1/users/u1/return")
            assert response.status_code == 404 and "--return" in response.json()["error"]
            response = client.post("/v1/users/u1/propensity", json={"item_ids": ["x"]})
            assert response.status_code == 404 and "--propensity" in response.json()["error"]
    finally:
        server.stop()
