"""The `tlrec` command as a user runs it: real subprocesses, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tlrec.services.batch_predict import predict_job
from tlrec.services.partitions import FAIL_PARTITION_ENV, ScoringJobError

TLREC = Path(sys.executable).parent / "tlrec"


def run_tlrec(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(TLREC)] if TLREC.exists() else [sys.executable, "-m", "tlrec.services.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"tlrec {args} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return proc


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one stderr line an expected failure prints (log lines above it are allowed)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def write_latest_small(folder: Path) -> Path:
    """A tiny MovieLens latest-small layout (same files and columns as the real one)."""
    folder.mkdir(parents=True)
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        "2,Jumanji (1995),Adventure|Children|Fantasy\n"
        '3,"Grumpier Old Men, The (1995)",Comedy|Romance\n'
        "4,Heat (1995),Action|Crime|Thriller\n"
        "5,Alien (1979),Horror|Sci-Fi\n"
        "6,Obscure Film (2001),(no genres listed)\n"
    )
    rows = ["userId,movieId,rating,timestamp"]
    for u in range(1, 9):
        for j, m in enumerate([1, 2, 3, 4, 5]):
            if (u + m) % 3:
                rows.append(f"{u},{m},{(u + m) % 5 + 1}.0,{1_000_000 + 100 * u + j}")
    (folder / "ratings.csv").write_text("\n".join(rows) + "\n")
    return folder


def write_100k(folder: Path) -> Path:
    folder.mkdir(parents=True)
    flags = lambda on: "|".join("1" if i in on else "0" for i in range(19))  # noqa: E731
    (folder / "u.item").write_bytes(
        (f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags({3, 4, 5})}\n"
         f"2|GoldenEye (1995)|01-Jan-1995||http://x|{flags({1, 2, 16})}\n"
         f"3|Caf\xe9 Society (1995)|01-Jan-1995||http://x|{flags({8})}\n").encode("latin-1")
    )
    (folder / "u.data").write_text("1\t1\t5\t881250949\n1\t2\t3\t881250950\n2\t3\t4\t881250951\n")
    return folder


@pytest.fixture(scope="module")
def movielens(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ml")
    src = write_latest_small(root / "src")
    run_tlrec("import-movielens", src, "--out", root / "ml")
    return root / "ml"


def test_import_latest_small(movielens):
    catalog = pl.read_parquet(movielens / "catalog.parquet")
    interactions = pl.read_parquet(movielens / "interactions.parquet")
    assert catalog.height == 6 and catalog["item_id"].dtype == pl.Utf8
    row = catalog.filter(pl.col("item_id") == "3").row(0, named=True)
    assert row["title"] == "Grumpier Old Men, The (1995)"
    assert row["description"] == "Genres: Comedy, Romance."
    assert catalog.filter(pl.col("item_id") == "6")["description"][0] == ""
    assert set(interactions.columns) == {"user_id", "item_id", "timestamp", "event", "value"}
    assert interactions["event"].unique().to_list() == ["rating"]


def test_import_100k(tmp_path):
    run_tlrec("import-movielens", write_100k(tmp_path / "src"), "--out", tmp_path / "ml")
    catalog = pl.read_parquet(tmp_path / "ml" / "catalog.parquet")
    assert catalog["title"].to_list() == ["Toy Story (1995)", "GoldenEye (1995)", "Caf\u00e9 Society (1995)"]
    assert catalog["description"][1] == "Genres: Action, Adventure, Thriller."
    assert pl.read_parquet(tmp_path / "ml" / "interactions.parquet").height == 3


def test_import_unknown_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    line = error_line(run_tlrec("import-movielens", tmp_path / "empty", "--out", tmp_path / "o", check=False))
    assert "not a MovieLens folder" in line and "empty" in line


def test_train_embeds_itself_then_score_exclude_seen(movielens, tmp_path):
    """Without --vectors, train embeds the catalog; score gives k unseen items per user."""
    artifacts = tmp_path / "artifacts"
    run_tlrec("train", "--catalog", movielens / "catalog.parquet", "--interactions",
              movielens / "interactions.parquet", "--out", artifacts, "--model", "ncf", "--epochs", "3")
    version = artifacts / (artifacts / "current").read_text().strip()
    assert (version / "item_vectors.parquet").is_file() and (version / "index.faiss").is_file()
    users = tmp_path / "users.txt"
    users.write_text("1\n2\n3\nnew-user\n")
    out = tmp_path / "recs.parquet"
    run_tlrec("score", "--artifacts", artifacts, "--users", users, "--k", "2", "--out", out, "--exclude-seen")
    recs = pl.read_parquet(out)
    assert recs.columns == ["user_id", "item_id", "score", "rank", "model_version"]
    assert set(recs["model_version"]) == {version.name}
    assert recs.group_by("user_id").len().sort("user_id").rows() == [("1", 2), ("2", 2), ("3", 2), ("new-user", 2)]
    seen = pl.read_parquet(movielens / "interactions.parquet").select("user_id", "item_id")
    assert recs.join(seen, on=["user_id", "item_id"]).height == 0
    assert recs.filter(pl.col("user_id") == "1")["rank"].to_list() == [1, 2]


def test_popularity_score_with_candidates(movielens, tmp_path):
    artifacts = tmp_path / "a"
    run_tlrec("train", "--catalog", movielens / "catalog.parquet", "--interactions",
              movielens / "interactions.parquet", "--out", artifacts, "--model", "popularity")
    users, cands, out = tmp_path / "u.txt", tmp_path / "c.txt", tmp_path / "r.parquet"
    users.write_text("1\n4\n")
    cands.write_text("2\n5\n6\n")
    run_tlrec("score", "--artifacts", artifacts, "--users", users, "--k", "3", "--out", out, "--candidates", cands)
    recs = pl.read_parquet(out)
    assert set(recs["item_id"]) <= {"2", "5", "6"} and recs.height == 6


def test_evaluate_prints_table_and_writes_report(world, tmp_path):
    report = tmp_path / "report"
    proc = run_tlrec("evaluate", "--artifacts", world.artifacts, "--interactions", world.test, "--k", "5,10",
                     "--report", report)
    assert "ndcg@5" in proc.stdout and "recall@10" in proc.stdout and "novelty@10" in proc.stdout
    text = (report / "report.md").read_text()
    assert "by user activity" in text and "| ncf |" in text
    assert (report / "segments_ndcg.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figures = json.loads((report / "recommend.json").read_text())["ncf"]["all"]  # --help promises JSON too
    assert f"{figures['ndcg@5']:.4f}" in proc.stdout


def test_embed_command(world, tmp_path):
    import json

    small = tmp_path / "catalog.csv"
    pl.read_parquet(world.catalog).head(4).select("item_id", "title", "description").write_csv(small)
    out = tmp_path / "v.parquet"
    run_tlrec("embed", "--catalog", small, "--out", out, "--image", "none", "--audio", "none", "--no-ray")
    vectors = pl.read_parquet(out)
    assert vectors.height == 4 and len(vectors["fused"][0]) == 384
    manifest = json.loads((tmp_path / "v.manifest.json").read_text())
    assert "text" in manifest["encoders"]


@pytest.mark.slow  # kept out of the default run (time budget): the Ray embedding job is checked against in-process by tests/embeddings/test_batch.py
def test_embed_runs_as_ray_job_by_default(world, tmp_path):
    """A Parquet catalog with relative image paths, streamed through a local Ray; same vectors as in process."""
    import numpy as np

    full = pl.read_parquet(world.catalog)
    catalog = pl.concat([full.filter(pl.col("domain") == d).head(3) for d in ("film", "product")])
    catalog = catalog.with_columns(pl.col("image_path").map_elements(
        lambda p: str((world.catalog.parent / p).resolve()), return_dtype=pl.Utf8))
    local_dir = tmp_path / "cat"
    (local_dir / "img").mkdir(parents=True)
    rel = []
    for p in catalog["image_path"]:
        if p is None:
            rel.append(None)
            continue
        (local_dir / "img" / Path(p).name).write_bytes(Path(p).read_bytes())
        rel.append(f"img/{Path(p).name}")
    catalog.with_columns(pl.Series("image_path", rel, dtype=pl.Utf8)).write_parquet(local_dir / "catalog.parquet")
    run_tlrec("embed", "--catalog", local_dir / "catalog.parquet", "--out", tmp_path / "ray.parquet", "--audio", "none")
    run_tlrec("embed", "--catalog", local_dir / "catalog.parquet", "--out", tmp_path / "local.parquet",
              "--audio", "none", "--no-ray")
    a, b = pl.read_parquet(tmp_path / "ray.parquet"), pl.read_parquet(tmp_path / "local.parquet")
    assert a["item_id"].to_list() == b["item_id"].to_list()
    assert a["image"].null_count() == b["image"].null_count() < a.height
    np.testing.assert_allclose(np.stack(a["fused"].to_numpy()), np.stack(b["fused"].to_numpy()), atol=1e-4)


# ------------------------------------------------------------------ bad input
def test_missing_column_names_file_and_column(movielens, tmp_path):
    bad = tmp_path / "catalog.csv"
    pl.read_parquet(movielens / "catalog.parquet").drop("title").write_csv(bad)
    artifacts = tmp_path / "artifacts"
    line = error_line(in_process("train", "--catalog", bad, "--interactions", movielens / "interactions.parquet",
                                "--out", artifacts, "--model", "popularity"))
    assert "catalog.csv" in line and "title" in line
    assert not artifacts.exists() or not any(artifacts.iterdir())


def test_unknown_file(tmp_path, movielens):
    """A real process: exit code 2, one line, no traceback (the other bad-input checks run in process)."""
    line = error_line(run_tlrec("train", "--catalog", tmp_path / "nope.parquet", "--interactions",
                                movielens / "interactions.parquet", "--out", tmp_path / "a", check=False))
    assert "nope.parquet" in line


def test_corrupt_parquet(tmp_path, movielens):
    bad = tmp_path / "interactions.parquet"
    bad.write_bytes(b"PAR1" + os.urandom(64))
    artifacts = tmp_path / "a"
    line = error_line(in_process("train", "--catalog", movielens / "catalog.parquet", "--interactions", bad,
                                "--out", artifacts, "--model", "popularity"))
    assert "interactions.parquet" in line
    assert not artifacts.exists() or not any(artifacts.iterdir())


def test_bad_timestamp_names_row(tmp_path, movielens):
    bad = tmp_path / "events.csv"
    bad.write_text("user_id,item_id,timestamp\n1,1,100\n1,2,yesterday-ish\n")
    line = error_line(in_process("train", "--catalog", movielens / "catalog.parquet", "--interactions", bad,
                                "--out", tmp_path / "a", "--model", "popularity"))
    assert "events.csv" in line and "row 2" in line and "timestamp" in line


@pytest.mark.parametrize("k", ["0", "-3"])
def test_k_must_be_positive(world, tmp_path, k):
    users = tmp_path / "users.txt"
    users.write_text("u0001\n")
    out = tmp_path / "recs.parquet"
    line = error_line(in_process("score", "--artifacts", world.artifacts, "--users", users, "--k", k,
                                "--out", out))
    assert "--k" in line
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_corrupt_artifact_refused_by_score(world, tmp_path):
    import shutil

    copy = tmp_path / "v"
    shutil.copytree(world.ncf_version, copy)
    weights = copy / "model" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    users = tmp_path / "users.txt"
    users.write_text("u0001\n")
    out = tmp_path / "recs.parquet"
    line = error_line(in_process("score", "--artifacts", copy, "--users", users, "--k", "3", "--out", out))
    assert "weights.safetensors" in line and not out.exists()


FAST_NCF = ["--set", "epochs=2", "--set", "val_fraction=0.0", "--set", "dim=16", "--set", "content_hidden=32"]


@pytest.mark.slow  # kept out of the default run (time budget): the transfer report itself is tests/training/test_transfer.py's
def test_transfer_report_and_modalities_auto(world, tmp_path):
    """The demo's three modalities each carry signal for their own items: a report per modality."""
    out = tmp_path / "transfer"
    proc = run_tlrec("evaluate", "--transfer-report", "--catalog", world.catalog, "--interactions", world.train,
                     "--vectors", world.vectors, "--report", out, *FAST_NCF)
    assert "Negative transfer" in proc.stdout or "No modality transfers negatively" in proc.stdout
    report = json.loads((out / "transfer.json").read_text())
    assert set(report["modalities"]) == {"text", "image", "audio"}
    assert {g["variant"] for g in report["gains"]} >= {"all", "all - text", "+text", "+image", "+audio"}
    assert (out / "transfer_gains.png").read_bytes()[:4] == b"\x89PNG"

    artifacts = tmp_path / "artifacts"
    run_tlrec("train", "--catalog", world.catalog, "--interactions", world.train, "--vectors", world.vectors,
              "--out", artifacts, "--model", "ncf", "--modalities", "auto", *FAST_NCF)
    manifest = json.loads((artifacts / (artifacts / "current").read_text().strip() / "manifest.json").read_text())
    assert manifest["modalities"] == manifest["transfer"]["keep"]


