"""Tests for training/artifacts.py: atomic publish, manifest checksums, verify, safe_join."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from tlrec.files import sha256_file, write_bytes_atomic, write_json_atomic
from tlrec.training.artifacts import (
    ArtifactError,
    checked_csr,
    clean_stale_staging,
    load_tensors,
    new_version,
    open_version,
    read_json,
    read_manifest,
    resolve_version,
    safe_join,
    staged_version,
    tensor_array,
    verify,
)


def publish(root: Path, version: str, payload: bytes = b"weights") -> Path:
    with staged_version(root, version, manifest={"model": "ease"}) as d:
        (d / "weights.safetensors").write_bytes(payload)
        (d / "maps").mkdir()
        (d / "maps" / "items.json").write_text('["a", "b"]')
    return root / version


def test_publish_writes_manifest_and_moves_current(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    extra: dict = {"model": "ease"}
    with staged_version(root, "v1", manifest=extra) as d:
        assert d.parent == root and d.name.startswith(".staging-")
        (d / "weights.safetensors").write_bytes(b"\x00\x01weights")
        (d / "maps").mkdir()
        (d / "maps" / "items.json").write_text('["a", "b"]')
        extra["metrics"] = {"recall@10": np.float32(0.25)}  # added inside the block
    vdir = root / "v1"
    doc = json.loads((vdir / "manifest.json").read_text())
    assert doc["version"] == "v1"
    assert "created_at" in doc
    assert doc["model"] == "ease"
    assert doc["metrics"] == {"recall@10": 0.25}
    assert doc["files"] == {
        "maps/items.json": {
            "sha256": hashlib.sha256(b'["a", "b"]').hexdigest(),
            "bytes": 10,
        },
        "weights.safetensors": {
            "sha256": hashlib.sha256(b"\x00\x01weights").hexdigest(),
            "bytes": 9,
        },
    }
    assert (root / "current").read_text() == "v1"
    assert resolve_version(root) == vdir.resolve()
    assert resolve_version(vdir) == vdir
    assert verify(vdir)["version"] == "v1"
    assert not [p for p in root.iterdir() if p.name.startswith(".staging-")]
    assert not (root / "current.tmp").exists()

    publish(root, "v2", b"newer")
    assert (root / "current").read_text() == "v2"
    assert resolve_version(root).name == "v2"
    assert (root / "v1" / "manifest.json").is_file()  # old version stays on disk


def test_exception_leaves_no_staging_and_keeps_current(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    publish(root, "v1")
    with pytest.raises(RuntimeError, match="boom"):
        with staged_version(root, "v2") as d:
            (d / "half.bin").write_bytes(b"partial")
            raise RuntimeError("boom")
    assert sorted(p.name for p in root.iterdir()) == ["current", "v1"]
    assert (root / "current").read_text() == "v1"


def test_existing_version_refused(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    publish(root, "v1")
    with pytest.raises(ArtifactError, match="already exists"):
        with staged_version(root, "v1"):
            pass
    with pytest.raises(ArtifactError, match="invalid version"):
        with staged_version(root, "../evil"):
            pass
    assert sorted(p.name for p in root.iterdir()) == ["current", "v1"]


def test_verify_catches_flipped_byte_and_missing_file(tmp_path: Path) -> None:
    root = tmp_path / "a"
    vdir = publish(root, "v1", b"0123456789")
    weights = vdir / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[4] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as err:
        verify(vdir)
    msg = str(err.value)
    assert "weights.safetensors" in msg and "checksum mismatch" in msg and "\n" not in msg

    vdir2 = publish(root, "v2")
    (vdir2 / "maps" / "items.json").unlink()
    with pytest.raises(ArtifactError, match=r"items\.json: missing"):
        verify(vdir2)


def test_corrupt_manifest(tmp_path: Path) -> None:
    vdir = publish(tmp_path / "a", "v1")
    (vdir / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="manifest.json: corrupt"):
        verify(vdir)
    with pytest.raises(ArtifactError, match="manifest.json: corrupt"):
        read_manifest(vdir)
    (vdir / "manifest.json").write_text('{"files": {"x": {"bytes": 1}}}')
    with pytest.raises(ArtifactError, match="no sha256"):
        verify(vdir)


def test_resolve_version_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no manifest.json or current in"):
        resolve_version(tmp_path)
    (tmp_path / "current").write_text("../outside")
    with pytest.raises(ArtifactError, match="escapes"):
        resolve_version(tmp_path)
    (tmp_path / "current").write_text("v9")
    with pytest.raises(ArtifactError, match="no manifest.json"):
        resolve_version(tmp_path)


def test_safe_join(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    (root / "inner_link").symlink_to(root / "sub")

    assert safe_join(root, "sub", "f.txt") == (root / "sub" / "f.txt").resolve()
    assert safe_join(root, "sub/../f.txt") == (root / "f.txt").resolve()
    assert safe_join(root, "inner_link", "x") == (root / "sub" / "x").resolve()
    for bad in (("../x",), ("/etc/passwd",), ("link",), ("link", "f.txt"), ("sub", "..", "..", "x")):
        with pytest.raises(ArtifactError):
            safe_join(root, *bad)


def test_atomic_writes_and_helpers(tmp_path: Path) -> None:
    path = tmp_path / "out" / "m.json"
    write_json_atomic(path, {"a": np.int64(3), "b": [1.5]})
    assert json.loads(path.read_text()) == {"a": 3, "b": [1.5]}
    write_bytes_atomic(path, b"xyz")
    assert path.read_bytes() == b"xyz"
    assert os.listdir(path.parent) == ["m.json"]  # no temp files left
    assert sha256_file(path) == hashlib.sha256(b"xyz").hexdigest()

    v1 = new_version()
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{4}", v1)


# --------------------------------------------------------------------------- every file named and verified


def _rewrite_manifest(vdir: Path, **changes: object) -> None:
    doc = json.loads((vdir / "manifest.json").read_text())
    doc.update(changes)
    (vdir / "manifest.json").write_text(json.dumps(doc))


def test_empty_file_list_does_not_let_an_edited_file_load(tmp_path: Path) -> None:
    """The issue's case: ``"files": {}`` and an edited items.json must be refused, naming the file."""
    vdir = publish(tmp_path / "a", "v1")
    _rewrite_manifest(vdir, files={})
    (vdir / "maps" / "items.json").write_text('["a", "evil"]')
    with pytest.raises(ArtifactError) as err:
        verify(vdir)
    msg = str(err.value)
    assert "not listed in manifest.json" in msg and "\n" not in msg
    assert "items.json" in msg or "weights.safetensors" in msg


