"""A/B experiments: the YAML definition, the stable-hash assignment and the exposure log.

Pure pieces the API and the offline harness (``services/ab``) share; nothing here
loads a model or touches the network.

* :class:`Experiment` / :class:`Variant`: the experiment file (pydantic, ``extra="forbid"``)::

      name: ranker-v2
      salt: "2026-11"
      traffic: 1.0                  # share of units in the experiment
      start: 2026-11-01             # optional, inclusive (a date is midnight UTC)
      stop: 2026-12-01              # optional, exclusive
      control: control              # optional, default: the first variant
      variants:
        - {name: control, artifact: v1, weight: 0.5}
        - {name: treatment, artifact: v2, weight: 0.5}

  More keys: ``description``, ``click_events`` (default ``[click]``),
  ``conversion_events`` (default ``[purchase, convert]``), ``value_events``
  (default: the conversion events), ``alpha`` (0.05), ``srm_alpha`` (0.001),
  ``sequential_tau`` (0.05: sd of the mSPRT mixture, in units of the metric's sd).
* :func:`assign_variant`: a pure function of (unit id, experiment name, salt) through
  SHA-256 (never Python's ``hash()``), so every process, machine and hash seed agrees.
* :class:`ExposureLog`: an append-only JSON-lines log, one exposure per (experiment,
  unit), each append fsynced; safe across threads and processes (``flock``).
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tlrec.training.artifacts import fsync_dir
from tlrec.training.data import DataError

logger = logging.getLogger(__name__)

__all__ = [
    "Experiment",
    "ExposureLog",
    "Variant",
    "assign_variant",
    "assign_many",
    "hash_buckets",
    "load_experiment",
    "parse_experiment",
    "resolve_artifact",
]

_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_WEIGHT_TOLERANCE = 1e-6


class Variant(BaseModel):
    """One arm: its name, the artifact it serves (version name or path) and its share of the traffic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_RE)
    artifact: str = Field(min_length=1)
    weight: float = Field(ge=0.0, le=1.0)


def _utc(value: Any) -> Any:
    """Dates -> midnight UTC; naive datetimes -> UTC; anything else passes to pydantic."""
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=_dt.timezone.utc)
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day, tzinfo=_dt.timezone.utc)
    return value


class Experiment(BaseModel):
    """An experiment definition (see the module docstring for the YAML keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_RE)
    salt: str = Field(min_length=1)
    traffic: float = Field(default=1.0, ge=0.0, le=1.0)
    start: _dt.datetime | None = None
    stop: _dt.datetime | None = None
    variants: list[Variant] = Field(min_length=2)
    control: str | None = None
    description: str = ""
    click_events: list[str] = Field(default_factory=lambda: ["click"], min_length=1)
    conversion_events: list[str] = Field(default_factory=lambda: ["purchase", "convert"], min_length=1)
    value_events: list[str] | None = None
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    srm_alpha: float = Field(default=0.001, gt=0.0, lt=1.0)
    sequential_tau: float = Field(default=0.05, gt=0.0)

    @field_validator("salt", mode="before")
    @classmethod
    def _salt_as_text(cls, value: Any) -> Any:
        # YAML reads `salt: 2026` as an int and `salt: 2026-11-01` as a date; both mean their text.
        if isinstance(value, (int, _dt.date)) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("start", "stop", mode="before")
    @classmethod
    def _as_utc(cls, value: Any) -> Any:
        return _utc(value)

    @field_validator("variants")
    @classmethod
    def _check_variants(cls, variants: list[Variant]) -> list[Variant]:
        names = [v.name for v in variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique, repeated: {', '.join(dupes)}")
        total = math.fsum(v.weight for v in variants)
        if abs(total - 1.0) > _WEIGHT_TOLERANCE:
            raise ValueError(f"variant weights must sum to 1, got {total:g} "
                             f"({', '.join(f'{v.name}={v.weight:g}' for v in variants)})")
        return variants

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        names = [v.name for v in self.variants]
        if self.control is not None and self.control not in names:
            raise ValueError(f"control {self.control!r} is not a variant (variants: {', '.join(names)})")
        if self.start is not None and self.stop is not None and self.stop <= self.start:
            raise ValueError(f"stop ({self.stop.isoformat()}) must be after start ({self.start.isoformat()})")
        return self

    # ------------------------------------------------------------------ helpers
    @property
    def control_variant(self) -> str:
        """Name of the control arm: ``control`` if set, else the first variant."""
        return self.control or self.variants[0].name

    @property
    def variant_names(self) -> list[str]:
        return [v.name for v in self.variants]

    @property
    def weights(self) -> dict[str, float]:
        return {v.name: v.weight for v in self.variants}

    @property
    def value_event_names(self) -> list[str]:
        """Events whose ``value`` counts towards value per user (default: the conversion events)."""
        return self.value_events if self.value_events is not None else self.conversion_events

    def variant(self, name: str) -> Variant:
        """The variant called ``name``; KeyError naming the allowed ones."""
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"unknown variant {name!r} in experiment {self.name!r} "
                       f"(variants: {', '.join(self.variant_names)})")

    def is_active(self, at: _dt.datetime | None = None) -> bool:
        """True if ``at`` (default now, UTC; naive = UTC) is in ``[start, stop)``."""
        at = _utc(at) if at is not None else _dt.datetime.now(_dt.timezone.utc)
        return (self.start is None or at >= self.start) and (self.stop is None or at < self.stop)


# --------------------------------------------------------------------------- loading


def _location(loc: Sequence[Any]) -> str:
    """``variants.1.weight: `` for a key's error; empty for a whole-file rule."""
    return ".".join(str(p) for p in loc) + ": " if loc else ""


