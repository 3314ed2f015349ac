"""Versioned artifact directories: manifest with checksums, atomic publish, verification.

Layout::

    ROOT/
      current                 text file naming the live version
      <version>/manifest.json {"version", "created_at", "files": {relpath: {"sha256", "bytes"}}, ...}
      <version>/...           weights (safetensors), index, id maps, metrics.json

What a model version holds (file names, formats) is ``training.model_artifact``'s; this
module knows versions only as directories of files. Durable writes and checksums are
``tlrec.files``'.

A version is written into ``ROOT/.staging-<pid>-<host>-<random>``, every file and
directory fsynced, then renamed into place and ``current`` swapped atomically, so a
reader never sees a half-written version. Nothing here uses pickle.

Reading: :func:`open_version` verifies a version before anything is parsed. Every file
in the version directory must be listed in the manifest (except the manifest itself),
every listed file must exist with the listed size and sha256, and the loader asks for
files only through :meth:`VerifiedVersion.file`, which refuses a file the manifest does
not list (so a required file missing from the manifest is refused, naming it) and one
that changed since it was verified. :func:`load_tensors`, :func:`read_json`,
:func:`tensor_array` and :func:`checked_csr` turn any parse error, wrong dtype or shape
and out-of-range index into one ``ArtifactError`` line naming the file, so a corrupt
artifact never loads.

Stale staging directories (a killed writer) are removed at the start of the next
publish under the same root: see :func:`clean_stale_staging`.
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
import socket
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from tlrec.errors import TlrecError
from tlrec.files import fsync_dir, json_bytes

if TYPE_CHECKING:
    import scipy.sparse as sp
    import torch

logger = logging.getLogger(__name__)

__all__ = [
    "ArtifactError",
    "open_task_version",
    "MANIFEST",
    "CURRENT",
    "VerifiedVersion",
    "checked_csr",
    "clean_stale_staging",
    "first_line",
    "load_tensors",
    "new_version",
    "open_version",
    "read_json",
    "read_manifest",
    "resolve_version",
    "safe_join",
    "staged_version",
    "tensor_array",
    "verify",
]

MANIFEST = "manifest.json"
CURRENT = "current"
STAGING_PREFIX = ".staging-"
#: A staging dir whose writer cannot be checked (another host, or an old-style name) is
#: stale once nothing in it changed for this long (a long training run on another host
#: sharing the root keeps writing into it, so its newest mtime stays recent).
STALE_STAGING_SECONDS = 24 * 3600
_STAGING_RE = re.compile(rf"^{re.escape(STAGING_PREFIX)}(\d+)-([0-9a-f]{{8}})-")
_RESERVED = ("version", "created_at", "files")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ArtifactError(TlrecError, ValueError):
    """Problem with an artifact directory; the message is one line ``<file>: <what is wrong>``."""


# --------------------------------------------------------------------------- small helpers


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
    removed and the exception re-raised; ``current`` is untouched. A writer killed
    outright (SIGKILL, power loss) cannot clean up: the next publish under ``root``
    removes its staging dir (:func:`clean_stale_staging`).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    version = version if version is not None else new_version()
    _check_version(version)
    target = root / version
    if target.exists():
        raise ArtifactError(f"{target}: version already exists")
    clean_stale_staging(root)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-{_host_tag()}-", dir=root))
    try:
        yield staging
        _publish(root, staging, version, manifest if manifest is not None else {})
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _host_tag() -> str:
    """8 hex digits naming this host in staging-dir names (a pid means something only on its host)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OSError:
        return True
    return True


def _newest_mtime(top: Path) -> float:
    newest = top.lstat().st_mtime
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            try:
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
            except OSError:
                pass
    return newest


