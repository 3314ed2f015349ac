"""API keys: X-API-Key for /v1, a separate admin key for /v1/admin, refusing to start without keys."""

from __future__ import annotations

import os
import time

import httpx
import pytest

ROUTES = [
    ("GET", "/v1/users/u0001/recommendations", None),
    ("POST", "/v1/recommendations", {"history": [], "k": 3}),
    ("GET", "/v1/items/anything/similar", None),
    ("POST", "/v1/events", {"events": [{"user_id": "auth-user", "item_id": "a"}]}),
    ("POST", "/v1/admin/reload", None),
    ("GET", "/v1/ping", None),
]


WRONG = {
    "none": lambda k: None, "empty": lambda k: "", "other": lambda k: "wrong", "prefix": lambda k: k[:-1],
    "longer": lambda k: k + "x", "case": lambda k: k.upper(),
}


@pytest.mark.parametrize("wrong", sorted(WRONG))
@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_no_or_wrong_key_is_401(api, keys, method, path, body, wrong):
    key = WRONG[wrong](keys["user"])
    headers = {} if key is None else {"X-API-Key": key}
    r = httpx.request(method, f"{api.base}{path}", json=body, headers=headers)
    assert r.status_code == 401, r.text
    assert r.json() == {"error": "missing or invalid API key (X-API-Key)", "detail": None}


@pytest.mark.parametrize("who", ["user", "other"])
def test_user_key_cannot_reload(api, keys, who):
    r = httpx.post(f"{api.base}/v1/admin/reload", headers={"X-API-Key": keys[who]})
    assert r.status_code == 403 and "admin" in r.json()["error"]


@pytest.mark.parametrize("who", ["user", "other", "admin"])
def test_user_and_admin_keys_reach_user_routes(api, keys, who):
    assert httpx.get(f"{api.base}/v1/ping", headers={"X-API-Key": keys[who]}).json() == {"status": "ok"}


def test_admin_key_reloads(api, keys, world):
    r = httpx.post(f"{api.base}/v1/admin/reload", headers={"X-API-Key": keys["admin"]}, timeout=30)
    assert r.status_code == 200 and r.json()["model_version"] == world.ncf_version.name


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_need_no_key(api, path):
    assert httpx.get(f"{api.base}{path}").status_code == 200


def test_insecure_serves_without_keys(world, tmp_path):
    from fastapi.testclient import TestClient

    from tlrec.serving.api.app import create_app
    from tlrec.serving.settings import Settings

    app = create_app(Settings(artifacts=world.artifacts, insecure=True, events_dir=tmp_path, threads=1))
    with TestClient(app) as client:
        for _ in range(300):  # bounded: <= 30 s
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.1)
        assert client.get("/v1/users/u0001/recommendations", params={"k": 2}).status_code == 200
        assert client.post("/v1/admin/reload").status_code == 200


def test_keys_from_settings_are_comma_separated(monkeypatch):
    from tlrec.serving.settings import InsecureConfigError, Settings

    for name in [k for k in os.environ if k.startswith("TLREC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TLREC_API_KEYS", " a1, b2 ,,c3")
    s = Settings()
    assert [k.get_secret_value() for k in s.api_keys] == ["a1", "b2", "c3"] and s.admin_key is None
    assert "a1" not in repr(s)  # secrets are masked
    monkeypatch.setenv("TLREC_API_KEYS", "")
    with pytest.raises(InsecureConfigError, match="--insecure"):
        Settings().check_secure()
    Settings(insecure=True).check_secure()
