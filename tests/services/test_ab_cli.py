"""`tlrec ab ...`: assign, analyze (JSON, tables, report), replay, bad input.

The end-to-end analysis with a report is a real subprocess; the rest go through typer's CliRunner in this process (same command, no start-up cost).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import Result
from typer.testing import CliRunner

from tlrec.serving.experiments import assign_variant, load_experiment

TLREC = Path(sys.executable).parent / "tlrec"
EXPERIMENT = """\
name: ranker-v2
salt: "2026-11"
traffic: {traffic}
start: 2026-11-01
variants:
  - {{name: control, artifact: {a}, weight: 0.5}}
  - {{name: treatment, artifact: {b}, weight: 0.5}}
"""
T0 = 1_793_491_200  # 2026-11-01T00:00:00Z


def run_tlrec(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(TLREC)] if TLREC.exists() else [sys.executable, "-m", "tlrec.services.cli"]
    proc = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"tlrec {args} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return proc


def invoke(*args: str | Path) -> Result:
    """``tlrec ARGS`` in this process; ``.stdout``, ``.stderr``, ``.exit_code``."""
    from tlrec.services.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result: Result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stderr[-2000:], result.exception)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def write_experiment(folder: Path, traffic: float = 1.0, a: str = "v1", b: str = "v2") -> Path:
    path = folder / "experiment.yaml"
    path.write_text(EXPERIMENT.format(traffic=traffic, a=a, b=b))
    return path


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> dict[str, Path]:
    """4,000 users over a week: treatment converts at 12% vs 8%; files in three formats."""
    root = tmp_path_factory.mktemp("ab")
    exp_path = write_experiment(root)
    exp = load_experiment(exp_path)
    rng = np.random.default_rng(0)
    users = [f"u{i:05d}" for i in range(4000)]
    arms = np.array([assign_variant(u, exp) for u in users])
    at = T0 + rng.integers(0, 7 * 86_400, len(users))
    with open(root / "exposures.jsonl", "w") as fh:  # what serving.experiments.ExposureLog writes
        for u, arm, t in zip(users, arms, at):
            fh.write(json.dumps({"user_id": u, "experiment": exp.name, "variant": str(arm), "timestamp": float(t)}) + "\n")
    propensity = rng.beta(0.5, 5.0, len(users))
    converts = rng.random(len(users)) < np.where(arms == "treatment", 0.12, 0.08) * propensity / propensity.mean()
    rows = [(u, "click", 1.0, int(t) + 30) for u, t, c in zip(users, at, rng.poisson(0.5, len(users))) for _ in range(c)]
    rows += [(u, "purchase", float(rng.lognormal(3, 0.5)), int(t) + 600) for u, t, c in zip(users, at, converts) if c]
    rows += [("u00000", "purchase", 1000.0, T0 - 10)]  # before any exposure: must not count
    pl.DataFrame(rows, schema=["user_id", "event", "value", "timestamp"], orient="row").write_csv(root / "outcomes.csv")
    pre = [(u, "purchase", float(rng.lognormal(3, 0.5)), T0 - 86_400 * (j + 1))
           for u, p in zip(users, propensity) for j in range(3) if rng.random() < min(1.0, 0.1 * p / propensity.mean())]
    pl.DataFrame(pre, schema=["user_id", "event", "value", "timestamp"], orient="row").write_parquet(root / "pre.parquet")
    return {"root": root, "experiment": exp_path, "exposures": root / "exposures.jsonl",
            "outcomes": root / "outcomes.csv", "pre": root / "pre.parquet"}


def test_assign_matches_the_serving_function(tmp_path):
    exp_path = write_experiment(tmp_path, traffic=0.5)
    users = [f"user-{i}" for i in range(500)]
    (tmp_path / "users.txt").write_text("\n".join(users + users[:10]) + "\n")
    result = invoke("ab", "assign", exp_path, "--users", tmp_path / "users.txt", "--out", tmp_path / "a.parquet")
    assert result.exit_code == 0, result.stderr
    frame = pl.read_parquet(tmp_path / "a.parquet")
    exp = load_experiment(exp_path)
    expected = [(u, "ranker-v2", assign_variant(u, exp)) for u in users if assign_variant(u, exp) is not None]
    assert frame.columns == ["user_id", "experiment", "variant"] and frame.rows() == expected
    assert 200 < frame.height < 300 and "(not in experiment)" in result.stdout


def test_analyze_json_and_report(logged, tmp_path):
    out = tmp_path / "report"
    proc = run_tlrec("ab", "analyze", logged["experiment"], "--exposures", logged["exposures"], "--outcomes",
                     logged["outcomes"], "--pre-period", logged["pre"], "--json", "--out", out)
    doc = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert doc["srm_alert"] is False and 0 <= doc["srm_p_value"] <= 1 and doc["cuped"] is True
    assert [(v["variant"], v["users"]) for v in doc["variants"]] == [
        ("control", doc["variants"][0]["users"]), ("treatment", 4000 - doc["variants"][0]["users"])]
    effects = {(e["variant"], e["metric"]): e for e in doc["effects"]}
    assert set(effects) == {("treatment", m) for m in ("ctr", "conversion", "value_per_user")}
    conversion = effects[("treatment", "conversion")]
    for key in ("diff", "ci_low", "ci_high", "p_value"):
        assert isinstance(conversion[key], float)
    assert conversion["ci_low"] <= 0.04 <= conversion["ci_high"] and conversion["p_value"] < 0.01
    assert conversion["variance_reduction"] > 0 and len(doc["sequential"]["looks"]) == 20
    report = (out / "report.md").read_text()
    assert "## Sample ratio" in report and "| treatment | conversion |" in report and "effects.png" in report
    for png in ("effects.png", "variants.png", "sequential.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "analysis.json").read_text())["srm_p_value"] == doc["srm_p_value"]


def test_analyze_prints_tables(logged):
    result = invoke("ab", "analyze", logged["experiment"], "--exposures", logged["exposures"], "--outcomes",
                    logged["outcomes"], "--looks", "3")
    assert result.exit_code == 0, result.stderr
    assert "SRM check" in result.stdout and "difference to control" in result.stdout
    assert "value_per_user" in result.stdout


@pytest.mark.parametrize("case, expected", [
    ("unknown-variant", ["exposures.csv row 2, column variant", "unknown variant 'treatmnet'"]),
    ("missing-column", ["exposures.csv", "missing column 'variant'"]),
    ("weights", ["experiment.yaml", "variants: variant weights must sum to 1, got 0.9"]),
    ("corrupt-yaml", ["experiment.yaml", "not valid YAML"]),
    ("missing-outcomes", ["nope.csv", "no such file or folder (--outcomes)"]),
])
def test_bad_input_one_line(logged, tmp_path, case, expected):
    exposures = tmp_path / "exposures.csv"
    frame = pl.DataFrame({"user_id": ["a", "b"], "experiment": "ranker-v2", "variant": ["control", "treatment"],
                          "timestamp": [T0 + 1, T0 + 2]})
    if case == "unknown-variant":
        frame = frame.with_columns(pl.Series("variant", ["control", "treatmnet"]))
    if case == "missing-column":
        frame = frame.drop("variant")
    frame.write_csv(exposures)
    exp_path = write_experiment(tmp_path)
    if case == "weights":
        exp_path.write_text(exp_path.read_text().replace("weight: 0.5}\n", "weight: 0.4}\n", 1))
    if case == "corrupt-yaml":
        exp_path.write_text("name: ranker-v2\nvariants: [{name: control\n")
    outcomes = tmp_path / "nope.csv" if case == "missing-outcomes" else logged["outcomes"]
    line = error_line(invoke("ab", "analyze", exp_path, "--exposures", exposures, "--outcomes", outcomes, "--json"))
    for text in expected:
        assert text in line, line


def test_replay_popularity_against_ncf(tiny_world, tmp_path):
    exp_path = write_experiment(tmp_path, a=tiny_world.popularity.name, b=tiny_world.ncf.name)
    out = tmp_path / "replay"
    result = invoke("ab", "replay", exp_path, "--interactions", tiny_world.test, "--artifacts",
                    tiny_world.artifacts, "--k", "5", "--json", "--out", out)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    holdout_users = pl.read_parquet(tiny_world.test)["user_id"].n_unique()
    assert sum(v["users"] for v in doc["variants"]) == holdout_users == doc["replay"]["holdout_users"]
    assert doc["replay"]["artifact_versions"] == {"control": tiny_world.popularity.name,
                                                  "treatment": tiny_world.ncf.name}
    (row,) = doc["interleaving"]["rows"]
    assert row["variant"] == "treatment" and row["wins"] + row["losses"] + row["ties"] == holdout_users
    assert {e["metric"] for e in doc["effects"]} == {"ctr", "conversion", "value_per_user"}
    assert "## Team-draft interleaving" in (out / "report.md").read_text()
    exposures = pl.read_parquet(out / "replay_exposures.parquet")
    assert exposures.columns == ["user_id", "experiment", "variant", "timestamp"]
    assert exposures.height == holdout_users


def test_replay_unknown_artifact(tiny_world, tmp_path):
    exp_path = write_experiment(tmp_path, a=tiny_world.popularity.name, b="no-such-version")
    line = error_line(invoke("ab", "replay", exp_path, "--interactions", tiny_world.test, "--artifacts",
                             tiny_world.artifacts))
    assert "artifact 'no-such-version': not found" in line


# ------------------------------------------------------------------ CUPED with a predicted covariate
@pytest.fixture(scope="module")
def habitual(tmp_path_factory) -> dict:
    """2,000 customers who buy at a constant rate (0.02, 0.08 or 0.3 a day) for 120 days before the
    test; in the test each is exposed once in the first week and buys over the next 14 days at their
    rate, x1.3 in treatment. A return model (14 days) is trained on the history alone."""
    root = tmp_path_factory.mktemp("habitual")
    exp = load_experiment(write_experiment(root))
    rng = np.random.default_rng(3)
    users = [f"c{i:05d}" for i in range(2000)]
    rate = rng.choice([0.02, 0.08, 0.3], len(users))
    counts = rng.poisson(rate * 120)
    history = pl.DataFrame({"user_id": np.repeat(users, counts), "item_id": "cd",
                            "timestamp": T0 - rng.integers(1, 120 * 86_400, int(counts.sum()))})
    history.write_parquet(root / "history.parquet")
    pl.DataFrame({"item_id": ["cd"], "title": ["a compact disc"]}).write_parquet(root / "catalog.parquet")
    arms = np.array([assign_variant(u, exp) for u in users])
    at = T0 + rng.integers(0, 7 * 86_400, len(users))
    pl.DataFrame({"user_id": users, "experiment": exp.name, "variant": arms, "timestamp": at}
                 ).write_parquet(root / "exposures.parquet")
    bought = rng.poisson(rate * 14 * np.where(arms == "treatment", 1.3, 1.0))
    outcomes = pl.DataFrame({"user_id": np.repeat(users, bought), "event": "purchase", "value": 10.0,
                             "timestamp": np.repeat(at, bought) + rng.integers(0, 14 * 86_400, int(bought.sum()))})
    outcomes.write_parquet(root / "outcomes.parquet")
    result = invoke("train", "--catalog", root / "catalog.parquet", "--interactions", root / "history.parquet",
                    "--out", root / "return", "--task", "return", "--horizon", "14d", "--set", "progress=false")
    assert result.exit_code == 0, result.stderr
    truth = float(np.mean(1 - np.exp(-rate * 14 * 1.3)) - np.mean(1 - np.exp(-rate * 14)))
    return {"root": root, "experiment": root / "experiment.yaml", "truth": truth}


def test_predicted_return_narrows_the_interval_without_bias(habitual):
    w = habitual
    common = ("ab", "analyze", w["experiment"], "--exposures", w["root"] / "exposures.parquet", "--outcomes",
              w["root"] / "outcomes.parquet", "--looks", "2", "--json")
    plain = json.loads(invoke(*common).stdout)
    result = invoke(*common, "--covariate-from", w["root"] / "return")
    assert result.exit_code == 0, result.stderr
    adjusted = json.loads(result.stdout)
    assert adjusted["cuped"] and "P(return within 14 days)" in adjusted["covariate"] and plain["covariate"] is None
    (before,) = [e for e in plain["effects"] if e["metric"] == "conversion"]
    (after,) = [e for e in adjusted["effects"] if e["metric"] == "conversion"]
    assert after["variance_reduction"] > 0.2 and after["unadjusted"]["ci_low"] == before["ci_low"]
    assert after["ci_high"] - after["ci_low"] < 0.9 * (before["ci_high"] - before["ci_low"])
    assert after["ci_low"] <= w["truth"] <= after["ci_high"]  # true effect ~ +0.06 in conversion


def test_predicted_covariate_bad_input_is_one_line(habitual, tiny_world):
    w = habitual
    common = ("ab", "analyze", w["experiment"], "--exposures", w["root"] / "exposures.parquet", "--outcomes",
              w["root"] / "outcomes.parquet", "--json")
    line = error_line(invoke(*common, "--covariate-from", w["root"] / "return", "--pre-period",
                             w["root"] / "outcomes.parquet"))
    assert "--pre-period" in line and "--covariate-from" in line and "not both" in line
    line = error_line(invoke(*common, "--covariate-from", tiny_world.artifacts))
    assert "not a return model" in line and "--task return" in line