def test_modalities_list_must_name_known_ones(world, tmp_path):
    proc = in_process("train", "--catalog", world.catalog, "--interactions", world.train, "--vectors", world.vectors,
                      "--out", tmp_path / "a", "--model", "ncf", "--modalities", "text,smell")
    assert "smell" in error_line(proc) and not (tmp_path / "a" / "current").exists()


# ------------------------------------------------------------------ a bug is a bug, bad input is bad input
def _invoke(*args: str | Path):
    """The command in this process (typer's runner): no start-up cost."""
    from typer.testing import CliRunner

    from tlrec.services.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def in_process(*args: str | Path) -> subprocess.CompletedProcess:
    """``tlrec ARGS`` through typer's runner (no start-up cost), shaped like ``run_tlrec``'s answer."""
    result = _invoke(*args)
    return subprocess.CompletedProcess([str(a) for a in args], result.exit_code, result.stdout, result.stderr)


def _score_args(tmp_path: Path) -> list[str]:
    users = tmp_path / "users.txt"
    users.write_text("u1\n")
    (tmp_path / "a").mkdir(exist_ok=True)  # an artifacts folder that exists (what is in it is the job's to judge)
    return ["score", "--artifacts", str(tmp_path / "a"), "--users", str(users), "--k", "3",
            "--out", str(tmp_path / "r.parquet"), "--no-ray"]


