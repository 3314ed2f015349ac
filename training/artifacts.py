"""Versioned artifact directories: manifest with checksums, atomic publish, verification.

Layout::

    ROOT/
      current                 text file naming the live version
      <version>/manifest.json {"version", "created_at", "files": {relpath: {"sha256", "bytes"}}, ...}
      <version>/...           weights (safetensors), index, id maps, metrics.json

A version is written into ``ROOT/.staging-<random>``, every file and directory
fsynced, then renamed into place and ``current`` swapped atomically, so a
reader never sees a half-written version. Nothing here uses pickle.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "ArtifactError",
    "MANIFEST",
    "CURRENT",
    "new_version",
    "read_manifest",
    "resolve_version",
    "safe_join",
    "sha256_file",
    "staged_version",
    "verify",
    "write_bytes_atomic",
    "write_json_atomic",
]

MANIFEST = "manifest.json"
CURRENT = "current"
STAGING_PREFIX = ".staging-"
_RESERVED = ("version", "created_at", "files")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ArtifactError(RuntimeError):
    """Problem with an artifact directory; the message is one line naming the file."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


# --------------------------------------------------------------------------- small helpers


def fsync_dir(path: Path) -> None:
    """fsync a directory so renames/creations inside it are durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json_default(obj: Any) -> Any:
    """Make numpy scalars/arrays and paths JSON-serialisable."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n").encode()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same dir, fsync, ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON atomically (numpy scalars/arrays allowed)."""
    write_bytes_atomic(path, _dumps(obj))


def safe_join(root: Path, *parts: str) -> Path:
    """Resolved ``root / parts...``; ArtifactError if it escapes ``root``.

    Refuses absolute parts, ``..`` that climbs out, and symlinks pointing outside.
    """
    root_resolved = Path(root).resolve()
    for part in parts:
        text = os.fspath(part)
        if "\x00" in text:
            raise ArtifactError(f"{text!r}: path contains a NUL byte (under {root})")
        if os.path.isabs(text):
            raise ArtifactError(f"{text}: absolute path not allowed under {root}")
    target = root_resolved.joinpath(*parts).resolve()
    if target != root_resolved and not target.is_relative_to(root_resolved):
        raise ArtifactError(f"{'/'.join(map(str, parts))}: path escapes {root}")
    return target


def new_version() -> str:
    """A sortable version name: UTC time + short random suffix, e.g. ``20261123T130512Z-3f2a``."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(2)}"


def _check_version(version: str) -> None:
    if not isinstance(version, str) or not _VERSION_RE.match(version) or version in (CURRENT,) \
            or version.endswith(".tmp"):
        raise ArtifactError(
            f"{version!r}: invalid version name (letters, digits, '.', '_', '-'; "
            f"not {CURRENT!r}, not starting with '.')"
        )


# --------------------------------------------------------------------------- publishing


def _collect_files(staging: Path) -> dict[str, dict[str, Any]]:
    """sha256 + size of every file under ``staging`` (except the manifest); fsyncs each file and dir."""
    files: dict[str, dict[str, Any]] = {}
    for dirpath, dirnames, filenames in os.walk(staging):
        dirnames.sort()
        d = Path(dirpath)
        for name in sorted(filenames):
            p = d / name
            rel = p.relative_to(staging).as_posix()
            if rel == MANIFEST:
                continue
            if p.is_symlink():
                raise ArtifactError(f"{rel}: symlinks are not allowed in an artifact version")
            h = hashlib.sha256()
            size = 0
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
                    size += len(chunk)
                os.fsync(fh.fileno())
            files[rel] = {"sha256": h.hexdigest(), "bytes": size}
        for name in dirnames:
            if (d / name).is_symlink():
                raise ArtifactError(f"{(d / name).relative_to(staging).as_posix()}: symlinks are "
                                    "not allowed in an artifact version")
    return files


def _fsync_tree_dirs(top: Path) -> None:
    for dirpath, _dirnames, _filenames in os.walk(top, topdown=False):
        fsync_dir(Path(dirpath))


