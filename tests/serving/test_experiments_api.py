"""A/B experiments in the API, on a real uvicorn (127.0.0.1, bounded request loops).

One server with two experiment files (``--experiment``, repeated): ``old-test`` (traffic
1.0, but stopped in 2020: nobody is in it) listed first, then ``ranker`` (traffic 0.5,
control = popularity, treatment = NCF). The default model is a third version name (a copy
of the NCF one), so every answer says which model gave it. Each answer must match
``ServedModel`` called directly for the model ``assign_variant`` picks; the exposure log
must hold one line per user in the experiment after repeated requests (fallback answers
included) and none for anybody else; ``tlrec ab analyze`` must read it; a reload naming a
corrupt variant artifact must be refused while every old model keeps answering.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from tlrec.serving.api.exposure_recorder import ExposureRecorder
from tlrec.serving.api.prometheus import Metrics
from tlrec.serving.experiments import assign_variant, load_experiment
from tlrec.serving.exposure_log import ExposureLog
from tlrec.serving.served_model import ServedModel
from tlrec.serving.settings import Settings

K = 8
KNOWN_USERS = 40
NEW_USERS = 10
REPEATS = 3
RANKER = """\
name: ranker
salt: serve-test
traffic: 0.5
description: NCF (treatment) against popularity (control)
variants:
  - {{name: control, artifact: v-pop, weight: 0.5}}
  - {{name: treatment, artifact: {treatment}, weight: 0.5}}
"""
OLD = """\
name: old-test
salt: x
traffic: 1.0
start: 2019-01-01
stop: 2020-01-01
variants:
  - {name: a, artifact: v-ncf, weight: 0.5}
  - {name: b, artifact: v-pop, weight: 0.5}
