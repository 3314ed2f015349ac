"""Durable file writes and checksums, shared by every layer.

A file is published whole or not at all: it is written under a temporary name in the
target's own folder (so the rename never crosses filesystems), flushed and fsynced, moved
into place with :func:`os.replace`, and the folder is fsynced so the rename survives a
power loss. A failure at any point removes the temporary file and leaves the old target
as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_path",
    "fsync_dir",
    "json_bytes",
    "sha256_file",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_parquet_atomic",
]


def fsync_dir(path: str | Path) -> None:
    """fsync a directory so creations and renames inside it are durable (no-op where unsupported)."""
    with suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks of ``chunk_size``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on normal exit fsync it and move it onto ``target``.

    The caller writes the whole file to the yielded path (any writer: Parquet, safetensors,
    FAISS ...). On an exception the temporary file is removed and ``target`` is untouched.
    The published file is readable like any other (mode 0644).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Publish ``data`` as ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _json_default(obj: Any) -> Any:
    """numpy scalars and arrays, paths and sets as plain JSON values."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def json_bytes(obj: Any) -> bytes:
    """``obj`` as indented UTF-8 JSON with a final newline (numpy values, paths and sets allowed)."""
    return (json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n").encode()


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Publish ``obj`` as indented UTF-8 JSON at ``path`` atomically."""
    write_bytes_atomic(path, json_bytes(obj))


def write_parquet_atomic(frame: Any, path: str | Path, write: Callable[[Any, Path], None] | None = None) -> None:
    """Publish a polars DataFrame (or, with ``write``, any table) as Parquet at ``path`` atomically.

    ``write(frame, tmp_path)`` overrides how the table is written (default: zstd with statistics).
    """
    with atomic_path(path) as tmp:
        if write is not None:
            write(frame, tmp)
        else:
            frame.write_parquet(tmp, compression="zstd", statistics=True)