def clean_stale_staging(root: Path, max_age: float = STALE_STAGING_SECONDS) -> list[Path]:
    """Remove the ``.staging-*`` dirs of dead writers under ``root``; returns what was removed.

    A staging dir is named ``.staging-<pid>-<host tag>-<random>``. It is stale when its
    writer ran on this host and that pid is gone, or, when the writer cannot be checked
    (another host sharing the root, or a name without pid), when nothing in it changed for
    ``max_age`` seconds (default 24 h). A live writer's dir on this host is never removed,
    however old. A pid reused by an unrelated process keeps a dead writer's dir until that
    process exits, which errs on the side of keeping. Failures to remove are logged, not raised.
    """
    removed: list[Path] = []
    try:
        entries = list(Path(root).iterdir())
    except OSError:
        return removed
    host, now = _host_tag(), time.time()
    for entry in entries:
        if not entry.name.startswith(STAGING_PREFIX) or entry.is_symlink() or not entry.is_dir():
            continue
        match = _STAGING_RE.match(entry.name)
        try:
            if match is not None and match.group(2) == host:
                pid = int(match.group(1))
                stale = pid != os.getpid() and not _pid_alive(pid)
                why = f"its writer (pid {pid}) is gone"
            else:
                age = now - _newest_mtime(entry)
                stale = age > max_age
                why = f"unchanged for {age / 3600:.0f} h"
        except OSError:  # vanished meanwhile (another writer cleaned it)
            continue
        if stale:
            logger.warning("removing stale staging dir %s (%s)", entry, why)
            shutil.rmtree(entry, ignore_errors=True)
            if not entry.exists():
                removed.append(entry)
    return removed


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
        data = json_bytes(doc)
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


