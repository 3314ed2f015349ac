"""Tests for training/artifacts.py: atomic publish, manifest checksums, verify, safe_join."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from tlrec.training.artifacts import (
    ArtifactError,
    new_version,
    read_manifest,
    resolve_version,
    safe_join,
    sha256_file,
    staged_version,
    verify,
    write_bytes_atomic,
    write_json_atomic,
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
