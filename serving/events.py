"""Append-only event log (durable before acknowledging) and the per-user fresh events it feeds.

File format (``<events_dir>/events.log``), one record per acknowledged batch::

    [4-byte big-endian payload length][4-byte big-endian zlib.crc32(payload)][payload]

``payload`` is UTF-8 JSON ``{"seq": int, "key": str | null, "digest": str,
"received_at": float, "events": [{"user_id", "item_id", "timestamp", "event", "value"}]}``
(the interactions contract; ``timestamp`` in int seconds). ``append`` writes one record,
``fsync``s it and only then returns: an acknowledged batch survives ``kill -9`` and power
loss. On open the log is replayed; a torn tail (a partial or corrupt last record, left by
a crash mid-write, never acknowledged) is cut off, its bytes kept beside the log in
``events.log.dropped-<offset>`` for inspection. The idempotency keys of all records are
held in memory, so a retried batch is acknowledged again without a second record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LOG_NAME = "events.log"
HEADER = struct.Struct(">II")
MAX_RECORD_BYTES = 64 << 20


class EventLogError(RuntimeError):
    """The log cannot be written (disk full, I/O error); the batch was not acknowledged."""


class IdempotencyConflict(ValueError):
    """An idempotency key sent again with a different batch."""


@dataclass(frozen=True)
class Ack:
    """What ``EventLog.append`` acknowledges: the record's sequence number, events in it, and
    whether this call was a retry of an already stored batch (nothing new written)."""

    seq: int
    accepted: int
    duplicate: bool


def encode_record(payload: dict[str, Any]) -> bytes:
    """Frame one JSON payload: length + CRC32 header, then the bytes."""
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return HEADER.pack(len(data), zlib.crc32(data)) + data


def scan(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Read every whole, intact record of ``path``; returns ``(payloads, end of the last good record)``.

    Reading stops at the first partial, oversized, CRC-failing or non-JSON record.
    """
    records: list[dict[str, Any]] = []
    if not path.exists():
        return records, 0
    with open(path, "rb") as fh:
        data = fh.read()
    pos = 0
    while pos + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, pos)
        start, end = pos + HEADER.size, pos + HEADER.size + length
        if length > MAX_RECORD_BYTES or end > len(data):
            break
        body = data[start:end]
        if zlib.crc32(body) != crc:
            break
        try:
            payload = json.loads(body)
        except ValueError:
            break
        if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
            break
        records.append(payload)
        pos = end
    return records, pos


def iter_events(path: Path) -> Iterator[dict[str, Any]]:
    """Every event of every intact record, in log order (for batch jobs and tests)."""
    for record in scan(path)[0]:
        yield from record["events"]


