"""Hot reload under load: 10 swaps, good and corrupt versions alternating, concurrent clients.

Zero 5xx; every answer names a good version; a corrupt or mismatched version (checksum,
index dimension, missing file) is refused with a one-line 409 and the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import httpx
import numpy as np
import polars as pl
import pytest

from tlrec.files import sha256_file
from tlrec.training.index import VectorIndex
from tlrec.training.model_artifact import INDEX_FILE

CLIENTS = 6
# (version to point `current` at, expected refusal text or None for a good one)
SWAPS = [
    ("good-b", None), ("bad-checksum", "checksum mismatch"), ("good-a", None), ("bad-dim", "index holds"),
    ("good-b", None), ("bad-missing", "missing"), ("good-a", None), ("bad-checksum", "checksum mismatch"),
    ("good-b", None), ("bad-dim", "index holds"),
]


def _point(root, name: str) -> None:
    tmp = root / "current.tmp"
    tmp.write_text(name)
    os.replace(tmp, root / "current")


@pytest.fixture
def versions(world, tmp_path):
    """An artifacts root with two good versions (NCF, popularity) and three broken copies of the NCF one."""
    root = tmp_path / "artifacts"
    root.mkdir()
    shutil.copytree(world.ncf_version, root / "good-a")
    shutil.copytree(world.popularity_version, root / "good-b")
    bad = shutil.copytree(world.ncf_version, root / "bad-checksum")
    weights = bad / "model" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    bad = shutil.copytree(world.ncf_version, root / "bad-dim")  # checksums right, index of another dimension
    old = VectorIndex.load(bad / INDEX_FILE)
    VectorIndex.build(np.random.default_rng(0).normal(size=(old.ntotal, old.dim + 3)).astype(np.float32)).save(
        bad / INDEX_FILE)
    manifest = json.loads((bad / "manifest.json").read_text())
    size = (bad / INDEX_FILE).stat().st_size
    manifest["files"][INDEX_FILE] = {"sha256": sha256_file(bad / INDEX_FILE), "bytes": size}
    (bad / "manifest.json").write_text(json.dumps(manifest))
    bad = shutil.copytree(world.ncf_version, root / "bad-missing")
    (bad / "items.json").unlink()
    _point(root, "good-a")
    return root


async def _load(base: str, key: str, stop: asyncio.Event, users: list[str], items: list[str],
                seen: list[tuple[int, str | None]]) -> None:
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=30) as client:
        for n in range(10_000):  # bounded; stops when the swaps are done
            if stop.is_set():
                return
            kind = n % 4
            if kind == 0:
                r = await client.get(f"/v1/users/{users[n % len(users)]}/recommendations", params={"k": 10})
            elif kind == 1:
                r = await client.get(f"/v1/users/unknown-{n}/recommendations", params={"k": 5})
            elif kind == 2:
                history = [{"item_id": i} for i in items[n % 50 :][:5]]
                r = await client.post("/v1/recommendations", json={"history": history})
            else:
                r = await client.get(f"/v1/items/{items[n % len(items)]}/similar", params={"k": 5})
            seen.append((r.status_code, r.json().get("model_version")))


async def _swaps(base: str, admin_key: str, root, stop: asyncio.Event, outcomes: list) -> None:
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": admin_key}, timeout=120) as admin:
        try:
            serving = "good-a"
            for target, refusal in SWAPS:
                await asyncio.sleep(0.3)  # let load build up on the version in service
                _point(root, target)
                r = await admin.post("/v1/admin/reload")
                serving = target if refusal is None else serving
                live = (await admin.get("/healthz")).json()["model_version"]
                outcomes.append((target, refusal, r.status_code, r.json(), live, serving))
            await asyncio.sleep(0.3)
        finally:
            stop.set()


def test_reload_under_load(versions, world, tmp_path, make_server, keys):
    train = pl.read_parquet(world.train)
    users = train["user_id"].unique().sort().head(40).to_list()
    items = pl.read_parquet(world.catalog)["item_id"].to_list()
    server = make_server(versions, tmp_path / "events").start()
    seen: list[tuple[int, str | None]] = []
    outcomes: list = []

    async def main() -> None:
        stop = asyncio.Event()
        await asyncio.wait_for(asyncio.gather(
            _swaps(server.base, keys["admin"], versions, stop, outcomes),
            *(_load(server.base, keys["user"], stop, users, items, seen) for _ in range(CLIENTS)),
        ), timeout=240)

    try:
        asyncio.run(main())
        metrics = httpx.get(f"{server.base}/metrics").text
    finally:
        server.stop()

    assert len(outcomes) == len(SWAPS)
    for target, refusal, status, body, live, serving in outcomes:
        if refusal is None:
            assert status == 200 and body["model_version"] == target and body["changed"], body
        else:
            assert status == 409 and refusal in body["error"] and "\n" not in body["error"], body
        assert live == serving, f"after {target}: {live} serves, expected {serving}"
    statuses = {s for s, _ in seen}
    assert statuses == {200}, f"non-200 answers under reload: {statuses}"
    versions_seen = {v for _, v in seen}
    assert versions_seen == {"good-a", "good-b"}, versions_seen
    assert len(seen) >= 100
    assert 'tlrec_reloads_total{outcome="refused"} 5.0' in metrics
    assert 'tlrec_reloads_total{outcome="ok"} 5.0' in metrics
    assert 'tlrec_model_info{version="good-b"} 1.0' in metrics and 'version="good-a"' not in metrics