def _raise(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc
    return fail


def test_a_bug_is_one_line_and_exit_1(tmp_path, monkeypatch):
    """A genuine bug (here a ZeroDivisionError, or a bare ValueError) is not reported as bad input."""
    import tlrec.services.batch_scoring as batch_scoring

    monkeypatch.setattr(batch_scoring, "score_job", _raise(ZeroDivisionError("division by zero")))
    result = _invoke(*_score_args(tmp_path))
    assert result.exit_code == 1, (result.exit_code, result.stderr)
    lines = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert lines == ["error: internal error: ZeroDivisionError: division by zero "
                     "(rerun with --verbose for the traceback)"], result.stderr
    assert "Traceback" not in result.stderr

    monkeypatch.setattr(batch_scoring, "score_job", _raise(ValueError("an internal invariant broke")))
    result = _invoke(*_score_args(tmp_path))
    assert result.exit_code == 1 and "internal error: ValueError: an internal invariant broke" in result.stderr


def test_verbose_shows_the_traceback(tmp_path, monkeypatch):
    import tlrec.services.batch_scoring as batch_scoring

    monkeypatch.setattr(batch_scoring, "score_job", _raise(ZeroDivisionError("division by zero")))
    monkeypatch.setattr("tlrec.services.errors._VERBOSE", False)  # restored after the test
    result = _invoke("--verbose", *_score_args(tmp_path))
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr and "ZeroDivisionError" in result.stderr
    lines = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert lines == ["error: internal error: ZeroDivisionError: division by zero"], result.stderr


@pytest.mark.parametrize("exc", [PermissionError(13, "Permission denied", "/x/r.parquet")], ids=["OSError"])
def test_expected_failures_exit_2(tmp_path, monkeypatch, exc):
    """TlrecError subclasses (data, artifact, usage, config) and OSError: one line, exit 2."""
    import tlrec.services.batch_scoring as batch_scoring
    from tlrec.errors import ConfigError, UsageError
    from tlrec.training.artifacts import ArtifactError
    from tlrec.tables import DataError

    for error in (exc, DataError("u.csv row 3, column user_id: empty"), ArtifactError("/v/items.json: missing"),
                  UsageError("--k must be >= 1, got 0"), ConfigError("unknown model 'x'")):
        monkeypatch.setattr(batch_scoring, "score_job", _raise(error))
        result = _invoke(*_score_args(tmp_path))
        assert result.exit_code == 2, (error, result.stderr)
        lines = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
        assert len(lines) == 1 and "internal error" not in lines[0] and "Traceback" not in result.stderr


# ------------------------------------------------------------------ `tlrec train` without --model (auto)
GROUPS = 4  # the tiny world's taste groups (tests/services/conftest.py: item j is in group j % 4)
AUTO_FAST_NCF = ["--set", "ncf.epochs=3", "--set", "ncf.dim=8", "--set", "ncf.content_hidden=16",
                 "--set", "ncf.progress=false",
                 "--set", "lightfm.num_threads=1"]  # Hogwild with more threads does not repeat bit for bit


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
                     "--vectors", vectors, "--out", artifacts, *AUTO_FAST_NCF)
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


