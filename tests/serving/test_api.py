"""The HTTP API on a real uvicorn server (127.0.0.1, bounded request loops)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(world) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", "--artifacts", str(world.artifacts),
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):  # bounded: at most ~60 s
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError("server did not come up in 60 s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_healthz_names_version(server, world):
    body = httpx.get(f"{server}/healthz").json()
    assert body == {"status": "ok", "model_version": world.ncf_version.name}


def test_recommendations_for_known_user(server, world):
    import polars as pl

    train = pl.read_parquet(world.train)
    user = train["user_id"][0]
    seen = set(train.filter(pl.col("user_id") == user)["item_id"])
    body = httpx.get(f"{server}/recommendations/{user}", params={"k": 7}).json()
    assert body["source"] == "model" and body["user_id"] == user
    assert [i["rank"] for i in body["items"]] == list(range(1, 8))
    assert not seen & {i["item_id"] for i in body["items"]}


def test_unknown_user_falls_back_to_popular(server):
    body = httpx.get(f"{server}/recommendations/someone-new", params={"k": 3}).json()
    assert body["source"] == "popular" and len(body["items"]) == 3


@pytest.mark.parametrize("k", [0, -1, 100_000, "ten"])
def test_bad_k_is_422(server, k):
    assert httpx.get(f"{server}/recommendations/u0001", params={"k": k}).status_code == 422