_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _normalised_rel(rel: object) -> bool:
    """True for a plain relative POSIX path inside the version (no '', '.', '..', '\\', leading '/')."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel or rel.startswith("/"):
        return False
    parts = rel.split("/")
    return all(p not in ("", ".", "..") for p in parts) and PurePosixPath(rel).as_posix() == rel


def read_manifest(version_dir: Path) -> dict[str, Any]:
    """Parse ``version_dir/manifest.json``; ArtifactError if missing, unreadable or malformed.

    Every entry of ``files`` must be a normalised relative path (not the manifest
    itself) with a hex ``sha256`` and an integer ``bytes``.
    """
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
        if not _SHA256_RE.match(info["sha256"]):
            raise ArtifactError(f"{mpath}: corrupt manifest (entry {rel!r}: sha256 is not 64 hex digits)")
        size = info.get("bytes")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ArtifactError(f"{mpath}: corrupt manifest (entry {rel!r} has no byte size)")
        if not _normalised_rel(rel):
            raise ArtifactError(f"{mpath}: corrupt manifest (entry {rel!r} is not a plain relative path)")
        if rel == MANIFEST:
            raise ArtifactError(f"{mpath}: corrupt manifest (it lists itself)")
    return doc


class VerifiedVersion:
    """A version directory whose every file was checked against its manifest (see :func:`open_version`).

    Loaders get paths only from :meth:`file` / :meth:`check`: a file the manifest does not
    list is refused (a required file missing from the manifest), and so is one whose size,
    mtime or inode changed since it was hashed.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], stats: Mapping[str, tuple[int, int, int, int]],
                 name: str | None = None) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self._stats = dict(stats)
        self.name = name if name is not None else self.path.name  # the version name, as ``current`` names it

    @property
    def files(self) -> list[str]:
        """Relative paths of every verified file, sorted."""
        return sorted(self._stats)

    def has(self, *parts: str) -> bool:
        """True if the manifest lists ``parts`` (joined with '/')."""
        return "/".join(parts) in self._stats

    def file(self, *parts: str) -> Path:
        """The verified file ``version/parts...``; ArtifactError naming it if not listed, missing or changed."""
        rel = "/".join(parts)
        path = self.path / rel
        if rel not in self._stats:
            what = "required file missing from the version and" if not os.path.lexists(path) else "required file"
            raise ArtifactError(f"{path}: {what} not listed in {MANIFEST}")
        try:
            st = os.lstat(path)
        except OSError:
            raise ArtifactError(f"{path}: missing (removed after verification)") from None
        if _stat_key(st) != self._stats[rel]:
            raise ArtifactError(f"{path}: changed after verification (size, mtime or inode differ)")
        return path

    def check(self, path: Path) -> Path:
        """:meth:`file` for an absolute ``path`` inside the version directory."""
        try:
            rel = Path(path).relative_to(self.path)
        except ValueError:
            raise ArtifactError(f"{path}: not inside the verified version {self.path}") from None
        return self.file(*rel.parts)

    def __repr__(self) -> str:
        return f"VerifiedVersion({str(self.path)!r}, {len(self._stats)} files)"


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def _walk_version(version_dir: Path) -> list[str]:
    """Relative paths of every file under ``version_dir`` except the manifest; ArtifactError on a symlink
    or anything that is not a regular file or directory."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(version_dir):
        d = Path(dirpath)
        for name in sorted(dirnames + filenames):
            p = d / name
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                raise ArtifactError(f"{p}: symlinks are not allowed in an artifact version")
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise ArtifactError(f"{p}: not a regular file")
            rel = p.relative_to(version_dir).as_posix()
            if rel != MANIFEST:
                found.append(rel)
    return found


def open_task_version(path: Path, task: str, how: str) -> VerifiedVersion:
    """``open_version`` of a version that holds a ``task`` model (manifest ``task``); else ``ArtifactError``,
    one line that says what it holds and ``how`` to train a ``task`` model."""
    version = open_version(path)
    held = version.manifest.get("task", "recommend")
    if held != task:
        raise ArtifactError(f"{version.path}: holds a {held!r} model, not a {task} model (train one with {how})")
    return version


def open_version(path: Path) -> VerifiedVersion:
    """Resolve ``path`` (a version dir, or a root with ``current``) and verify it; see :func:`verify`."""
    named = resolve_version(Path(path))
    version_dir = named.resolve()
    doc = read_manifest(version_dir)
    listed: dict[str, dict[str, Any]] = doc["files"]
    for rel in _walk_version(version_dir):
        if rel not in listed:
            raise ArtifactError(f"{version_dir / rel}: not listed in {MANIFEST} (a version holds only the "
                                "files its manifest lists)")
    sizes: dict[str, os.stat_result] = {}
    for rel, info in listed.items():
        p = safe_join(version_dir, rel)
        try:
            st = os.lstat(p)
        except OSError:
            raise ArtifactError(f"{p}: missing (listed in {MANIFEST})") from None
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError(f"{p}: not a regular file (listed in {MANIFEST})")
        if st.st_size != info["bytes"]:
            raise ArtifactError(f"{p}: size mismatch (manifest says {info['bytes']} bytes, file has {st.st_size})")
        sizes[rel] = st
    stats: dict[str, tuple[int, int, int, int]] = {}
    for rel, info in listed.items():
        p = version_dir / rel
        h = hashlib.sha256()
        try:
            with open(p, "rb") as fh:
                st = os.fstat(fh.fileno())
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as exc:
            raise ArtifactError(f"{p}: unreadable ({exc.strerror or exc})") from None
        got = h.hexdigest()
        if got != info["sha256"]:
            raise ArtifactError(
                f"{p}: checksum mismatch (manifest sha256 {info['sha256'][:12]}..., file {got[:12]}...)"
            )
        if _stat_key(st) != _stat_key(sizes[rel]) or st.st_size != info["bytes"]:
            raise ArtifactError(f"{p}: changed while being verified")
        stats[rel] = _stat_key(st)
    return VerifiedVersion(version_dir, doc, stats, named.name)


def verify(version_dir: Path) -> dict[str, Any]:
    """Check a version directory against its manifest; return the manifest.

    Every file in the directory (except ``manifest.json``) must be listed, and every listed
    file must exist with the listed size and sha256. Which files a loader needs is checked
    when it asks for them (:meth:`VerifiedVersion.file`); use :func:`open_version` to load.

    Raises:
        ArtifactError: one line naming the first unlisted, missing or mismatched file, a
            symlink, or a corrupt/unreadable manifest.
    """
    return open_version(Path(version_dir)).manifest


# --------------------------------------------------------------------------- parsing, checked


def first_line(exc: BaseException, limit: int = 200) -> str:
    lines = str(exc).strip().splitlines()
    text = " ".join(lines[0].split()) if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_json(path: Path) -> Any:
    """Parse a JSON file of an artifact; ArtifactError ``<path>: <what>`` if missing or malformed."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: unreadable ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({first_line(exc)})") from None