def test_candidates_and_variants_tuned_as_ray_tasks_publish_the_in_process_model(trained_auto, tiny_world,
                                                                                 tmp_path):
    """`--ray-address local`: each candidate and each `--modalities auto` variant a Ray task (worker processes),
    the same tables and the same model as in this process. (`--modalities auto` under `--model auto` also takes
    `--set ncf.KEY`: it once failed on them.)"""
    from tlrec.serving.served_model import ServedModel

    _, version, _ = trained_auto
    args = ["train", "--catalog", tiny_world.catalog, "--interactions", tiny_world.train, "--vectors",
            json.loads((version / "manifest.json").read_text())["inputs"]["vectors"]["path"], *AUTO_FAST_NCF,
            "--modalities", "auto"]
    assert in_process(*args, "--out", tmp_path / "here").returncode == 0
    run_tlrec(*args, "--out", tmp_path / "ray", "--ray-address", "local")
    here, there = ({**json.loads((root / (root / "current").read_text().strip() / "manifest.json").read_text()),
                    "root": root} for root in (tmp_path / "here", tmp_path / "ray"))
    assert there["transfer"] == here["transfer"] and here["transfer"]["means"]["all"]["cold items"]["users"] > 0
    table = [(c["name"], c["validation_ndcg"], c["note"]) for c in here["selection"]["candidates"]]
    assert [(c["name"], c["validation_ndcg"], c["note"]) for c in there["selection"]["candidates"]] == table
    assert there["selection"]["blend"] == here["selection"]["blend"] and there["config"] == here["config"]
    users = tiny_world.users[:20]
    ours, theirs = (ServedModel.load(m["root"]).recommend(users, 10) for m in (here, there))
    assert [(r.item_ids, list(r.scores)) for r in theirs] == [(r.item_ids, list(r.scores)) for r in ours]


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
    result = _invoke("score", "--artifacts", artifacts, "--users", users, "--k", "3", "--out", out, "--no-ray",
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
    result = _invoke("train", "--catalog", tiny_world.catalog, "--interactions", tiny_world.train, "--out", out,
                    "--set", "nonsense=1")
    assert result.exit_code == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "nonsense" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "current").exists() and not (out.exists() and any(out.iterdir()))


