"""The routes behind the web console, on a real `tlrec serve` (see conftest): keys, catalog and media,
titles and explanations in the answers, histories, the experiments and models pages, local API docs."""

from __future__ import annotations

import base64
import math
import os
import re

import httpx
import polars as pl
import pytest

from tlrec.serving.console.catalog import Catalog

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _close(a: float, b: float, rel: float = 1e-4) -> bool:
    return abs(a - b) <= rel * (1.0 + abs(a) + abs(b))


def _titles(world) -> dict[str, str]:
    frame = pl.read_parquet(world.catalog)
    return dict(zip(frame["item_id"], frame["title"]))


# ---------------------------------------------------------------------------- page, docs, keys
def test_page_and_docs_need_no_cdn(console):
    page = httpx.get(f"{console.base}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for path in ("/docs", "/redoc"):
        html = httpx.get(console.base + path).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets and all(a.startswith("/") and not a.startswith("//") for a in assets), assets
        for asset in assets:
            assert httpx.get(console.base + asset).status_code == 200, asset
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert httpx.get(console.base + asset).status_code == 200, asset


def test_console_routes_take_the_api_keys(console, console_keys):
    assert httpx.get(f"{console.base}/v1/console/session").status_code == 401
    assert httpx.get(f"{console.base}/v1/console/session", headers={"X-API-Key": "nope"}).status_code == 401
    with console.client(console_keys["user"]) as user, console.client(console_keys["admin"]) as admin:
        session = user.get("/v1/console/session").json()
        assert session["role"] == "user" and admin.get("/v1/console/session").json()["role"] == "admin"
        assert session["model"] == "ncf" and session["explanation_method"] and session["catalog_items"] > 0
        assert session["experiments"] == ["console-ab"]
        assert user.post("/v1/admin/reload").status_code == 403  # the page's reload button needs the admin key


# ---------------------------------------------------------------------------- catalog and media
def test_catalog_search_and_item(console, world):
    titles = _titles(world)
    product = next(i for i in titles if i.startswith("prod-"))
    word = titles[product].split()[0]
    with console.client() as api:
        found = api.get("/v1/catalog/search", params={"q": word.lower(), "limit": 5}).json()
        assert found["items"] and all(word.lower() in i["title"].lower() for i in found["items"])
        assert found["total"] == sum(word.lower() in t.lower() for t in titles.values())
        assert api.get("/v1/catalog/search", params={"q": product}).json()["items"][0]["item_id"] == product
        item = api.get(f"/v1/catalog/items/{product}").json()
        assert item["title"] == titles[product] and item["has_image"] and not item["has_audio"]
        assert {v["modality"] for v in item["vectors"]} == {"text", "image"}
        assert all(v["encoder"] and v["source"] for v in item["vectors"])
        assert item["known_to_model"] and item["metadata"]["domain"] == "product"
        assert api.get("/v1/catalog/items/no-such-item").status_code == 404


def test_media_served_with_their_type_and_nothing_else(console, world):
    ids = list(_titles(world))
    product = next(i for i in ids if i.startswith("prod-"))
    track = next(i for i in ids if i.startswith("track-"))
    film = next(i for i in ids if i.startswith("film-"))
    with console.client() as api:
        image = api.get(f"/v1/catalog/items/{product}/image")
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content.startswith(PNG_MAGIC) and image.headers["x-content-type-options"] == "nosniff"
        audio = api.get(f"/v1/catalog/items/{track}/audio")
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
        assert audio.content[:4] == b"RIFF"
        assert api.get(f"/v1/catalog/items/{film}/image").status_code == 404
        assert api.get(f"/v1/catalog/items/{product}/audio").status_code == 404
        assert api.get(f"/v1/catalog/items/{product}/secret").status_code == 422
        assert api.get(f"/v1/catalog/items/{product}/..%2f..%2fetc%2fpasswd").status_code in (404, 422)
    assert httpx.get(f"{console.base}/v1/catalog/items/{product}/image").status_code == 401


def test_catalog_serves_only_known_media_inside_its_folder(tmp_path):
    folder = tmp_path / "catalog"
    (folder / "media").mkdir(parents=True)
    (folder / "media" / "ok.png").write_bytes(PNG_MAGIC)
    (folder / "media" / "notes.txt").write_text("not an image")
    (tmp_path / "outside.png").write_bytes(PNG_MAGIC)
    os.symlink(tmp_path / "outside.png", folder / "media" / "link.png")
    rows = [("ok", "media/ok.png"), ("escape", "../outside.png"), ("link", "media/link.png"),
            ("text", "media/notes.txt"), ("url", "https://example.org/x.png"), ("none", None),
            ("absolute", str(tmp_path / "outside.png"))]
    pl.DataFrame({"item_id": [r[0] for r in rows], "title": [f"item {r[0]}" for r in rows],
                  "image_path": [r[1] for r in rows]}).write_csv(folder / "catalog.csv")
    catalog = Catalog.load(folder / "catalog.csv")
    assert catalog.media("ok", "image") == ((folder / "media" / "ok.png").resolve(), "image/png")
    for item in ("escape", "link", "text", "url", "none", "absolute", "missing-item"):
        assert catalog.media(item, "image") is None, item
    assert catalog.item("escape").media_named == frozenset({"image"}) and catalog.item("escape").image is None
    (folder / "media" / "ok.png").unlink()  # gone since loading: not served
    assert catalog.media("ok", "image") is None


# ---------------------------------------------------------------------------- answers: titles, explanations
def _check_explanations(body: dict, history: set[str]) -> None:
    assert body["source"] == "model" and body["explanation_method"], body
    for item in body["items"]:
        e = item["explanation"]
        assert e is not None and e["history_items"] > 0
        assert _close(e["score"], item["score"]), (e["score"], item["score"])
        listed = math.fsum(c["contribution"] for c in e["contributions"])
        assert _close(e["baseline"] + listed + e["other_contributions"] + e["head"], e["score"], 1e-6)
        assert _close(e["content"] + e["learned_id"] + e["head"], e["score"], 1e-6)
        sizes = [abs(c["contribution"]) for c in e["contributions"]]
        assert sizes == sorted(sizes, reverse=True) and len(sizes) == min(5, e["history_items"])
        assert {c["item_id"] for c in e["contributions"]} <= history
        assert all(c["title"] for c in e["contributions"])


def test_answers_carry_titles_and_exact_explanations(console, world, treatment_user):
    titles = _titles(world)
    seen = set(pl.read_parquet(world.train).filter(pl.col("user_id") == treatment_user)["item_id"])
    with console.client() as api:
        plain = api.get(f"/v1/users/{treatment_user}/recommendations", params={"k": 8}).json()
        assert plain["variant"] == "treatment" and plain["explanation_method"] is None
        assert all(i["title"] == titles[i["item_id"]] and i["explanation"] is None for i in plain["items"])
        body = api.get(f"/v1/users/{treatment_user}/recommendations", params={"k": 8, "explain": "true"}).json()
        assert [i["item_id"] for i in body["items"]] == [i["item_id"] for i in plain["items"]]
        _check_explanations(body, seen)
        assert any(abs(i["explanation"]["content"]) > 1e-6 for i in body["items"])  # content vectors count
        _check_explanations(api.get(f"/v1/users/{treatment_user}/next", params={"k": 5, "explain": "true"}).json(),
                            seen)
        similar = api.get(f"/v1/items/{body['items'][0]['item_id']}/similar", params={"k": 3}).json()
        assert all(i["title"] == titles[i["item_id"]] for i in similar["items"])


def test_explanations_follow_fresh_events(console, world, treatment_user):
    new_item = next(i for i in _titles(world)
                    if i not in set(pl.read_parquet(world.train).filter(pl.col("user_id") == treatment_user)["item_id"]))
    with console.client() as api:
        before = api.get(f"/v1/users/{treatment_user}/recommendations", params={"explain": "true"}).json()
        ack = api.post("/v1/events", json={"events": [{"user_id": treatment_user, "item_id": new_item,
                                                        "event": "purchase"}]})
        assert ack.status_code == 200
        after = api.get(f"/v1/users/{treatment_user}/recommendations", params={"explain": "true"}).json()
    seen = set(pl.read_parquet(world.train).filter(pl.col("user_id") == treatment_user)["item_id"]) | {new_item}
    _check_explanations(after, seen)
    assert after["items"][0]["explanation"]["history_items"] >= before["items"][0]["explanation"]["history_items"]


def test_a_model_that_cannot_split_says_why(console, control_user):
    with console.client() as api:
        body = api.get(f"/v1/users/{control_user}/recommendations", params={"explain": "true"}).json()
        assert body["variant"] == "control" and body["explanation_method"] is None
        assert "popularity" in body["explanation_unavailable"] and all(i["explanation"] is None for i in body["items"])
        unknown = api.get("/v1/users/nobody-at-all/recommendations", params={"explain": "true"}).json()
        assert unknown["source"] == "popular" and "popularity fallback" in unknown["explanation_unavailable"]


# ---------------------------------------------------------------------------- history, experiments, model
def test_history_oldest_first_then_fresh_events(console, world, control_user):
    train = pl.read_parquet(world.train).filter(pl.col("user_id") == control_user)
    with console.client() as api:
        api.post("/v1/events", json={"events": [{"user_id": control_user, "item_id": train["item_id"][0],
                                                  "event": "click"}]}).raise_for_status()
        body = api.get(f"/v1/users/{control_user}/history").json()
    assert body["known_user"] and body["total"] == train.height + 1
    training = [e for e in body["events"] if e["origin"] == "training"]
    assert [e["timestamp"] for e in training] == sorted(train["timestamp"].to_list())
    assert {e["event"] for e in training} <= {"view", "click", "cart", "purchase"} and all(e["title"] for e in training)
    assert body["events"][-1]["origin"] == "fresh" and body["events"][-1]["event"] == "click"
    assert "train.parquet" in body["source"]


def test_experiments_page_analyses_the_live_exposures(console, world, treatment_user, control_user):
    with console.client() as api:
        for user in (treatment_user, control_user):
            top = api.get(f"/v1/users/{user}/recommendations", params={"k": 3}).json()["items"][0]["item_id"]
            api.post("/v1/events", json={"events": [{"user_id": user, "item_id": top, "event": "click"}]})
        (exp,) = api.get("/v1/console/experiments").json()["experiments"]
    assert exp["name"] == "console-ab" and exp["traffic"] == 1.0 and exp["active"]
    variants = {v["name"]: v for v in exp["variants"]}
    assert variants["treatment"]["model_version"] == world.ncf_version.name
    assert variants["control"]["model_version"] == world.popularity_version.name
    assert variants["treatment"]["exposures"] >= 1 and variants["control"]["exposures"] >= 1
    analysis = exp["analysis"]
    assert analysis is not None, exp["analysis_note"]
    assert 0.0 <= analysis["srm_p_value"] <= 1.0 and analysis["control"] == "control"
    assert {e["metric"] for e in analysis["effects"]} == {"ctr", "conversion", "value_per_user"}
    assert all("ci_low" in e and "ci_high" in e for e in analysis["effects"])
    assert set(exp["plots"]) == {"effects.png", "variants.png", "sequential.png"}
    assert all(base64.b64decode(png).startswith(PNG_MAGIC) for png in exp["plots"].values())


def test_model_page_shows_manifest_validation_and_reports(console, world):
    with console.client() as api:
        report = api.get("/v1/console/model").json()
    assert report["version"] == world.ncf_version.name and report["model"] == "ncf"
    assert report["manifest"]["files"] and report["manifest"]["encoders"]
    (row,) = report["validation"]
    assert row["name"] == "ncf" and row["served"] and row["validation_ndcg"] > 0
    assert {g["variant"] for g in report["transfer"]["data"]["gains"]} == {"all", "all - text"}
    assert base64.b64decode(report["transfer"]["png"]).startswith(PNG_MAGIC)
    assert report["transfer"]["source"] == "reports folder: transfer/transfer.json"
    assert [r["encoder"] for r in report["encoders"]["data"]["results"]] == ["minilm", "efficientnet-lite0"]
    assert base64.b64decode(report["encoders"]["png"]).startswith(PNG_MAGIC)


@pytest.mark.parametrize("path", ["/v1/console/model", "/v1/console/experiments", "/v1/catalog/search",
                                  "/v1/users/u0001/history"])
def test_unknown_query_parameters_are_refused(console, path):
    with console.client() as api:
        assert api.get(path, params={"nope": "1"}).status_code == 422
