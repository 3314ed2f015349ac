"""`tlrec score` as a Ray job: same lists as in process, model_version, resumable after a crash."""

from __future__ import annotations

import polars as pl
import pytest

from tlrec.services.batch_scoring import FAIL_PARTITION_ENV, ScoringJobError, score_job


def _users_file(tmp_path, users):
    path = tmp_path / "users.txt"
    path.write_text("\n".join(users) + "\n")
    return path


def _staging(out):
    return [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_ray_job_matches_in_process(tiny_world, ray_local, tmp_path):
    users = [f"u{u:03d}" for u in range(0, 40, 3)] + ["stranger", "u000"]  # a duplicate, an unknown user
    path = _users_file(tmp_path, users)
    local = score_job(tiny_world.artifacts, path, 5, tmp_path / "local.parquet", exclude_seen=True,
                      ray_address=None, partition_size=4, progress=False)
    distributed = score_job(tiny_world.artifacts, path, 5, tmp_path / "ray.parquet", exclude_seen=True,
                            partition_size=4, progress=False)
    a, b = pl.read_parquet(local.path), pl.read_parquet(distributed.path)
    assert a.columns == ["user_id", "item_id", "score", "rank", "model_version"]
    assert distributed.partitions == 4 and distributed.users == len(users) - 1 == a["user_id"].n_unique()
    assert a["user_id"].unique(maintain_order=True).to_list() == list(dict.fromkeys(users))  # file order
    assert a.select("user_id", "item_id", "rank").equals(b.select("user_id", "item_id", "rank"))
    assert (a["score"] - b["score"]).abs().max() < 1e-5
    assert set(b["model_version"]) == {tiny_world.ncf.name}
    assert b.group_by("user_id").len()["len"].to_list() == [5] * b["user_id"].n_unique()
    train = pl.read_parquet(tiny_world.train)
    assert b.join(train, on=["user_id", "item_id"]).height == 0  # --exclude-seen
    assert _staging(local.path) == [] and _staging(distributed.path) == []


def test_a_job_that_fits_one_partition_skips_the_local_ray(tiny_world, tmp_path, monkeypatch, caplog):
    """The default local Ray is not started for a job of one partition (it would cost more than the job)."""
    import tlrec.services.partitions as partitions

    def no_ray(*args, **kwargs):
        raise AssertionError("a Ray was started for a one-partition job")

    monkeypatch.setattr(partitions, "_run_on_ray", no_ray)
    caplog.set_level("INFO", logger="tlrec.services.partitions")
    result = score_job(tiny_world.artifacts, _users_file(tmp_path, ["u001", "u002"]), 3, tmp_path / "r.parquet",
                       partition_size=2, progress=False)
    assert result.users == 2 and "running in process" in caplog.text


def test_resume_after_a_failed_partition(tiny_world, ray_local, tmp_path, monkeypatch):
    """One partition fails: nothing is published, the others are kept; the re-run scores only the missing one."""
    users = tiny_world.users
    path, out = _users_file(tmp_path, users), tmp_path / "recs.parquet"
    monkeypatch.setenv(FAIL_PARTITION_ENV, "2")
    with pytest.raises(ScoringJobError, match="1 of 5 partitions failed .*partition 2.*re-run"):
        score_job(tiny_world.artifacts, path, 3, out, partition_size=32, progress=False, actors=1)
    assert not out.exists()
    (staging,) = _staging(out)
    assert sorted(p.name for p in staging.glob("part-*.parquet")) == [
        f"part-{i:05d}.parquet" for i in (0, 1, 3, 4)]
    kept = {p.name: p.stat().st_mtime_ns for p in staging.glob("part-*.parquet")}
    monkeypatch.delenv(FAIL_PARTITION_ENV)
    result = score_job(tiny_world.artifacts, path, 3, out, partition_size=32, progress=False, actors=1)
    assert result.reused == 4 and result.partitions == 5
    recs = pl.read_parquet(out)
    assert recs["user_id"].unique(maintain_order=True).to_list() == users  # none lost, order kept
    assert recs.group_by("user_id", "rank").len()["len"].max() == 1  # none duplicated
    assert recs.height == 3 * len(users)
    assert not staging.exists() and kept  # parts were reused, then cleaned up


def test_changed_inputs_do_not_reuse_parts(tiny_world, tmp_path, monkeypatch):
    """Parts of a failed job with other inputs (here: another k) are dropped, not mixed in."""
    path, out = _users_file(tmp_path, [f"u{u:03d}" for u in range(10)]), tmp_path / "recs.parquet"
    monkeypatch.setenv(FAIL_PARTITION_ENV, "0")
    with pytest.raises(ScoringJobError):
        score_job(tiny_world.artifacts, path, 3, out, ray_address=None, partition_size=4, progress=False)
    monkeypatch.delenv(FAIL_PARTITION_ENV)
    result = score_job(tiny_world.artifacts, path, 4, out, ray_address=None, partition_size=4, progress=False)
    assert result.reused == 0
    assert pl.read_parquet(out).group_by("user_id").len()["len"].to_list() == [4] * 10
    assert _staging(out) == []


def test_popularity_artifact_and_candidates(tiny_world, tmp_path):
    cands = tmp_path / "cands.txt"
    cands.write_text("i001\ni002\ni003\nnot-an-item\n")
    result = score_job(tiny_world.popularity, _users_file(tmp_path, ["u001", "nobody"]), 5, tmp_path / "r.parquet",
                       candidates_path=cands, ray_address=None, progress=False)
    recs = pl.read_parquet(result.path)
    assert set(recs["item_id"]) <= {"i001", "i002", "i003"} and recs.height == 6
    assert set(recs["model_version"]) == {tiny_world.popularity.name}


def test_csv_output_with_titles_holds_the_same_lists(tiny_world, tmp_path):
    """Issue 16, item 11: a person can read the lists (titles), in the format they asked for (the extension)."""
    users = _users_file(tmp_path, ["u001", "u002", "u003"])
    plain = score_job(tiny_world.artifacts, users, 4, tmp_path / "r.parquet", ray_address=None, progress=False,
                      partition_size=2)
    readable = score_job(tiny_world.artifacts, users, 4, tmp_path / "r.csv", ray_address=None, progress=False,
                         partition_size=2, catalog_path=tiny_world.catalog)
    a, b = pl.read_parquet(plain.path), pl.read_csv(readable.path)
    assert b.columns == ["user_id", "item_id", "title", "score", "rank", "model_version"]
    assert a.select("user_id", "item_id", "rank").equals(b.select("user_id", "item_id", "rank"))
    catalog = pl.read_parquet(tiny_world.catalog)
    assert b.join(catalog, on="item_id").filter(pl.col("title") != pl.col("title_right")).height == 0
    assert b["title"].null_count() == 0


@pytest.mark.parametrize("kwargs, message", [({"k": 0}, "--k"), ({"partition_size": 0}, "--partition-size")])
def test_bad_arguments(tiny_world, tmp_path, kwargs, message):
    args = {"k": 3, "partition_size": 10, **kwargs}
    out = tmp_path / "r.parquet"
    with pytest.raises(ValueError, match=message):
        score_job(tiny_world.artifacts, _users_file(tmp_path, ["u001"]), args["k"], out,
                  partition_size=args["partition_size"], ray_address=None, progress=False)
    assert list(tmp_path.iterdir()) == [tmp_path / "users.txt"]


def test_cli_failure_then_resume(tiny_world, tmp_path, monkeypatch):
    """`tlrec score --no-ray`: a failed partition exits 1 with one line telling to re-run; the re-run completes."""
    from typer.testing import CliRunner

    from tlrec.services.cli import app

    users, out = _users_file(tmp_path, tiny_world.users[:30]), tmp_path / "recs.parquet"
    args = ["score", "--artifacts", str(tiny_world.artifacts), "--users", str(users), "--k", "2", "--out", str(out),
            "--no-ray", "--partition-size", "10"]
    monkeypatch.setenv(FAIL_PARTITION_ENV, "1")
    failed = CliRunner().invoke(app, args)
    assert failed.exit_code == 1 and not out.exists()
    (line,) = [x for x in failed.stderr.splitlines() if x.startswith("error: ")]
    assert "1 of 3 partitions failed" in line and "re-run" in line
    monkeypatch.delenv(FAIL_PARTITION_ENV)
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.stderr
    assert f"{out} (60 rows)" in done.stdout
    assert pl.read_parquet(out)["user_id"].unique(maintain_order=True).to_list() == tiny_world.users[:30]


def _truncated_copy(src, dst):
    """``src`` with its model weights cut in half and the manifest recomputed to match (only parsing can tell)."""
    import json
    import shutil

    from tlrec.files import sha256_file

    bad = shutil.copytree(src, dst)
    weights = bad / "model" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    doc = json.loads((bad / "manifest.json").read_text())
    doc["files"]["model/weights.safetensors"] = {"sha256": sha256_file(weights), "bytes": weights.stat().st_size}
    (bad / "manifest.json").write_text(json.dumps(doc))
    return bad


@pytest.mark.parametrize("ray_address", [None, "local"], ids=["in-process", "ray"])
def test_bad_artifact_refused_before_any_work(tiny_world, tmp_path, ray_address):
    """A truncated weights file: one ArtifactError naming it, before a staging folder or a Ray exists."""
    from tlrec.training.artifacts import ArtifactError

    bad = _truncated_copy(tiny_world.ncf, tmp_path / "versions" / "bad")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ArtifactError, match=r"model/weights\.safetensors: not a readable safetensors file"):
        score_job(bad, _users_file(tmp_path, tiny_world.users[:5]), 3, out_dir / "r.parquet",
                  ray_address=ray_address, progress=False)
    assert list(out_dir.iterdir()) == []