def batch_digest(events: Sequence[dict[str, Any]]) -> str:
    """sha256 of a batch's canonical JSON: tells a true retry from a reused key."""
    return hashlib.sha256(json.dumps(list(events), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EventLog:
    """The durable, idempotent event log of one server process (one writer per file).

    ``append`` is thread-safe (one lock serialises writes) and blocking (it fsyncs): call it
    off the event loop. ``on_batch`` is called with each batch's events, in log order, at
    replay and after each new record is durable.
    """

    def __init__(self, directory: Path, on_batch: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOG_NAME
        self._on_batch = on_batch
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[int, int, str]] = {}  # key -> (seq, n events, digest)
        self._fd: int | None = None
        self._end = 0
        self._seq = 0
        self._broken: str | None = None

    # ------------------------------------------------------------------ open / replay
    def open(self) -> int:
        """Create or replay the log (cutting a torn tail); returns the number of records replayed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        records, good_end = scan(self.path)
        size = self.path.stat().st_size if self.path.exists() else 0
        if good_end < size:
            self._cut_tail(good_end, size)
        for rec in records:
            key = rec.get("key")
            if isinstance(key, str):
                self._keys[key] = (int(rec.get("seq", 0)), len(rec["events"]), str(rec.get("digest", "")))
            if self._on_batch is not None:
                self._on_batch(rec["events"])
        self._seq = max((int(r.get("seq", 0)) for r in records), default=-1) + 1
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if created:
            _fsync_dir(self.directory)
        self._end = good_end
        logger.info("event log %s: %d batches replayed (%d bytes)", self.path, len(records), good_end)
        return len(records)

    def _cut_tail(self, good_end: int, size: int) -> None:
        with open(self.path, "rb") as fh:
            fh.seek(good_end)
            tail = fh.read()
        keep = self.directory / f"{LOG_NAME}.dropped-{good_end}"
        with open(keep, "wb") as fh:
            fh.write(tail)
            fh.flush()
            os.fsync(fh.fileno())
        with open(self.path, "r+b") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(self.directory)
        logger.warning("event log %s: cut a torn tail of %d bytes at offset %d (kept in %s)",
                       self.path, size - good_end, good_end, keep.name)

    # ------------------------------------------------------------------ append
    def append(self, events: list[dict[str, Any]], key: str | None = None, digest: str | None = None) -> Ack:
        """Durably append one batch (fsync before returning); a known ``key`` returns the stored ack.

        ``digest`` identifies the batch as the client sent it (default: ``batch_digest(events)``;
        pass the digest of the request when the server fills in defaults such as "now").
        Raises ``IdempotencyConflict`` when ``key`` was used for a different batch, and
        ``EventLogError`` when the write fails (the log is then rolled back to its last
        record, so nothing half-written stays in front of later records).
        """
        digest = digest or batch_digest(events)
        with self._lock:
            if self._fd is None:
                raise EventLogError("event log is not open")
            if key is not None and key in self._keys:
                seq, n, stored = self._keys[key]
                if stored != digest:
                    raise IdempotencyConflict(f"idempotency key {key!r} was already used for a different batch")
                return Ack(seq, n, True)
            if self._broken:
                raise EventLogError(self._broken)
            seq = self._seq
            frame = encode_record(
                {"seq": seq, "key": key, "digest": digest, "received_at": round(time.time(), 3), "events": events}
            )
            try:
                written = os.write(self._fd, frame)
                if written != len(frame):
                    raise OSError(f"short write ({written} of {len(frame)} bytes)")
                os.fsync(self._fd)
            except OSError as exc:
                self._roll_back(exc)
                raise EventLogError(f"event log write failed: {exc}") from None
            self._end += len(frame)
            self._seq += 1
            if key is not None:
                self._keys[key] = (seq, len(events), digest)
            if self._on_batch is not None:
                self._on_batch(events)
            return Ack(seq, len(events), False)

    def _roll_back(self, exc: OSError) -> None:
        try:
            os.ftruncate(self._fd, self._end)  # type: ignore[arg-type]
            os.fsync(self._fd)  # type: ignore[arg-type]
        except OSError as again:
            self._broken = f"event log unusable after a failed write ({exc}; rollback failed: {again})"
            logger.error("%s", self._broken)

    @property
    def batches(self) -> int:
        """Records in the log."""
        return self._seq

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class FreshEvents:
    """Recent item ids per user, newest last: bounded per user and in users (least recently written out first).

    Thread-safe. Items are kept as sent (external ids); unknown ones are ignored when used.
    """

    def __init__(self, per_user: int = 200, max_users: int = 100_000) -> None:
        self.per_user = per_user
        self.max_users = max_users
        self._users: OrderedDict[str, deque[str]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, events: Sequence[dict[str, Any]]) -> None:
        with self._lock:
            for ev in events:
                user = str(ev["user_id"])
                items = self._users.get(user)
                if items is None:
                    items = self._users[user] = deque(maxlen=self.per_user)
                else:
                    self._users.move_to_end(user)
                items.append(str(ev["item_id"]))
            while len(self._users) > self.max_users:
                self._users.popitem(last=False)

    def get(self, user_id: str) -> list[str]:
        """The user's fresh item ids, oldest first (empty when none)."""
        with self._lock:
            items = self._users.get(user_id)
            return list(items) if items else []

    def __len__(self) -> int:
        return len(self._users)
