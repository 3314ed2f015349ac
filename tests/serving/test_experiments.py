"""Experiment definitions, stable-hash assignment (golden vectors) and the exposure log."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from tlrec.serving.experiments import (
    Experiment,
    assign_many,
    assign_variant,
    hash_buckets,
    load_experiment,
    parse_experiment,
    resolve_artifact,
)
from tlrec.serving.exposure_log import ExposureLog
from tlrec.tables import DataError

YAML = """\
name: ranker-v2
salt: "2026-11"
traffic: 1.0
start: 2026-11-01
variants:
  - {name: control, artifact: v1, weight: 0.5}
  - {name: treatment, artifact: v2, weight: 0.5}
"""


def _experiment(**changes) -> Experiment:
    doc = {"name": "ranker-v2", "salt": "2026-11", "traffic": 1.0,
           "variants": [{"name": "control", "artifact": "v1", "weight": 0.5},
                        {"name": "treatment", "artifact": "v2", "weight": 0.5}]}
    doc.update(changes)
    return parse_experiment(doc)


# ------------------------------------------------------------------ the YAML model
def test_load_yaml_with_defaults(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(YAML)
    exp = load_experiment(path)
    assert exp.name == "ranker-v2" and exp.salt == "2026-11" and exp.control_variant == "control"
    assert exp.start == dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc) and exp.stop is None
    assert exp.weights == {"control": 0.5, "treatment": 0.5}
    assert exp.click_events == ["click"] and exp.value_event_names == ["purchase", "convert"]
    assert not exp.is_active(dt.datetime(2026, 10, 31, 23, 59)) and exp.is_active(dt.datetime(2026, 11, 1))
    assert Experiment.model_validate_json(exp.model_dump_json()) == exp  # round-trips
    shown = json.loads(exp.model_dump_json())  # what `tlrec ab validate` prints: no default left as null
    assert shown["control"] == "control" and shown["value_events"] == ["purchase", "convert"]


@pytest.mark.parametrize("text, expected", [
    (YAML.replace("weight: 0.5}\n", "weight: 0.6}\n", 1), "variants: variant weights must sum to 1, got 1.1"),
    (YAML.replace("name: treatment", "name: control"), "variant names must be unique, repeated: control"),
    (YAML.replace("traffic: 1.0", "traffic: 1.5"), "traffic: Input should be less than or equal to 1"),
    (YAML + "colour: blue\n", "colour: unknown key"),
    (YAML.replace("salt: \"2026-11\"\n", ""), "salt: Field required"),
    (YAML.replace("weight: 0.5}\n", "weight: lots}\n", 1), "variants.0.weight: Input should be a valid number"),
    (YAML + "stop: 2026-10-01\n", "must be after start"),
    (YAML + "control: nope\n", "control 'nope' is not a variant"),
    ("name: [unclosed\n", "not valid YAML (line 2, column 1"),
    ("- just\n- a list\n", "expected a mapping of experiment keys"),
    ("", "got an empty file"),
])
def test_bad_files_give_one_line_naming_the_file(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        load_experiment(path)
    message = str(info.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message


def test_missing_file():
    with pytest.raises(DataError, match="nope.yaml: experiment file not found"):
        load_experiment(Path("nope.yaml"))


def test_resolve_artifact(tmp_path):
    (tmp_path / "root" / "v1").mkdir(parents=True)
    (tmp_path / "local").mkdir()
    assert resolve_artifact("v1", tmp_path / "root") == tmp_path / "root" / "v1"
    assert resolve_artifact("local", tmp_path / "root", base_dir=tmp_path) == tmp_path / "local"
    with pytest.raises(DataError, match="artifact 'v9': not found"):
        resolve_artifact("v9", tmp_path / "root", base_dir=tmp_path)


# ------------------------------------------------------------------ assignment
GOLDEN_BUCKETS = {  # sha256("ranker-v2" US "2026-11" US unit): bytes 0-7 -> traffic, 8-15 -> variant
    "u0001": (0.8261334759408943, 0.4785510419138278),
    "u0003": (0.06839898714089232, 0.5699769059882528),
    "alice": (0.6940505618916265, 0.04607320244675661),
    "\u00fc-\u00f1": (0.25166087307698726, 0.2969793304014946),
}
GOLDEN_TWO_ARMS = {"u0001": "control", "u0002": "control", "u0003": "treatment", "alice": "control",
                   "bob": "treatment", "42": "treatment", "\u00fc-\u00f1": "control"}
GOLDEN_THREE_ARMS = ["b", "c", "b", None, "a", None, None]  # salt 2026-12, traffic 0.5, weights .2/.3/.5


def test_golden_vectors():
    for unit, buckets in GOLDEN_BUCKETS.items():
        assert hash_buckets(unit, "ranker-v2", "2026-11") == buckets
    exp = _experiment()
    assert {u: assign_variant(u, exp) for u in GOLDEN_TWO_ARMS} == GOLDEN_TWO_ARMS
    three = _experiment(salt="2026-12", traffic=0.5, variants=[
        {"name": "a", "artifact": "v1", "weight": 0.2}, {"name": "b", "artifact": "v2", "weight": 0.3},
        {"name": "c", "artifact": "v2", "weight": 0.5}])
    assert assign_many(list(GOLDEN_TWO_ARMS), three) == GOLDEN_THREE_ARMS


def test_salt_and_name_change_the_assignment():
    users = [f"u{i}" for i in range(2000)]
    base = assign_many(users, _experiment())
    for other in (_experiment(salt="2026-12"), _experiment(name="ranker-v3")):
        agree = np.mean([a == b for a, b in zip(base, assign_many(users, other))])
        assert 0.45 < agree < 0.55  # independent re-randomisation


def test_split_follows_weights():
    users = [f"user-{i}" for i in range(20_000)]
    exp = _experiment(variants=[{"name": "a", "artifact": "v1", "weight": 0.1},
                                {"name": "b", "artifact": "v2", "weight": 0.9}], traffic=0.5)
    got = assign_many(users, exp)
    assert abs(np.mean([g is not None for g in got]) - 0.5) < 0.015
    assigned = [g for g in got if g is not None]
    assert abs(np.mean([g == "a" for g in assigned]) - 0.1) < 0.01


def test_raising_traffic_never_moves_an_assigned_user():
    users = [f"u{i}" for i in range(5000)]
    previous = None
    for traffic in (0.05, 0.2, 0.5, 0.9, 1.0):
        now = assign_many(users, _experiment(traffic=traffic))
        if previous is not None:
            for before, after in zip(previous, now):
                assert before is None or after == before
        previous = now
    assert all(v is not None for v in previous)


def test_same_assignment_across_processes_and_hash_seeds(tmp_path):
    users = [f"u{i}" for i in range(300)] + ["alice", "\u00fc-\u00f1"]
    code = ("import json, sys\nfrom serving.experiments import parse_experiment, assign_many\n"
            "exp = parse_experiment(json.loads(sys.argv[1]))\n"
            "print(json.dumps(assign_many(json.loads(sys.argv[2]), exp)))\n")
    doc = _experiment(traffic=0.7).model_dump(mode="json")
    outputs = []
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(doc), json.dumps(users)], env=env,
                              capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2])
        outputs.append(json.loads(proc.stdout))
    assert outputs[0] == outputs[1] == outputs[2] == assign_many(users, _experiment(traffic=0.7))


# ------------------------------------------------------------------ exposure log
def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_exposure_log_one_line_per_user_and_experiment(tmp_path):
    path = tmp_path / "logs" / "exposures.jsonl"
    with ExposureLog(path) as log:
        assert log.log("u1", "exp", "control", timestamp=100.0)
        assert not log.log("u1", "exp", "treatment", timestamp=101.0)  # already exposed
        assert log.log("u1", "other-exp", "a", timestamp=102.0)
        assert log.log_many([("u2", "exp", "treatment", 103.0), ("u2", "exp", "treatment", 104.0),
                             ("u3", "exp", "control", None)]) == 2
        assert log.has("u2", "exp") and not log.has("u2", "other-exp") and len(log) == 4
    rows = _lines(path)
    assert [(r["user_id"], r["experiment"], r["variant"]) for r in rows] == [
        ("u1", "exp", "control"), ("u1", "other-exp", "a"), ("u2", "exp", "treatment"), ("u3", "exp", "control")]
    assert rows[0]["timestamp"] == 100.0 and rows[3]["timestamp"] > 1.7e9
    with ExposureLog(path) as again:  # reopening knows who was exposed
        assert not again.log("u1", "exp", "control")
    assert len(_lines(path)) == 4


def test_exposure_log_reads_with_the_analysis_loader(tmp_path):
    from tlrec.services.ab.inputs import load_exposures

    path = tmp_path / "exposures.jsonl"
    with ExposureLog(path) as log:
        log.log("u1", "ranker-v2", "control", 1_800_000_000.5)
        log.log("u2", "ranker-v2", "treatment", 1_800_000_001.0)
    frame = load_exposures(path, _experiment())
    assert frame.rows() == [("u1", "ranker-v2", "control", 1_800_000_000),
                            ("u2", "ranker-v2", "treatment", 1_800_000_001)]


def test_exposure_log_cuts_a_torn_line(tmp_path):
    path = tmp_path / "exposures.jsonl"
    with ExposureLog(path) as log:
        log.log("u1", "exp", "control", 1.0)
    with open(path, "ab") as fh:
        fh.write(b'{"user_id": "u2", "experim')  # a writer died mid-append
    with ExposureLog(path) as log:
        assert log.log("u2", "exp", "treatment", 2.0)
    assert [r["user_id"] for r in _lines(path)] == ["u1", "u2"]


def test_exposure_log_across_writers_and_threads(tmp_path):
    """Two writers on one file (as two API processes) and 8 threads each: every unit exactly once."""
    path = tmp_path / "exposures.jsonl"
    logs = [ExposureLog(path), ExposureLog(path)]

    def work(log: ExposureLog, seed: int) -> None:
        rng = np.random.default_rng(seed)
        for u in rng.permutation(200):
            log.log(f"u{u}", "exp", "control", 1.0)

    threads = [threading.Thread(target=work, args=(logs[i % 2], i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for log in logs:
        log.close()
    users = [r["user_id"] for r in _lines(path)]
    assert sorted(users) == sorted(f"u{u}" for u in range(200))


def test_exposure_log_across_processes(tmp_path):
    path = tmp_path / "exposures.jsonl"
    code = ("import sys\nfrom tlrec.serving.exposure_log import ExposureLog\n"
            "with ExposureLog(sys.argv[1]) as log:\n"
            "    for u in range(300):\n"
            "        log.log(f'u{(u * int(sys.argv[2])) % 300}', 'exp', 'control', 1.0)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), step], cwd=Path(__file__).parents[2])
             for step in ("1", "7", "11")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    users = [r["user_id"] for r in _lines(path)]
    assert len(users) == 300 and len(set(users)) == 300