def test_job_with_no_complete_part_leaves_nothing(tiny_world, tmp_path, monkeypatch):
    """Every partition failed: nothing is worth keeping, so the staging folder goes too."""
    out = tmp_path / "out" / "r.parquet"
    monkeypatch.setenv(FAIL_PARTITION_ENV, "0")
    with pytest.raises(ScoringJobError, match="1 of 1 partitions failed .*nothing was kept"):
        score_job(tiny_world.artifacts, _users_file(tmp_path, tiny_world.users[:5]), 3, out, ray_address=None,
                  progress=False)
    assert list(out.parent.iterdir()) == []


def test_parts_are_assembled_in_order_with_their_column_types_reconciled(tmp_path):
    """A part whose optional column is all null (a partition of items without titles) joins the others."""
    from tlrec.services.partitions import _assemble, part_path

    staging = tmp_path / "staging"
    staging.mkdir()
    pl.DataFrame({"user_id": ["b", "c"], "title": ["x", "y"]}).write_parquet(part_path(staging, 1))
    pl.DataFrame({"user_id": ["a"], "title": [None]}).write_parquet(part_path(staging, 0))
    for out, read in ((tmp_path / "o.parquet", pl.read_parquet), (tmp_path / "o.csv", pl.read_csv)):
        assert _assemble(staging, 2, out) == 3
        frame = read(out)
        assert frame["user_id"].to_list() == ["a", "b", "c"] and frame["title"].to_list() == [None, "x", "y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.csv", "o.parquet", "staging"]  # no temp file left