def load_tensors(path: Path) -> dict[str, "torch.Tensor"]:
    """Read a safetensors file; ArtifactError ``<path>: <what>`` for anything that is not one."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing")
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ValueError...: all mean a bad file
        raise ArtifactError(f"{path}: not a readable safetensors file ({first_line(exc)})") from None


def tensor_array(
    state: Mapping[str, Any], key: str, dtype: str | None = None, shape: Sequence[int | None] | None = None,
    finite: bool = False,
) -> np.ndarray:
    """``state[key]`` as a numpy array, checked; ValueError naming the tensor and what is wrong.

    ``shape``: expected dimensions, None for any size along that axis. ``finite``: no NaN/inf.
    Callers wrap the ValueError with the file's name (see ``Recommender.load``).
    """
    if key not in state:
        raise ValueError(f"tensor {key!r} missing")
    value = state[key]
    try:
        arr = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    except (TypeError, RuntimeError) as exc:
        raise ValueError(f"tensor {key!r}: {first_line(exc)}") from None
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise ValueError(f"tensor {key!r} is {arr.dtype}, expected {np.dtype(dtype)}")
    if shape is not None and (arr.ndim != len(shape)
                              or any(s is not None and s != a for s, a in zip(shape, arr.shape))):
        want = ", ".join("*" if s is None else str(s) for s in shape)
        raise ValueError(f"tensor {key!r} has shape [{', '.join(map(str, arr.shape))}], expected [{want}]")
    if finite and np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"tensor {key!r} holds NaN or inf")
    return arr


def checked_csr(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray | None, shape: tuple[int, int], name: str
) -> "sp.csr_matrix":
    """A CSR matrix from stored arrays, after checking them; ValueError naming ``name`` and the fault.

    ``indptr`` must have ``rows + 1`` entries from 0 to ``len(indices)``, never decreasing;
    every index in ``[0, cols)``; ``data`` (default: ones, float32) one finite value per index.
    """
    import scipy.sparse as sp

    n_rows, n_cols = (int(shape[0]), int(shape[1]))
    if n_rows < 0 or n_cols < 0:
        raise ValueError(f"{name}: negative shape {shape}")
    if indptr.ndim != 1 or len(indptr) != n_rows + 1:
        raise ValueError(f"{name}: indptr has shape {list(indptr.shape)}, expected [{n_rows + 1}] (rows + 1)")
    if indices.ndim != 1:
        raise ValueError(f"{name}: indices have shape {list(indices.shape)}, expected one dimension")
    if not np.issubdtype(indptr.dtype, np.integer) or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"{name}: indptr and indices must be integers, got {indptr.dtype} and {indices.dtype}")
    if int(indptr[0]) != 0 or int(indptr[-1]) != len(indices):
        raise ValueError(f"{name}: indptr runs from {int(indptr[0])} to {int(indptr[-1])}, expected 0 to "
                         f"{len(indices)} (the number of indices)")
    if len(indptr) > 1 and (np.diff(indptr) < 0).any():
        row = int(np.flatnonzero(np.diff(indptr) < 0)[0])
        raise ValueError(f"{name}: indptr decreases at row {row}")
    if len(indices):
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= n_cols:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name}: index {bad} out of range [0, {n_cols})")
    if data is None:
        data = np.ones(len(indices), np.float32)
    elif data.shape != indices.shape:
        raise ValueError(f"{name}: {len(data)} values for {len(indices)} indices")
    elif np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise ValueError(f"{name}: values hold NaN or inf")
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))
