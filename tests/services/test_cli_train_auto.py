"""`tlrec train` without --model: candidates compared on validation, the best published (one real train run).

The item vectors are written here in the format `tlrec embed` writes (``embeddings.vectors``), from the
tiny world's planted taste groups, so the run does not load a real encoder.
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

TLREC = Path(sys.executable).parent / "tlrec"
GROUPS = 4  # the tiny world's taste groups (tests/services/conftest.py: item j is in group j % 4)
FAST_NCF = ["--set", "ncf.epochs=3", "--set", "ncf.dim=8", "--set", "ncf.content_hidden=16",
            "--set", "ncf.progress=false"]


def run_tlrec(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(TLREC)] if TLREC.exists() else [sys.executable, "-m", "tlrec.services.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"tlrec {args} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return proc


def invoke(*args: str | Path):
    """The same command in this process (typer's runner): no start-up cost."""
    from typer.testing import CliRunner

    from tlrec.services.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def write_vectors(path: Path, item_ids: list[str], matrix: np.ndarray) -> Path:
    """An item-vectors file and manifest as `tlrec embed` writes them (one ``text`` block, fused = text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tlrec.embeddings.vectors import FORMAT, FORMAT_VERSION, manifest_path, vector_column, vectors_schema
    from tlrec.files import sha256_file

    matrix = (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)
    dim = matrix.shape[1]
    table = pa.Table.from_arrays([pa.array(item_ids, pa.string()), vector_column(matrix), vector_column(matrix)],
                                 schema=vectors_schema(["text"]))
    pq.write_table(table, path)
    card = {"name": "planted", "modality": "text", "dim": dim, "version": "planted@1", "source": "test"}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "vectors_file": path.name,
                "n_items": len(item_ids), "modalities": ["text"], "encoders": {"text": card}, "dims": {"text": dim},
                "fused_dim": dim, "fusion": {"order": ["text"], "weights": {"text": 1.0}},
                "vectors_sha256": sha256_file(path)}
    manifest_path(path).write_text(json.dumps(manifest))
    return path


@pytest.fixture(scope="module")
def trained_auto(tiny_world, tmp_path_factory):
    """One `tlrec train` run with no --model (the default, auto) on the tiny world."""
    from tlrec.embeddings.vectors import load_item_vectors

    root = tmp_path_factory.mktemp("auto")
    items = pl.read_parquet(tiny_world.catalog)["item_id"].to_list()
    rng = np.random.default_rng(0)
    planted = np.zeros((len(items), GROUPS + 4), np.float32)
    planted[np.arange(len(items)), np.arange(len(items)) % GROUPS] = 1.0  # the tiny world's taste groups
    planted[:, GROUPS:] = rng.normal(0, 0.1, (len(items), 4))
    vectors = write_vectors(root / "vectors.parquet", items, planted)
    assert load_item_vectors(vectors).item_ids == items  # the format `tlrec embed` writes
    artifacts = root / "artifacts"
    proc = run_tlrec("train", "--catalog", tiny_world.catalog, "--interactions", tiny_world.train,
                     "--vectors", vectors, "--out", artifacts, *FAST_NCF)
    version = artifacts / (artifacts / "current").read_text().strip()
    assert proc.stdout.strip().endswith(version.name)
    return artifacts, version, proc


def test_manifest_records_the_selection(trained_auto):
    import tlrec.training.selection as tlrec_selection

    _, version, proc = trained_auto
    manifest = json.loads((version / "manifest.json").read_text())
    selection = manifest["selection"]
    names = [c["name"] for c in selection["candidates"]]
    assert names[:5] == ["popularity", "itemknn", "ease", "lightfm", "ncf"]
    scored = {c["name"]: c["validation_ndcg"] for c in selection["candidates"] if c["validation_ndcg"] is not None}
    assert {"popularity", "itemknn", "ncf"} <= set(scored)
    assert all(0.0 <= s <= 1.0 for s in scored.values())
    tol = float(getattr(tlrec_selection, "TIE_TOLERANCE", 0.0))  # near-ties go to the earlier candidate
    assert selection["choice"] in scored and scored[selection["choice"]] >= (1 - tol) * max(scored.values())
    assert selection["validation"]["by"] in ("time", "random") and selection["validation"]["reason"]
    assert selection["validation"]["held_out_events"] > 0
    assert manifest["model"] == selection["served_as"]
    if selection["choice"] not in ("ncf", "blend"):  # the winner cannot score new items: NCF's content does
        assert manifest["model"] == "blend" and manifest["config"]["cold_items_from"] == "ncf"
    assert manifest["inputs"]["vectors"]["sha256"]
    assert "model selection" in proc.stderr and "<- served" in proc.stderr


def test_published_model_loads_and_recommends(trained_auto, tiny_world):
    from tlrec.serving.served_model import ServedModel

    artifacts, version, _ = trained_auto
    served = ServedModel.load(artifacts)
    assert served.version == version.name
    assert served.model.name == json.loads((version / "manifest.json").read_text())["model"]
    users = tiny_world.users[:6]
    recs = served.recommend([*users, "nobody"], 5)
    assert [r.user_id for r in recs] == [*users, "nobody"]
    for r in recs[:-1]:
        assert r.source == "model" and len(r.item_ids) == 5 and np.isfinite(r.scores).all()
        seen = set(served.seen[served.users.to_internal([r.user_id])[0]].indices)
        assert not set(served.items.to_internal(r.item_ids).tolist()) & seen
    assert recs[-1].source == "popular" and len(recs[-1].item_ids) == 5
    history = served.recommend_history([["i000", "i004", "i008"]], 3)[0]
    assert history.source == "history" and len(history.item_ids) == 3


def test_score_no_ray(trained_auto, tiny_world, tmp_path):
    artifacts, version, _ = trained_auto
    users = tmp_path / "users.txt"
    users.write_text("\n".join([*tiny_world.users[:4], "new-user"]) + "\n")
    out = tmp_path / "recs.parquet"
    result = invoke("score", "--artifacts", artifacts, "--users", users, "--k", "3", "--out", out, "--no-ray",
                    "--exclude-seen")
    assert result.exit_code == 0, result.stderr
    recs = pl.read_parquet(out)
    assert recs.columns == ["user_id", "item_id", "score", "rank", "model_version"]
    assert set(recs["model_version"]) == {version.name}
    assert recs.group_by("user_id").len().sort("user_id").rows() == [(u, 3) for u in
                                                                    sorted([*tiny_world.users[:4], "new-user"])]
    seen = pl.read_parquet(tiny_world.train).select("user_id", "item_id")
    assert recs.join(seen, on=["user_id", "item_id"]).height == 0


def test_unknown_setting_is_one_line_and_nothing_published(tiny_world, tmp_path):
    out = tmp_path / "artifacts"
    result = invoke("train", "--catalog", tiny_world.catalog, "--interactions", tiny_world.train, "--out", out,
                    "--set", "nonsense=1")
    assert result.exit_code == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "nonsense" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "current").exists() and not (out.exists() and any(out.iterdir()))
