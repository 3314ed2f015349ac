"""Fallbacks within the deadline, errors without traces, micro-batching (in-process app, real model)."""

from __future__ import annotations

import asyncio
import threading
import time

import polars as pl
import pytest
from fastapi.testclient import TestClient

from tlrec.serving.api.app import create_app
from tlrec.serving.api.batching import MicroBatcher
from tlrec.serving.api.service import run_user_batch
from tlrec.serving.served_model import ServedModel
from tlrec.serving.settings import Settings

DEADLINE_MS = 300


@pytest.fixture(scope="module")
def served(world) -> ServedModel:
    return ServedModel.load(world.artifacts)


@pytest.fixture
def client(served, world, tmp_path):
    settings = Settings(artifacts=world.artifacts, api_keys="k", events_dir=tmp_path, deadline_ms=DEADLINE_MS,
                        threads=1)
    with TestClient(create_app(settings, served), raise_server_exceptions=False,
                    headers={"X-API-Key": "k"}) as c:
        for _ in range(300):  # bounded: <= 30 s
            if c.get("/readyz").status_code == 200:
                break
            time.sleep(0.1)
        yield c


def _known(world, n: int = 0) -> tuple[str, set[str]]:
    train = pl.read_parquet(world.train)
    user = train["user_id"].unique().sort()[n]
    return user, set(train.filter(pl.col("user_id") == user)["item_id"])


def _boom(*args, **kwargs):
    raise RuntimeError("ranking exploded: secret internals")


def _slow(*args, **kwargs):
    time.sleep(2 * DEADLINE_MS / 1000)
    raise RuntimeError("too late anyway")


@pytest.mark.parametrize(("patch", "reason"), [(_boom, "error"), (_slow, "timeout")])
def test_ranking_failure_falls_back_within_deadline(client, served, world, monkeypatch, patch, reason):
    user, seen = _known(world)
    monkeypatch.setattr(served, "recommend", patch)
    start = time.perf_counter()
    r = client.get(f"/v1/users/{user}/recommendations", params={"k": 6})
    elapsed = time.perf_counter() - start
    body = r.json()
    assert r.status_code == 200 and body["source"] == "popular" and body["fallback_reason"] == reason
    assert len(body["items"]) == 6 and not seen & {i["item_id"] for i in body["items"]}
    assert elapsed < 1.5 * DEADLINE_MS / 1000 + 0.5
    assert "secret" not in r.text


def test_history_and_similar_fall_back(client, served, world, monkeypatch):
    items = pl.read_parquet(world.catalog)["item_id"].to_list()
    monkeypatch.setattr(served, "recommend_history", _boom)
    monkeypatch.setattr(served, "similar_items", _boom)
    body = client.post("/v1/recommendations", json={"history": [{"item_id": items[0]}], "k": 4}).json()
    assert body["source"] == "popular" and body["fallback_reason"] == "error" and len(body["items"]) == 4
    assert items[0] not in {i["item_id"] for i in body["items"]}
    body = client.get(f"/v1/items/{items[0]}/similar", params={"k": 4}).json()
    assert body["source"] == "popular" and body["fallback_reason"] == "error"


def test_unexpected_error_is_a_json_500_without_trace(client, served, world, monkeypatch):
    user, _ = _known(world)
    monkeypatch.setattr(served, "recommend", _boom)
    monkeypatch.setattr(served, "popular", _boom)  # the fallback fails too
    r = client.get(f"/v1/users/{user}/recommendations")
    assert r.status_code == 500
    assert r.json() == {"error": "internal error (logged on the server)", "detail": None}
    assert "Traceback" not in r.text and "secret" not in r.text


def test_batched_answers_equal_single_answers(served, world):
    users = pl.read_parquet(world.train)["user_id"].unique().sort().head(12).to_list() + ["nobody-here"]
    fresh = {users[2]: [next(iter(_known(world, 5)[1]))]}
    batch = [(u, fresh.get(u, [])) for u in users]
    together = run_user_batch((served, 10, True), batch)
    alone = [run_user_batch((served, 10, True), [b])[0] for b in batch]
    assert [(r.item_ids, r.source) for r in together] == [(r.item_ids, r.source) for r in alone]
    assert together[-1].source == "popular" and together[2].source == "model"


def test_micro_batcher_merges_concurrent_requests_and_keeps_order():
    calls: list[list[int]] = []
    gate = threading.Event()

    def run(key, items):
        gate.wait(5)
        calls.append(list(items))
        if key == "bad":
            raise ValueError("bad batch")
        return [key * 100 + i for i in items]

    async def main():
        batcher = MicroBatcher(run, max_batch=8, max_inflight=1)
        first = asyncio.ensure_future(batcher.submit(1, 0))  # occupies the only slot
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(batcher.submit(1, i)) for i in range(1, 11)]
        bad = asyncio.ensure_future(batcher.submit("bad", 0))
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(first, *rest)
        with pytest.raises(ValueError, match="bad batch"):
            await bad
        return results

    results = asyncio.run(main())
    assert results == [100 + i for i in range(11)]
    assert calls[0] == [0] and calls[1] == list(range(1, 9)) and [0] in calls[2:] and [9, 10] in calls[2:]