@pytest.mark.parametrize("extra", ["stray.bin", "maps/stray.json", ".hidden.tmp"])
def test_unlisted_file_refused(tmp_path: Path, extra: str) -> None:
    vdir = publish(tmp_path / "a", "v1")
    (vdir / extra).write_bytes(b"x")
    with pytest.raises(ArtifactError, match=rf"{re.escape(extra)}: not listed in manifest\.json"):
        verify(vdir)


def test_required_file_must_be_listed(tmp_path: Path) -> None:
    """A loader asks for files through the verified version: one the manifest does not list is refused."""
    vdir = publish(tmp_path / "a", "v1")
    doc = json.loads((vdir / "manifest.json").read_text())
    del doc["files"]["maps/items.json"]
    (vdir / "manifest.json").write_text(json.dumps(doc))
    (vdir / "maps" / "items.json").unlink()
    version = open_version(vdir)  # consistent: nothing unlisted, everything listed is there
    assert version.file("weights.safetensors") == vdir.resolve() / "weights.safetensors"
    with pytest.raises(ArtifactError, match=r"maps/items\.json: required file .*not listed in manifest\.json"):
        version.file("maps", "items.json")


def test_file_changed_after_verification_refused(tmp_path: Path) -> None:
    vdir = publish(tmp_path / "a", "v1")
    version = open_version(vdir)
    (vdir / "weights.safetensors").write_bytes(b"weights, but longer")
    with pytest.raises(ArtifactError, match=r"weights\.safetensors: changed after verification"):
        version.file("weights.safetensors")


@pytest.mark.parametrize("entry, message", [
    ("../outside", "not a plain relative path"), ("./weights.safetensors", "not a plain relative path"),
    ("maps//items.json", "not a plain relative path"), ("manifest.json", "lists itself"),
])
def test_manifest_entries_must_be_plain_paths(tmp_path: Path, entry: str, message: str) -> None:
    vdir = publish(tmp_path / "a", "v1")
    doc = json.loads((vdir / "manifest.json").read_text())
    doc["files"][entry] = {"sha256": "0" * 64, "bytes": 0}
    (vdir / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=message):
        verify(vdir)