"""


def _same_ranking(body: dict, expected, what: str) -> None:
    """Same items in the same order; two items may swap only where their scores tie (1e-4)."""
    got = [(i["item_id"], i["score"]) for i in body["items"]]
    want = list(zip(expected.item_ids, expected.scores))[: len(got)]
    assert len(got) == len(want) == K, what
    for pos, ((gi, gs), (wi, ws)) in enumerate(zip(got, want)):
        assert abs(gs - ws) <= 1e-4 * max(1.0, abs(ws)), f"{what}: rank {pos + 1}: {gi} {gs} vs {wi} {ws}"
        if gi != wi:
            ties = [i for i, s in want if i != wi and abs(ws - s) <= 1e-4 * max(1.0, abs(ws))]
            assert gi in ties, f"{what}: {got} vs {want}"


@pytest.fixture(scope="module")
def ab(world, tmp_path_factory, make_server):
    """The server, its files, the models loaded here, and every answer of the request rounds."""
    tmp = tmp_path_factory.mktemp("ab-serve")
    root = tmp / "artifacts"
    root.mkdir()
    for name, src in (("v-default", world.ncf_version), ("v-ncf", world.ncf_version),
                      ("v-pop", world.popularity_version)):
        shutil.copytree(src, root / name)
    (root / "current").write_text("v-default")
    ranker, old = tmp / "ranker.yaml", tmp / "old.yaml"
    ranker.write_text(RANKER.format(treatment="v-ncf"))
    old.write_text(OLD)
    events = tmp / "events"
    # a long deadline: on a busy machine a timeout would answer with popular items, and this test
    # compares every answer with the variant's model (deadlines have their own tests)
    server = make_server(root, events, env={"TLREC_DEADLINE_MS": "30000"},
                         args=("--experiment", str(old), "--experiment", str(ranker))).start()
    users = pl.read_parquet(world.train)["user_id"].unique().sort().head(KNOWN_USERS).to_list()
    users += [f"new-user-{i:02d}" for i in range(NEW_USERS)]  # unknown to every model: fallback answers
    answers: dict[str, list[dict]] = {u: [] for u in users}
    started = time.time()
    try:
        with server.client() as client:
            for _ in range(REPEATS):
                for u in users:
                    r = client.get(f"/v1/users/{u}/recommendations", params={"k": K})
                    assert r.status_code == 200, r.text
                    answers[u].append(r.json())
            for u in users:  # a sent history naming the user: the variant's model too, no second exposure
                r = client.post("/v1/recommendations", json={"history": [], "k": K, "user_id": u})
                assert r.status_code == 200, r.text
                answers[u].append(r.json())
            anonymous = client.post("/v1/recommendations", json={"history": [], "k": K}).json()
            metrics = client.get("/metrics").text
        yield {"server": server, "root": root, "ranker": ranker, "old": old, "users": users, "answers": answers,
               "anonymous": anonymous, "metrics": metrics, "exposures": events / "exposures.jsonl",
               "started": started, "experiment": load_experiment(ranker),
               "models": {name: ServedModel.load(root / name) for name in ("v-default", "v-ncf", "v-pop")}}
    finally:
        server.stop()


def test_each_user_is_answered_by_their_variants_model(ab):
    exp, models = ab["experiment"], ab["models"]
    model_of = {"control": "v-pop", "treatment": "v-ncf", None: "v-default"}
    seen_variants = Counter()
    for user, bodies in ab["answers"].items():
        variant = assign_variant(user, exp)
        seen_variants[variant] += 1
        version = model_of[variant]
        expected = models[version].recommend([user], K)[0]
        for body in bodies[:REPEATS]:
            assert body["model_version"] == version, (user, body)
            assert (body["experiment"], body["variant"]) == ((None, None) if variant is None else ("ranker", variant))
            _same_ranking(body, expected, f"{user} ({variant})")
            if user.startswith("new-user"):
                assert body["source"] == "popular" and body["fallback_reason"] == "unknown_user"
        posted = bodies[REPEATS]  # empty history: the variant's model falls back to its popular items
        assert posted["model_version"] == version and posted["variant"] == variant
    assert all(seen_variants[v] >= 5 for v in ("control", "treatment", None)), seen_variants
    assert ab["anonymous"]["experiment"] is None and ab["anonymous"]["model_version"] == "v-default"


def test_one_exposure_per_user_and_experiment(ab):
    exp = ab["experiment"]
    lines = [json.loads(line) for line in ab["exposures"].read_text().splitlines()]
    inside = {u: assign_variant(u, exp) for u in ab["users"] if assign_variant(u, exp) is not None}
    assert Counter((e["experiment"], e["user_id"]) for e in lines) == Counter({("ranker", u): 1 for u in inside})
    assert {e["user_id"]: e["variant"] for e in lines} == inside  # unknown users in the experiment too
    assert all(set(e) == {"user_id", "experiment", "variant", "timestamp"} for e in lines)
    assert all(ab["started"] - 1 <= e["timestamp"] <= time.time() for e in lines)
    for variant in ("control", "treatment"):
        n = sum(v == variant for v in inside.values())
        assert f'tlrec_exposures_total{{experiment="ranker",variant="{variant}"}} {n:.1f}' in ab["metrics"]
        assert (f'tlrec_experiment_requests_total{{experiment="ranker",variant="{variant}"}} '
                f'{n * (REPEATS + 1):.1f}') in ab["metrics"]
    for name in ("tlrec_exposures_total", "tlrec_experiment_requests_total"):
        assert f'{name}{{experiment="old-test"' not in ab["metrics"]  # stopped in 2020: nobody is in it
    assert 'tlrec_variant_info{experiment="ranker",variant="treatment",version="v-ncf"} 1.0' in ab["metrics"]


def test_ab_analyze_reads_the_served_exposures(ab, tmp_path):
    from tlrec.services.cli import app
    from typer.testing import CliRunner

    lines = [json.loads(line) for line in ab["exposures"].read_text().splitlines()]
    rng = np.random.default_rng(0)
    rows = [(e["user_id"], "click", 1.0, int(e["timestamp"]) + 5) for e in lines for _ in range(rng.poisson(1.0))]
    rows += [(e["user_id"], "purchase", 20.0, int(e["timestamp"]) + 60) for e in lines if rng.random() < 0.3]
    outcomes = tmp_path / "outcomes.csv"
    pl.DataFrame(rows, schema=["user_id", "event", "value", "timestamp"], orient="row").write_csv(outcomes)
    result = CliRunner().invoke(app, ["ab", "analyze", str(ab["ranker"]), "--exposures", str(ab["exposures"]),
                                      "--outcomes", str(outcomes), "--json", "--looks", "3"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    per_variant = Counter(e["variant"] for e in lines)
    assert {v["variant"]: v["users"] for v in doc["variants"]} == dict(per_variant)
    assert {e["metric"] for e in doc["effects"]} == {"ctr", "conversion", "value_per_user"}


def _bad_copy(src: Path, dst: Path) -> Path:
    bad = shutil.copytree(src, dst)
    weights = bad / "model" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    return bad


def test_reload_is_all_or_nothing(ab, keys):
    server, root, ranker, exp = ab["server"], ab["root"], ab["ranker"], ab["experiment"]
    users = ab["users"][:KNOWN_USERS]
    treated = next(u for u in users if assign_variant(u, exp) == "treatment")
    _bad_copy(root / "v-ncf", root / "v-bad")
    with server.client() as client, server.client(keys["admin"], timeout=60) as admin:
        before = client.get(f"/v1/users/{treated}/recommendations", params={"k": K}).json()
        unchanged = admin.post("/v1/admin/reload")
        assert unchanged.status_code == 200 and unchanged.json()["changed"] is False, unchanged.text
        ranker.write_text(RANKER.format(treatment="v-bad"))
        refused = admin.post("/v1/admin/reload")
        error = refused.json()["error"]
        assert refused.status_code == 409 and "\n" not in error, refused.text
        assert "checksum mismatch" in error and "'ranker' variant 'treatment'" in error, error
        after = client.get(f"/v1/users/{treated}/recommendations", params={"k": K}).json()
        assert after == before and after["model_version"] == "v-ncf"
        ranker.write_text(RANKER.format(treatment="v-default"))  # a good change: a version already loaded
        ok = admin.post("/v1/admin/reload")
        assert ok.status_code == 200 and ok.json()["changed"] is True, ok.text
        assert {(v["experiment"], v["variant"], v["model_version"]) for v in ok.json()["variants"]} == {
            ("old-test", "a", "v-ncf"), ("old-test", "b", "v-pop"), ("ranker", "control", "v-pop"),
            ("ranker", "treatment", "v-default")}
        now = client.get(f"/v1/users/{treated}/recommendations", params={"k": K}).json()
        assert now["model_version"] == "v-default" and now["variant"] == "treatment"
        metrics = client.get("/metrics").text
    assert 'tlrec_reloads_total{outcome="refused"} 1.0' in metrics
    assert 'version="v-bad"' not in metrics


def test_serve_refuses_a_corrupt_variant_before_binding(ab, repo, tmp_path):
    import os
    import subprocess
    import sys

    _bad_copy(ab["root"] / "v-pop", tmp_path / "v-pop-bad")
    exp = tmp_path / "bad.yaml"
    exp.write_text(RANKER.format(treatment="v-ncf").replace("artifact: v-pop", f"artifact: {tmp_path / 'v-pop-bad'}"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLREC_")}
    proc = subprocess.run(
        [sys.executable, "-m", "tlrec.services.cli", "serve", "--artifacts", str(ab["root"]), "--port", "9",
         "--insecure", "--experiment", str(exp)],
        cwd=repo, env={**env, "TLREC_EVENTS_DIR": str(tmp_path / "ev")}, capture_output=True, text=True, timeout=120,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "bad.yaml: experiment 'ranker' variant 'control'" in errors[0] and "checksum mismatch" in errors[0]


# ---------------------------------------------------------------------------- pieces, no server
def test_experiments_setting_is_comma_separated(monkeypatch, tmp_path):
    monkeypatch.setenv("TLREC_EXPERIMENTS", "a.yaml, b/c.yaml,")
    settings = Settings(artifacts=tmp_path / "artifacts")
    assert settings.experiments == [Path("a.yaml"), Path("b/c.yaml")]
    assert settings.resolved_exposures_file == tmp_path / "events" / "exposures.jsonl"


def test_recorder_groups_writes_and_retries_a_failed_one(tmp_path):
    class FlakyLog(ExposureLog):
        fail = 1
        calls: list[int] = []

        def log_batch(self, exposures):
            exposures = list(exposures)
            self.calls.append(len(exposures))
            if self.fail:
                self.fail -= 1
                raise OSError("disk full")
            return super().log_batch(exposures)

    async def main() -> tuple[list, list, list, object]:
        metrics = Metrics()
        rec = ExposureRecorder(FlakyLog(tmp_path / "x.jsonl"), metrics)
        first = [rec.record("u1", "e", "a", 1.0)]
        failed = [await f for f in first if f is not None]
        futures = [rec.record(f"u{i}", "e", "a", 2.0) for i in range(1, 6)] + [rec.record("u1", "e", "a", 3.0)]
        assert futures[0] is futures[-1]  # the same user while being written: one write
        written = [await f for f in futures if f is not None]
        again = [rec.record(f"u{i}", "e", "a", 4.0) for i in range(1, 6)]
        await rec.close()
        return failed, written, again, metrics

    failed, written, again, metrics = asyncio.run(main())
    assert failed == [False] and all(written) and again == [None] * 5
    assert FlakyLog.calls == [1, 5]  # the failed one, then one grouped write of five (u1 retried)
    lines = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert sorted(e["user_id"] for e in lines) == [f"u{i}" for i in range(1, 6)]
    text = metrics.render().decode()
    assert 'tlrec_exposures_total{experiment="e",variant="a"} 5.0' in text
    assert 'tlrec_exposure_errors_total{reason="write_failed"} 1.0' in text


def test_recorder_answers_before_a_slow_write_finishes(tmp_path):
    async def slow(fn, *args):
        await asyncio.sleep(0.3)
        return fn(*args)

    async def main() -> tuple[float, bool, Metrics]:
        metrics = Metrics()
        rec = ExposureRecorder(ExposureLog(tmp_path / "x.jsonl"), metrics, offload=slow)
        fut = rec.record("u1", "e", "a", 1.0)
        started = time.perf_counter()
        await rec.settle(fut, 0.05)
        waited = time.perf_counter() - started
        result = await fut  # the write was not cancelled
        await rec.close()
        return waited, result, metrics

    waited, result, metrics = asyncio.run(main())
    assert waited < 0.25 and result is True
    assert 'tlrec_exposure_errors_total{reason="late"} 1.0' in metrics.render().decode()
    assert json.loads((tmp_path / "x.jsonl").read_text())["user_id"] == "u1"