@contextmanager
def staged_version(
    root: Path, version: str | None = None, manifest: dict[str, Any] | None = None
) -> Iterator[Path]:
    """Write a new version into a staging dir, then publish it atomically.

    Yields ``root/.staging-<random>``; write files into it. The caller may keep
    adding keys to ``manifest`` inside the block. On normal exit: write
    ``manifest.json`` (``version``, ``created_at``, ``files`` with sha256 and
    bytes of every other file, then the caller's keys), fsync everything,
    ``os.rename`` to ``root/<version>`` (ArtifactError if it exists), fsync
    root and point ``root/current`` at it. On an exception the staging dir is
    removed and the exception re-raised; ``current`` is untouched.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    version = version if version is not None else new_version()
    _check_version(version)
    target = root / version
    if target.exists():
        raise ArtifactError(f"{target}: version already exists")
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
    try:
        yield staging
        _publish(root, staging, version, manifest if manifest is not None else {})
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _publish(root: Path, staging: Path, version: str, extra: dict[str, Any]) -> None:
    target = root / version
    files = _collect_files(staging)
    clash = [k for k in _RESERVED if k in extra]
    if clash:
        logger.warning("manifest keys %s are reserved and were ignored", ", ".join(clash))
    doc: dict[str, Any] = {
        "version": version,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "files": files,
    }
    doc.update({k: v for k, v in extra.items() if k not in _RESERVED})
    try:
        data = _dumps(doc)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{MANIFEST}: manifest is not JSON-serialisable ({exc})") from None
    with open(staging / MANIFEST, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_tree_dirs(staging)
    if target.exists():
        raise ArtifactError(f"{target}: version already exists")
    os.rename(staging, target)
    fsync_dir(root)
    _point_current(root, version)
    logger.info("published %s (%d files) under %s", version, len(files), root)


def _point_current(root: Path, version: str) -> None:
    """Atomically make ``root/current`` contain ``version`` (via ``current.tmp``)."""
    tmp = root / f"{CURRENT}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(version.encode())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / CURRENT)
    fsync_dir(root)


# --------------------------------------------------------------------------- reading


def resolve_version(path: Path) -> Path:
    """The version directory for ``path``.

    ``path`` itself if it holds ``manifest.json``; else, if it holds ``current``,
    the version named there (must stay inside ``path`` and hold a manifest).
    """
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    current = path / CURRENT
    if current.is_file():
        try:
            name = current.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{current}: unreadable ({exc})") from None
        if not name:
            raise ArtifactError(f"{current}: empty (expected a version name)")
        version_dir = safe_join(path, name)
        if not (version_dir / MANIFEST).is_file():
            raise ArtifactError(f"{current}: names version {name!r}, which has no {MANIFEST}")
        return version_dir
    if not path.exists():
        raise ArtifactError(f"{path}: no such directory")
    raise ArtifactError(f"no {MANIFEST} or {CURRENT} in {path}")


def read_manifest(version_dir: Path) -> dict[str, Any]:
    """Parse ``version_dir/manifest.json``; ArtifactError if missing, unreadable or malformed."""
    mpath = Path(version_dir) / MANIFEST
    try:
        doc = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{mpath}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{mpath}: corrupt manifest ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), dict):
        raise ArtifactError(f"{mpath}: corrupt manifest (expected an object with a 'files' object)")
    for rel, info in doc["files"].items():
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
            raise ArtifactError(f"{mpath}: corrupt manifest (entry {rel!r} has no sha256)")
    return doc


def verify(version_dir: Path) -> dict[str, Any]:
    """Recompute the sha256 of every file in the manifest; return the manifest.

    Raises:
        ArtifactError: naming the first missing or mismatched file, or a
            corrupt/unreadable manifest.
    """
    version_dir = Path(version_dir)
    doc = read_manifest(version_dir)
    for rel, info in doc["files"].items():
        p = safe_join(version_dir, rel)
        if not p.is_file():
            raise ArtifactError(f"{p}: missing (listed in {MANIFEST})")
        size = info.get("bytes")
        if isinstance(size, int) and p.stat().st_size != size:
            raise ArtifactError(
                f"{p}: size mismatch (manifest says {size} bytes, file has {p.stat().st_size})"
            )
        got = sha256_file(p)
        if got != info["sha256"]:
            raise ArtifactError(
                f"{p}: checksum mismatch (manifest sha256 {info['sha256'][:12]}..., file {got[:12]}...)"
            )
    return doc