def test_unknown_task_is_one_line_and_nothing_published(tiny_world, tmp_path):
    out = tmp_path / "artifacts"
    result = _invoke("train", "--catalog", tiny_world.catalog, "--interactions", tiny_world.train, "--out", out,
                     "--task", "next-click")
    assert result.exit_code == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "next-click" in lines[0] and "next-item" in lines[0], result.stderr
    assert not (out / "current").exists()


def test_train_next_item_then_evaluate_next_item(tiny_world, tmp_path):
    out = tmp_path / "artifacts"
    result = _invoke("train", "--catalog", tiny_world.catalog, "--interactions", tiny_world.train, "--out", out,
                     "--task", "next-item", "--model", "sasrec", "--set", "epochs=3", "--set", "dim=8",
                     "--set", "content_hidden=8", "--set", "progress=false")
    assert result.exit_code == 0, result.stderr
    version = Path(result.stdout.strip().splitlines()[-1])
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["task"] == "next-item" and manifest["model"] == "sasrec"
    result = _invoke("evaluate", "--task", "next-item", "--artifacts", out, "--interactions", tiny_world.test,
                     "--k", "10")
    assert result.exit_code == 0, result.stderr
    assert "hit_rate@10" in result.stdout and "mrr" in result.stdout


# ------------------------------------------------------------------ `tlrec train --task propensity`, `tlrec predict`
@pytest.fixture(scope="module")
def planted_likes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Ratings where P(rating >= 4) is known: 0.85 when the user's taste matches the item's genre,
    0.15 otherwise; the item vectors know the genre; the last 20 items have no ratings (new items)."""
    root = tmp_path_factory.mktemp("planted_likes")
    rng = np.random.default_rng(0)
    n_users, n_items, per_user, n_new = 300, 120, 40, 20
    taste, genre = rng.integers(0, 2, n_users), rng.integers(0, 2, n_items)
    items = [f"i{j}" for j in range(n_items)]
    pl.DataFrame({"item_id": items, "title": [f"item {j}" for j in range(n_items)]}).write_parquet(root / "catalog.parquet")
    content = rng.normal(0, 0.3, (n_items, 16))
    content[:, 0] += np.where(genre == 1, 1.0, -1.0)
    write_vectors(root / "vectors.parquet", items, content)
    users = np.repeat(np.arange(n_users), per_user)
    rated = rng.integers(0, n_items - n_new, len(users))
    like = rng.random(len(users)) < np.where(taste[users] == genre[rated], 0.85, 0.15)
    pl.DataFrame({"user_id": [f"u{u}" for u in users], "item_id": [items[j] for j in rated],
                  "timestamp": np.tile(np.arange(per_user), n_users) + 1_700_000_000, "event": "rating",
                  "value": np.where(like, rng.choice([4.0, 5.0], len(users)), rng.choice([1.0, 2.0, 3.0], len(users)))
                  }).write_parquet(root / "ratings.parquet")
    out = root / "artifacts"
    result = _invoke("train", "--catalog", root / "catalog.parquet", "--interactions", root / "ratings.parquet",
                     "--vectors", root / "vectors.parquet", "--out", out, "--task", "propensity",
                     "--positive", "rating>=4", "--set", "progress=false")
    assert result.exit_code == 0, result.stderr
    return {"root": root, "artifacts": out, "taste": taste, "genre": genre, "n_new": n_new, "rng": rng,
            "version": Path(result.stdout.strip().splitlines()[-1])}


def test_propensity_predict_gives_the_planted_probabilities(planted_likes, tmp_path):
    w, rng = planted_likes, planted_likes["rng"]
    n_items = len(w["genre"])
    users = rng.integers(0, len(w["taste"]), 3000)
    items = np.where(np.arange(3000) < 2000, rng.integers(0, n_items - w["n_new"], 3000),
                     rng.integers(n_items - w["n_new"], n_items, 3000))  # 2000 known items, 1000 new ones
    pairs = pl.DataFrame({"user_id": [f"u{u}" for u in users], "item_id": [f"i{j}" for j in items]})
    known_items = [f"i{j}" for j in range(n_items - w["n_new"])]
    pairs = pl.concat([pairs, pl.DataFrame({"user_id": "stranger", "item_id": known_items})])
    pairs.write_csv(tmp_path / "pairs.csv")
    result = _invoke("predict", "--artifacts", w["artifacts"], "--pairs", tmp_path / "pairs.csv",
                     "--out", tmp_path / "p.parquet")
    assert result.exit_code == 0, result.stderr
    out = pl.read_parquet(tmp_path / "p.parquet")
    assert out.columns == ["user_id", "item_id", "probability", "known_user", "known_item", "model_version"]
    assert out["user_id"].to_list() == pairs["user_id"].to_list()  # input order
    assert set(out["model_version"]) == {w["version"].name}
    truth = np.where(w["taste"][users] == w["genre"][items], 0.85, 0.15)
    p = out["probability"].to_numpy()[:3000]
    known = out["known_item"].to_numpy()[:3000]
    assert known.sum() == 2000
    assert np.abs(p[known] - truth[known]).mean() < 0.07  # calibrated: within 0.07 of the truth on average
    assert np.abs(p[~known] - truth[~known]).mean() < 0.15  # new items, from content alone (a constant: 0.35)
    strangers = out.tail(len(known_items))  # no taste known: the item's own like rate is the best answer
    ratings = pl.read_parquet(w["root"] / "ratings.parquet").with_columns((pl.col("value") >= 4).alias("like"))
    item_rate = dict(ratings.group_by("item_id").agg(pl.col("like").mean()).iter_rows())
    assert not strangers["known_user"].any()
    rates = np.array([item_rate[i] for i in known_items])
    assert np.abs(strangers["probability"].to_numpy() - rates).mean() < 0.1, (strangers["probability"].to_numpy()[:10], rates[:10])


def test_ray_predict_matches_in_process_and_resumes(planted_likes, ray_local, tmp_path, monkeypatch):
    """`tlrec predict` as a Ray job (3 partitions): a failed partition fails the job with one line;
    the re-run reuses the finished parts and writes what the in-process run writes, in input order."""
    w, rng = planted_likes, np.random.default_rng(1)
    pairs = pl.DataFrame({"user_id": [f"u{u}" for u in rng.integers(0, 400, 2500)],  # u300..u399: unknown
                          "item_id": [f"i{j}" for j in rng.integers(0, len(w["genre"]), 2500)]})
    pairs.write_parquet(tmp_path / "pairs.parquet")
    local = predict_job(w["artifacts"], tmp_path / "local.parquet", pairs_path=tmp_path / "pairs.parquet",
                        ray_address=None, progress=False)
    monkeypatch.setenv(FAIL_PARTITION_ENV, "1")
    with pytest.raises(ScoringJobError, match="partition 1"):
        predict_job(w["artifacts"], tmp_path / "ray.parquet", pairs_path=tmp_path / "pairs.parquet",
                    partition_size=1000, progress=False)
    assert not (tmp_path / "ray.parquet").exists()
    monkeypatch.delenv(FAIL_PARTITION_ENV)
    on_ray = predict_job(w["artifacts"], tmp_path / "ray.parquet", pairs_path=tmp_path / "pairs.parquet",
                         partition_size=1000, progress=False)
    assert on_ray.on_ray and on_ray.partitions == 3 and not local.on_ray
    expected, got = pl.read_parquet(tmp_path / "local.parquet"), pl.read_parquet(tmp_path / "ray.parquet")
    assert got.drop("probability").equals(expected.drop("probability"))
    np.testing.assert_allclose(got["probability"].to_numpy(), expected["probability"].to_numpy(), atol=1e-6)


def test_propensity_evaluate_reports_calibration_with_a_reliability_diagram(planted_likes, tmp_path):
    w = planted_likes
    result = _invoke("evaluate", "--task", "propensity", "--artifacts", w["artifacts"],
                     "--interactions", w["root"] / "ratings.parquet", "--report", tmp_path / "report")
    assert result.exit_code == 0, result.stderr
    assert "roc_auc" in result.stdout and "ece" in result.stdout
    report = json.loads((tmp_path / "report" / "propensity.json").read_text())
    assert report["all"]["roc_auc"] > 0.75 and report["all"]["ece"] < 0.05
    assert (tmp_path / "report" / "reliability.png").read_bytes()[:4] == b"\x89PNG"


def test_propensity_bad_input_is_one_line_and_writes_nothing(planted_likes, tmp_path):
    w = planted_likes
    pl.DataFrame({"user_id": ["u1"], "item_id": ["no-such-item"]}).write_csv(tmp_path / "pairs.csv")
    result = _invoke("predict", "--artifacts", w["artifacts"], "--pairs", tmp_path / "pairs.csv",
                     "--out", tmp_path / "p.parquet")
    assert result.exit_code == 2 and not (tmp_path / "p.parquet").exists()
    (line,) = error_lines(result.stderr)
    assert "pairs.csv" in line and "no-such-item" in line
    pl.DataFrame({"user": ["u1"], "item_id": ["i1"]}).write_csv(tmp_path / "pairs.csv")
    result = _invoke("predict", "--artifacts", w["artifacts"], "--pairs", tmp_path / "pairs.csv",
                     "--out", tmp_path / "p.parquet")
    (line,) = error_lines(result.stderr)
    assert "pairs.csv" in line and "user_id" in line
    result = _invoke("train", "--catalog", w["root"] / "catalog.parquet", "--interactions",
                     w["root"] / "ratings.parquet", "--out", tmp_path / "a", "--task", "propensity",
                     "--positive", "purchase")  # no purchase events: nothing to learn
    (line,) = error_lines(result.stderr)
    assert "ratings.parquet" in line and "purchase" in line and not (tmp_path / "a" / "current").exists()


def test_each_task_refuses_the_other_tasks_artifacts(planted_likes, tiny_world, tmp_path):
    w = planted_likes
    users = tmp_path / "users.txt"
    users.write_text("u1\n")
    result = _invoke("score", "--artifacts", w["artifacts"], "--users", users, "--k", "3",
                     "--out", tmp_path / "r.parquet", "--no-ray")
    (line,) = error_lines(result.stderr)
    assert "propensity" in line and "tlrec predict" in line
    pl.DataFrame({"user_id": ["u1"], "item_id": ["i1"]}).write_csv(tmp_path / "pairs.csv")
    result = _invoke("predict", "--artifacts", tiny_world.artifacts, "--pairs", tmp_path / "pairs.csv",
                     "--out", tmp_path / "p.parquet")
    (line,) = error_lines(result.stderr)
    assert "not a propensity model" in line and "--task propensity" in line


# ------------------------------------------------------------------ `tlrec train --task return`, `tlrec predict --users`
@pytest.fixture(scope="module")
def planted_returns(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Customers who buy at a constant rate of 0.01, 0.04 or 0.2 a day for 400 days (so the chance of
    coming back within 30 days is known), then 60 more days of events as the test period."""
    root = tmp_path_factory.mktemp("planted_returns")
    rng = np.random.default_rng(3)
    n_users, n_items, days, start, day = 300, 30, 460, 1_600_000_000, 86_400
    rates = rng.choice([0.01, 0.04, 0.2], n_users)
    counts = rng.poisson(rates * days)
    users = np.repeat(np.arange(n_users), counts)
    when = start + rng.integers(0, days * day, len(users))
    items = [f"i{j}" for j in range(n_items)]
    pl.DataFrame({"item_id": items, "title": [f"item {j}" for j in range(n_items)]}).write_parquet(root / "catalog.parquet")
    write_vectors(root / "vectors.parquet", items, rng.normal(size=(n_items, 8)))
    events = pl.DataFrame({"user_id": [f"u{u}" for u in users], "item_id": [items[j] for j in rng.integers(0, n_items, len(users))],
                           "timestamp": when, "event": "purchase"})
    as_of = start + 400 * day
    events.filter(pl.col("timestamp") <= as_of).write_parquet(root / "train.parquet")
    events.filter(pl.col("timestamp") > as_of).write_parquet(root / "test.parquet")
    out = root / "artifacts"  # the data ends at the as-of time (the newest event is a little before)
    result = _invoke("train", "--catalog", root / "catalog.parquet", "--interactions", root / "train.parquet",
                     "--vectors", root / "vectors.parquet", "--out", out, "--task", "return", "--horizon", "30d",
                     "--as-of", "2021-10-18T12:26:40Z", "--set", "progress=false")
    assert result.exit_code == 0, result.stderr
    k = np.bincount(users[when <= as_of], minlength=n_users)
    return {"root": root, "artifacts": out, "rates": rates, "k": k, "as_of": as_of,
            "version": Path(result.stdout.strip().splitlines()[-1])}


