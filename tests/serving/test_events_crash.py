"""kill -9 during event ingestion, restart, recover: every acknowledged event is there, none twice.

Three kill points drawn at random (the seed is in the failure message, to reproduce);
after the second kill a torn half-record is appended, as a kill in the middle of a
write leaves one. Bounded: each trial sends for at most ~1 s after its first acknowledgement, with 4 clients.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter

import httpx
import polars as pl
from tlrec.serving.event_frames import encode_record, scan
from tlrec.serving.event_log import LOG_NAME

TRIALS = 3
CLIENTS = 4


def _batch(rng: random.Random, items: list[str], n_user: int) -> list[dict]:
    user = f"crash-user-{n_user % 5}"
    return [{"user_id": user, "item_id": rng.choice(items), "timestamp": 1_800_000_000 + rng.randrange(10**6),
             "event": rng.choice(["view", "click", "purchase"]), "value": rng.choice([None, 1.0, 4.5])}
            for _ in range(rng.randint(1, 6))]


def _check_log(path, acked: dict[str, list[dict]], sent: dict[str, list[dict]], seed: int) -> Counter:
    records, end = scan(path)
    keys = Counter(r["key"] for r in records)
    assert not [k for k, n in keys.items() if n > 1], f"seed {seed}: a batch stored twice"
    missing = [k for k in acked if keys[k] != 1]
    assert not missing, f"seed {seed}: acknowledged batches lost: {missing[:5]}"
    for r in records:
        assert r["events"] == sent[r["key"]], f"seed {seed}: batch {r['key']} stored differently"
    return keys


def test_kill_9_during_ingestion_loses_no_acknowledged_event(world, tmp_path, make_server, keys):
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    items = pl.read_parquet(world.catalog)["item_id"].to_list() + ["not-in-catalog-1"]
    server = make_server(world.popularity_version, tmp_path / "events")
    log_path = tmp_path / "events" / LOG_NAME
    sent: dict[str, list[dict]] = {}
    acked: dict[str, list[dict]] = {}
    unexpected: list[int] = []

    for trial in range(TRIALS):
        server.start()
        stop = threading.Event()

        def client(worker: int, trial: int = trial) -> None:
            local = random.Random(seed * 100 + trial * 10 + worker)
            with server.client(timeout=5) as c:
                for n in range(5000):  # bounded; the kill ends it much sooner
                    if stop.is_set():
                        return
                    key = f"t{trial}-w{worker}-{n}"
                    batch = sent[key] = _batch(local, items, n)
                    try:
                        r = c.post("/v1/events", json={"events": batch}, headers={"Idempotency-Key": key})
                    except httpx.TransportError:
                        return
                    if r.status_code == 200:
                        acked[key] = batch
                    else:
                        unexpected.append(r.status_code)

        threads = [threading.Thread(target=client, args=(w,)) for w in range(CLIENTS)]
        before = len(acked)
        for t in threads:
            t.start()
        for _ in range(100):  # bounded (<= 5 s): kill once ingestion is under way
            if len(acked) > before:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))
        server.kill()
        stop.set()
        for t in threads:
            t.join(timeout=15)
        assert not unexpected, f"seed {seed}: non-200 answers {unexpected[:5]}"
        if trial == 1:  # what a kill in the middle of a write leaves behind
            frame = encode_record({"seq": 10**6, "key": "torn", "events": _batch(rng, items, 0)})
            with open(log_path, "ab") as fh:
                fh.write(frame[: rng.randint(1, len(frame) - 1)])
        _check_log(log_path, acked, sent, seed)

    assert len(acked) >= TRIALS, f"seed {seed}: too few batches acknowledged to mean anything"
    server.start()  # recover: replay (cutting the torn tail), then clients retry what was not acknowledged
    try:
        retry = [k for k in sent if k not in acked] + rng.sample(sorted(acked), min(30, len(acked)))
        with server.client(timeout=10) as c:
            for key in retry:
                r = c.post("/v1/events", json={"events": sent[key]}, headers={"Idempotency-Key": key})
                assert r.status_code == 200, f"seed {seed}: retry of {key} got {r.status_code}"
                if key in acked:
                    assert r.json()["duplicate"] is True
                acked[key] = sent[key]
            body = c.get("/v1/users/crash-user-1/recommendations").json()
            assert body["source"] == "history"  # replayed events personalise at once
    finally:
        server.stop()
    stored = _check_log(log_path, acked, sent, seed)
    assert set(stored) == set(sent), f"seed {seed}: every batch sent is stored once after the retries"