def parse_experiment(doc: Any, source: str = "experiment") -> Experiment:
    """Validate a parsed YAML/JSON document; DataError ``"<source>: <key>: <problem>"`` (one line)."""
    if not isinstance(doc, dict):
        kind = "an empty file" if doc is None else f"a {type(doc).__name__}"
        raise DataError(f"{source}: expected a mapping of experiment keys (name, salt, variants ...), got {kind}")
    try:
        return Experiment.model_validate(doc)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        msg = str(first["msg"]).removeprefix("Value error, ")
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        where = _location(first["loc"])
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        raise DataError(f"{source}: {where}{msg}{more}") from None


def load_experiment(path: str | Path) -> Experiment:
    """Read an experiment YAML file (``yaml.safe_load``) and validate it.

    Raises:
        DataError: missing or unreadable file, invalid YAML (names line and
            column), or a key that fails validation (names the key path, e.g.
            ``variants.1.weight``); always one line starting with the file name.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: experiment file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read experiment file ({exc})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DataError(f"{path}: not valid YAML ({where}{problem})") from None
    return parse_experiment(doc, str(path))


def resolve_artifact(artifact: str, artifacts_root: str | Path | None = None,
                     base_dir: str | Path | None = None) -> Path:
    """The directory a variant's ``artifact`` names.

    Tried in order: ``artifacts_root / artifact`` (a version name such as ``v1``
    or a published ``20261123T130512Z-3f2a``), then ``artifact`` as a path
    (relative paths against ``base_dir``, e.g. the experiment file's folder).

    Raises:
        DataError: none of them is a directory (names what was tried).
    """
    tried: list[Path] = []
    if artifacts_root is not None:
        tried.append(Path(artifacts_root) / artifact)
    as_path = Path(artifact).expanduser()
    if not as_path.is_absolute() and base_dir is not None:
        as_path = Path(base_dir) / as_path
    tried.append(as_path)
    for candidate in tried:
        if candidate.is_dir():
            return candidate
    raise DataError(f"artifact {artifact!r}: not found (tried {', '.join(str(p) for p in tried)})")


# --------------------------------------------------------------------------- assignment

_HASH_SEP = "\x1f"  # unit separator: cannot appear in a name, so (name, salt, unit) -> text is injective
_FLOAT_BITS = 53


def hash_buckets(unit_id: str, experiment: str, salt: str) -> tuple[float, float]:
    """Two independent uniform numbers in ``[0, 1)`` for a unit: (traffic bucket, variant bucket).

    Both come from ``sha256(experiment + US + salt + US + unit_id)`` (UTF-8): the
    first 8 bytes give the traffic bucket, the next 8 the variant bucket, each
    as its top 53 bits over 2**53. Stable across processes, machines, Python
    versions and ``PYTHONHASHSEED``.
    """
    digest = hashlib.sha256(_HASH_SEP.join((experiment, salt, str(unit_id))).encode("utf-8")).digest()
    scale = float(1 << _FLOAT_BITS)
    traffic = (int.from_bytes(digest[0:8], "big") >> (64 - _FLOAT_BITS)) / scale
    variant = (int.from_bytes(digest[8:16], "big") >> (64 - _FLOAT_BITS)) / scale
    return traffic, variant


def _pick(bucket: float, variants: Sequence[Variant]) -> str:
    cumulative = 0.0
    for v in variants:
        cumulative += v.weight
        if bucket < cumulative:
            return v.name
    return next(v.name for v in reversed(variants) if v.weight > 0)  # float rounding at the very top


def assign_variant(unit_id: str, experiment: Experiment) -> str | None:
    """The variant of ``unit_id`` in ``experiment``, or None if the unit is outside its traffic share.

    A pure function of (unit id, experiment name, salt, traffic, weights): the
    unit is in when its traffic bucket is below ``traffic``; its arm comes from
    the variant bucket against the cumulative weights, in file order. The two
    buckets are independent, so raising ``traffic`` only adds units and never
    moves an assigned one to another arm (changing weights or the salt does).
    The time window (``start``/``stop``) is not checked here: see
    :meth:`Experiment.is_active`.
    """
    traffic_bucket, variant_bucket = hash_buckets(unit_id, experiment.name, experiment.salt)
    if traffic_bucket >= experiment.traffic:
        return None
    return _pick(variant_bucket, experiment.variants)


def assign_many(unit_ids: Iterable[str], experiment: Experiment) -> list[str | None]:
    """:func:`assign_variant` for each id, in order (about 2 µs per id)."""
    return [assign_variant(u, experiment) for u in unit_ids]


# --------------------------------------------------------------------------- exposure log


class ExposureLog:
    """Append-only JSON-lines exposure log: at most one line per (experiment, unit).

    Each line is ``{"user_id", "experiment", "variant", "timestamp"}`` with
    ``timestamp`` in epoch seconds (float, millisecond precision); the file
    reads with ``training.data.load_events`` / ``tlrec ab analyze --exposures``.

    Durability and concurrency: every append is written whole with ``O_APPEND``
    and fsynced before :meth:`log` returns, under an exclusive ``flock`` on the
    file, so several threads and processes (API workers) may share one log.
    Before each append the writer reads the lines others appended since its
    last look, so the one-exposure-per-unit rule holds across processes.

    Damage costs only the lines it touches: a line that does not parse is
    searched for whole records (each starts with ``{"user_id"``), so a lost or
    flipped newline, a cut-out or a duplicated range never drops or doubles
    another exposure (the first line of a unit counts; duplicates are skipped);
    what stays unreadable is logged at ERROR with its offset and left in place.
    Only the file's end is ever cut: a last line without its newline that holds
    a whole record is completed with a newline; a partial one (a writer died
    mid-append, never acknowledged) is cut and kept in ``<file>.dropped-<offset>``.
    A byte flip that still parses (say inside a user id) cannot be told from
    data: lines carry no checksum. Memory: the set of (experiment, unit) keys
    in the file. POSIX only (``fcntl``). :meth:`check` reports damage read-only.
    """

    _ANCHOR = b'{"user_id"'
    _FIELDS = ("user_id", "experiment", "variant", "timestamp")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        if created:
            fsync_dir(self.path.parent)
        self._lock = threading.Lock()
        self._offset = 0
        self._seen: set[tuple[str, str]] = set()
        with self._locked():
            pass  # reads what is there (and cuts a torn tail)

    # ------------------------------------------------------------------ public
    def log(self, user_id: str, experiment: str, variant: str, timestamp: float | None = None) -> bool:
        """Record an exposure; False (and nothing written) if this unit already has one in ``experiment``."""
        return self.log_many([(user_id, experiment, variant, timestamp)]) == 1

    def log_many(self, exposures: Iterable[tuple[str, str, str, float | None]]) -> int:
        """Record several ``(user_id, experiment, variant, timestamp)`` with one fsync; returns how many were new."""
        return sum(self.log_batch(exposures))

    def log_batch(self, exposures: Iterable[tuple[str, str, str, float | None]]) -> list[bool]:
        """:meth:`log_many`, with one flag per input: True if this call wrote its line (one fsync in all).

        False for a unit already in the log (this or another writer) or repeated earlier in
        ``exposures``. Raises ``OSError`` if the write or fsync fails (nothing counts as logged).
        """
        now = time.time()
        with self._locked():
            lines: list[bytes] = []
            new: set[tuple[str, str]] = set()
            flags: list[bool] = []
            for user_id, experiment, variant, timestamp in exposures:
                key = (str(experiment), str(user_id))
                if key in self._seen or key in new:
                    flags.append(False)
                    continue
                flags.append(True)
                new.add(key)
                record = {"user_id": key[1], "experiment": key[0], "variant": str(variant),
                          "timestamp": round(float(now if timestamp is None else timestamp), 3)}
                lines.append((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            if lines:
                data = b"".join(lines)
                written = os.write(self._require_fd(), data)
                while written < len(data):  # os.write may write less on some filesystems
                    written += os.write(self._require_fd(), data[written:])
                os.fsync(self._require_fd())
                self._offset += len(data)
                self._seen |= new  # only once durable: a failed write leaves the units loggable
            return flags

    def known(self, user_id: str, experiment: str) -> bool:
        """True if this writer has seen an exposure of the unit: no lock, no file access (~100 ns).

        Covers this process's durable appends and the other writers' lines read so far
        (:meth:`has` also reads their latest ones). A cheap pre-check for an event loop:
        False may still mean "logged by another process"; :meth:`log_batch` decides.
        """
        return (experiment, user_id) in self._seen

    def has(self, user_id: str, experiment: str) -> bool:
        """True if the log (including other writers' appends) holds an exposure of this unit."""
        with self._locked():
            return (str(experiment), str(user_id)) in self._seen

    def __len__(self) -> int:
        with self._locked():
            return len(self._seen)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ExposureLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _require_fd(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self.path}: exposure log is closed")
        return self._fd

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """This process's thread lock, then the file's exclusive flock; catches up with other writers."""
        with self._lock:
            fd = self._require_fd()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                self._catch_up()
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _catch_up(self) -> None:
        """Read lines appended since the last look (holding the flock); repair or cut a torn last line."""
        fd = self._require_fd()
        size = os.fstat(fd).st_size
        if size < self._offset:
            raise ValueError(f"{self.path}: exposure log shrank ({size} < {self._offset} bytes); "
                             "it must only be appended to")
        if size == self._offset:
            return
        data = os.pread(fd, size - self._offset, self._offset)
        keys, bad, end, complete = self._parse(data)
        for offset, length in bad:
            logger.error("%s: %d unreadable bytes at byte %d skipped (every whole record around them kept)",
                         self.path, length, self._offset + offset)
        if end < len(data):  # a last line without its newline
            if complete:
                logger.warning("%s: the last line had no newline but holds a whole record: completed",
                               self.path)
                os.write(fd, b"\n")
                os.fsync(fd)
                size += 1
                end = len(data) + 1
            else:
                cut = self._offset + end
                keep = self.path.with_name(f"{self.path.name}.dropped-{cut}")
                with open(keep, "wb") as fh:
                    fh.write(data[end:])
                    fh.flush()
                    os.fsync(fh.fileno())
                logger.warning("%s: cutting a torn last line of %d bytes at byte %d (a writer died mid-append; "
                               "kept in %s)", self.path, len(data) - end, cut, keep.name)
                os.ftruncate(fd, cut)
                if end > 0 and data[end - 1:end] != b"\n":  # whole records before the torn part: end their line
                    os.write(fd, b"\n")
                    end += 1
                os.fsync(fd)
                fsync_dir(self.path.parent)
        self._seen.update(keys)
        self._offset += end

    @classmethod
    def _salvage(cls, line: bytes) -> list[tuple[tuple[str, str], int, int]]:
        """Whole records inside a damaged line: ``((experiment, user), start, end)`` byte offsets in ``line``."""
        starts = []
        at = line.find(cls._ANCHOR)
        while at != -1:
            starts.append(at)
            at = line.find(cls._ANCHOR, at + 1)
        decoder = json.JSONDecoder()
        found = []
        for i, start in enumerate(starts):
            chunk = line[start:starts[i + 1] if i + 1 < len(starts) else len(line)]
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError as exc:
                text = chunk[:exc.start].decode("utf-8")
            try:
                rec, used = decoder.raw_decode(text)
            except ValueError:
                continue
            if (isinstance(rec, dict) and all(f in rec for f in cls._FIELDS)
                    and all(isinstance(rec[f], str) for f in cls._FIELDS[:3])
                    and isinstance(rec["timestamp"], (int, float))):
                found.append(((rec["experiment"], rec["user_id"]), start, start + len(text[:used].encode())))
        return found

    @classmethod
    def _parse(cls, data: bytes) -> tuple[list[tuple[str, str]], list[tuple[int, int]], int, bool]:
        """Parse appended bytes: ``(keys in order, unreadable (offset, length) ranges, bytes consumed,
        whether the unconsumed newline-less tail is one or more whole records)``.

        Consumed: up to the last newline. The tail after it is consumed by the caller, which
        completes it (``complete``) or cuts it.
        """
        end = data.rfind(b"\n") + 1
        keys: list[tuple[str, str]] = []
        bad: list[tuple[int, int]] = []
        pos = 0
        for line in data[:end].split(b"\n")[:-1]:
            here, pos = pos, pos + len(line) + 1
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                keys.append((str(rec["experiment"]), str(rec["user_id"])))
                continue
            except (ValueError, KeyError, TypeError):
                pass
            found = cls._salvage(line)
            covered = 0
            for key, start, stop in found:
                keys.append(key)
                if start > covered and line[covered:start].strip():
                    bad.append((here + covered, start - covered))
                covered = stop
            if line[covered:].strip():
                bad.append((here + covered, len(line) - covered))
        tail = data[end:]
        complete = False
        if tail.strip():
            found = cls._salvage(tail)
            if found and tail[:found[0][1]].strip():
                bad.append((end, found[0][1]))
            if found and not tail[found[-1][2]:].strip():
                complete = True
                keys.extend(key for key, _, _ in found)
            elif found:  # whole records, then a torn one: keep the records, cut after the last
                keys.extend(key for key, _, _ in found)
                end += found[-1][2]
        return keys, bad, end, complete

    @classmethod
    def check(cls, path: str | Path) -> dict[str, Any]:
        """Read-only health of an exposure log: lines, exposures, duplicates, unreadable ranges, torn tail.

        Returns ``{"path", "bytes", "exposures", "duplicates", "unreadable": [{"offset", "length"}],
        "torn_tail_bytes", "healthy"}``; ``healthy`` is False when bytes are unreadable or an
        exposure is repeated (a torn tail alone is a crash's normal leftover). Changes nothing.
        """
        data = Path(path).read_bytes() if Path(path).exists() else b""
        keys, bad, end, complete = cls._parse(data)
        torn = 0 if complete else len(data) - end
        dupes = len(keys) - len(set(keys))
        return {"path": str(path), "bytes": len(data), "exposures": len(set(keys)), "duplicates": dupes,
                "unreadable": [{"offset": o, "length": n} for o, n in bad], "torn_tail_bytes": torn,
                "healthy": not bad and not dupes}