def test_return_predict_gives_the_planted_probabilities(planted_returns, tmp_path):
    w = planted_returns
    (tmp_path / "users.txt").write_text("\n".join([f"u{u}" for u in range(len(w["rates"]))] + ["newcomer"]) + "\n")
    result = _invoke("predict", "--artifacts", w["artifacts"], "--users", tmp_path / "users.txt",
                     "--out", tmp_path / "r.parquet")
    assert result.exit_code == 0, result.stderr
    out = pl.read_parquet(tmp_path / "r.parquet")
    assert out.columns == ["user_id", "probability", "known_user", "horizon_days", "as_of", "model_version"]
    assert set(out["as_of"]) == {w["as_of"]} and set(out["horizon_days"]) == {30.0}
    assert out.row(-1, named=True)["known_user"] is False  # no events: the base rate, marked unknown
    rates = np.array([0.01, 0.04, 0.2])  # the best answer given k events in 400 days (memoryless customers)
    loglik = w["k"][:, None] * np.log(rates)[None] - 400 * rates[None]
    posterior = np.exp(loglik - loglik.max(1, keepdims=True))
    best = (posterior / posterior.sum(1, keepdims=True)) @ (1 - np.exp(-30 * rates))
    known = out["known_user"].to_numpy()[:-1]
    assert np.abs(out["probability"].to_numpy()[:-1] - best)[known].mean() < 0.08