def test_symlink_in_version_refused(tmp_path: Path) -> None:
    vdir = publish(tmp_path / "a", "v1")
    (vdir / "link").symlink_to(vdir / "weights.safetensors")
    with pytest.raises(ArtifactError, match="link: symlinks are not allowed"):
        verify(vdir)


# --------------------------------------------------------------------------- checked parsing


def test_load_tensors_names_the_file(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"x": torch.arange(10, dtype=torch.int64)}, path)
    assert load_tensors(path)["x"].tolist() == list(range(10))
    path.write_bytes(path.read_bytes()[:-7])  # truncated
    with pytest.raises(ArtifactError, match=r"w\.safetensors: not a readable safetensors file"):
        load_tensors(path)
    path.write_bytes(b"\xff" * 8)  # a header length of 2**64 - 1
    with pytest.raises(ArtifactError, match=r"w\.safetensors: "):
        load_tensors(path)
    with pytest.raises(ArtifactError, match=r"nope\.safetensors: missing"):
        load_tensors(tmp_path / "nope.safetensors")


def test_tensor_array_checks_dtype_shape_and_values() -> None:
    import torch

    state = {"a": torch.zeros(3, 2), "n": torch.tensor([1.0, float("nan")])}
    assert tensor_array(state, "a", "float32", (3, None)).shape == (3, 2)
    with pytest.raises(ValueError, match="'b' missing"):
        tensor_array(state, "b")
    with pytest.raises(ValueError, match="'a' is float32, expected int64"):
        tensor_array(state, "a", "int64")
    with pytest.raises(ValueError, match=r"'a' has shape \[3, 2\], expected \[4, \*\]"):
        tensor_array(state, "a", "float32", (4, None))
    with pytest.raises(ValueError, match="NaN"):
        tensor_array(state, "n", finite=True)


@pytest.mark.parametrize("indptr, indices, message", [
    ([0, 1, 2], [0, 5], "index 5 out of range"),
    ([0, 1, 2], [0, -1], "index -1 out of range"),
    ([0, 3, 2], [0, 1], "indptr decreases at row 1"),
    ([0, 1], [0], r"indptr has shape \[2\], expected \[3\]"),
    ([0, 1, 3], [0, 1], "indptr runs from 0 to 3"),
    ([1, 1, 2], [0, 1], "indptr runs from 1"),
])
def test_checked_csr_refuses_bad_arrays(indptr: list, indices: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        checked_csr(np.array(indptr, np.int64), np.array(indices, np.int64), None, (2, 4), "m")
    ok = checked_csr(np.array([0, 1, 2], np.int64), np.array([0, 3], np.int64), None, (2, 4), "m")
    assert ok.shape == (2, 4) and ok.nnz == 2


def test_read_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"a": ')
    with pytest.raises(ArtifactError, match=r"c\.json: not valid JSON"):
        read_json(path)
    with pytest.raises(ArtifactError, match=r"x\.json: missing"):
        read_json(tmp_path / "x.json")


# --------------------------------------------------------------------------- stale staging dirs


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_publish_removes_staging_dirs_of_dead_writers(tmp_path: Path) -> None:
    """A killed `tlrec train` leaves its staging dir; the next publish removes it (and keeps live ones)."""
    from tlrec.training.artifacts import STAGING_PREFIX, _host_tag

    root = tmp_path / "artifacts"
    root.mkdir()
    dead = root / f"{STAGING_PREFIX}{_dead_pid()}-{_host_tag()}-abc123"
    (dead / "model").mkdir(parents=True)  # killed mid-write
    live = root / f"{STAGING_PREFIX}{os.getppid()}-{_host_tag()}-def456"  # our parent: alive
    live.mkdir()
    other_host = root / f"{STAGING_PREFIX}{os.getpid()}-00000000-ghi789"  # cannot check: by age
    other_host.mkdir()
    old_style = root / ".staging-k2j3h4"
    old_style.mkdir()
    day_ago = os.stat(old_style).st_mtime - 2 * 24 * 3600
    os.utime(old_style, (day_ago, day_ago))
    publish(root, "v1")
    left = sorted(p.name for p in root.iterdir())
    assert left == sorted(["current", "v1", live.name, other_host.name])
    assert clean_stale_staging(root, max_age=0) == [other_host]  # by age once old enough
    assert live.exists()