def test_return_evaluate_reports_calibration_and_bad_input_is_one_line(planted_returns, tmp_path):
    w = planted_returns
    result = _invoke("evaluate", "--task", "return", "--artifacts", w["artifacts"],
                     "--interactions", w["root"] / "test.parquet", "--report", tmp_path / "report")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "report" / "return.json").read_text())
    assert report["all"]["roc_auc"] > 0.75 and report["all"]["ece"] < 0.1
    assert (tmp_path / "report" / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    common = ("train", "--catalog", w["root"] / "catalog.parquet", "--interactions", w["root"] / "train.parquet",
              "--out", tmp_path / "a", "--task", "return")
    for extra, words in ((("--horizon", "30 days"), ("--horizon", "30 days")),
                         (("--horizon", "300d"), ("horizons", "--horizon")),
                         (("--horizon", "30d", "--as-of", "yesterday"), ("--as-of", "yesterday"))):
        result = _invoke(*common, *extra)
        (line,) = error_lines(result.stderr)
        assert all(word in line for word in words), line
        assert not (tmp_path / "a" / "current").exists()
    (tmp_path / "users.txt").write_text("u1\n")
    (tmp_path / "pairs.csv").write_text("user_id,item_id\nu1,i1\n")
    result = _invoke("predict", "--artifacts", w["artifacts"], "--pairs", tmp_path / "pairs.csv", "--users",
                     tmp_path / "users.txt", "--out", tmp_path / "p.parquet")
    (line,) = error_lines(result.stderr)
    assert "exactly one of --pairs" in line
    result = _invoke("predict", "--artifacts", w["artifacts"], "--pairs", tmp_path / "users.txt",
                     "--out", tmp_path / "p.parquet")
    (line,) = error_lines(result.stderr)
    assert "a return model answers --users" in line, line
