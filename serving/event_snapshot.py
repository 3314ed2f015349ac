"""The event log's bounded state: fresh events per user, the idempotency window, the snapshot, the archive.

Start-up reads the snapshot and the log segments written after it, never the whole
history; compaction (``serving.event_log.EventLog.compact``) moves sealed segments into
the Parquet archive and folds them into a new snapshot.

* :class:`FreshEvents`: recent events per user (item, time, event type, value; at most
  ``per_user`` each, at most ``max_users`` users, least recently written evicted first).
* :class:`KeyWindow`: the idempotency keys remembered (default the last 100,000 keyed
  batches, none older than 24 h by the batch's ``received_at``). A key that left the
  window is forgotten: a retry with it is stored as a new batch.
* Snapshot ``<dir>/events.snapshot``: UTF-8 JSON lines, published atomically (temporary
  file, fsync, rename, fsync of the folder)::

      {"format": "tlrec-events-snapshot", "version": 1, "next_seq": int, "covered_seq": int,
       "created_at": float, "keys": K, "users": U, "key_window": {...}, "fresh": {...},
       "archive": {"files": int, "records": int, "events": int}}
      ["k", key, seq, events, digest_hex, received_at]        x K (oldest first)
      ["u", user_id, [item_id, ...], [[timestamp, event, value], ...]]   x U (least recently written first)
      {"sha256": hex of every byte above, "lines": K + U + 1}

  Every record with ``seq < covered_seq`` is in the archive files whose seqs are below it
  (and folded into this state); records at or above it are in the log segments. Its size
  does not grow with history: at most the two windows. A snapshot whose checksum or counts
  do not match is refused whole (``SnapshotError``); no pickle anywhere.
* Archive ``<dir>/archive/events-<first seq>-<last seq>.parquet`` (12-digit seqs), one file
  per compacted segment, one row per event: the interactions contract ``user_id`` (str),
  ``item_id`` (str), ``timestamp`` (int64 s), ``event`` (str), ``value`` (float64, null)
  plus the record's ``seq`` (int64), ``key`` (str, null), ``digest`` (str) and
  ``received_at`` (float64 s). Training reads them as interactions (extra columns are kept
  as read). Only files below the snapshot's ``covered_seq`` are part of the log: a file left
  by a compaction that crashed before its snapshot (first seq at or above it) is ignored,
  and removed by the next compaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlrec.files import atomic_path

logger = logging.getLogger(__name__)

SNAPSHOT_NAME = "events.snapshot"
SNAPSHOT_FORMAT = "tlrec-events-snapshot"
SNAPSHOT_VERSION = 1
ARCHIVE_DIR = "archive"
ARCHIVE_COLUMNS = ("user_id", "item_id", "timestamp", "event", "value", "seq", "key", "digest", "received_at")
DEFAULT_KEY_WINDOW = 100_000
DEFAULT_KEY_MAX_AGE = 86_400.0
ARCHIVE_ROW_GROUP = 100_000


class SnapshotError(ValueError):
    """The snapshot file is unreadable (bad checksum, truncated, unknown format)."""


#: One fresh event: (item_id, timestamp, event, value); the last three None when not known (a
#: snapshot written before they were kept).
FreshEvent = tuple[str, "int | None", "str | None", "float | None"]


class FreshEvents:
    """Recent events per user, newest last: bounded per user and in users (least recently written out first).

    Thread-safe. Items are kept as sent (external ids); unknown ones are ignored when used.
    Memory: at most ``per_user * max_users`` events.
    """

    def __init__(self, per_user: int = 200, max_users: int = 100_000) -> None:
        self.per_user = per_user
        self.max_users = max_users
        self._users: OrderedDict[str, deque[FreshEvent]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, events: Sequence[dict[str, Any]]) -> None:
        users = self._users
        with self._lock:
            last: str | None = None
            kept: deque[FreshEvent] | None = None
            for ev in events:
                user = ev["user_id"]
                if type(user) is not str:
                    user = str(user)
                if user != last or kept is None:  # a batch is mostly one user's: one lookup for a run
                    kept = users.get(user)
                    if kept is None:
                        kept = users[user] = deque(maxlen=self.per_user)
                    else:
                        users.move_to_end(user)
                    last = user
                item = ev["item_id"]
                kept.append((item if type(item) is str else str(item), ev.get("timestamp"), ev.get("event"),
                             ev.get("value")))
            while len(users) > self.max_users:
                users.popitem(last=False)

    def get(self, user_id: str) -> list[str]:
        """The user's fresh item ids, oldest first (empty when none)."""
        with self._lock:
            kept = self._users.get(user_id)
            return [e[0] for e in kept] if kept else []

    def events(self, user_id: str) -> list[FreshEvent]:
        """The user's fresh events ``(item_id, timestamp, event, value)``, oldest first (empty when none)."""
        with self._lock:
            kept = self._users.get(user_id)
            return list(kept) if kept else []

    def dump(self) -> Iterator[tuple[str, list[FreshEvent]]]:
        """``(user_id, events oldest first)`` per user, least recently written first (a copy, taken at once)."""
        with self._lock:
            rows = [(user, list(kept)) for user, kept in self._users.items()]
        return iter(rows)

    def restore(self, users: Iterable[tuple[str, Sequence[FreshEvent]]]) -> None:
        """Replace the state with ``users`` (as :meth:`dump` yields them), within this store's bounds."""
        with self._lock:
            self._users.clear()
            for user, kept in users:
                self._users[str(user)] = deque(kept, maxlen=self.per_user)
                self._users.move_to_end(str(user))
                if len(self._users) > self.max_users:
                    self._users.popitem(last=False)

    def __len__(self) -> int:
        return len(self._users)


class KeyWindow:
    """Idempotency keys of the latest keyed batches: ``key -> (seq, events, digest, received_at)``.

    Bounded: at most ``max_keys`` keys and none received more than ``max_age`` seconds before
    the newest check (``None``: no age limit). Oldest keys leave first. Not thread-safe (the
    event log holds its lock). Memory: about 250 bytes a key.
    """

    def __init__(self, max_keys: int = DEFAULT_KEY_WINDOW, max_age: float | None = DEFAULT_KEY_MAX_AGE) -> None:
        if max_keys < 1:
            raise ValueError(f"key window: max_keys must be >= 1, got {max_keys}")
        self.max_keys = max_keys
        self.max_age = max_age
        self._keys: OrderedDict[str, tuple[int, int, bytes, float]] = OrderedDict()

    def get(self, key: str, now: float | None = None) -> tuple[int, int, str] | None:
        """``(seq, events, digest hex)`` of a remembered key, else None."""
        self.evict(now)
        hit = self._keys.get(key)
        return (hit[0], hit[1], hit[2].hex()) if hit is not None else None

    def add(self, key: str, seq: int, n: int, digest: str, received_at: float, now: float | None = None) -> None:
        try:
            raw = bytes.fromhex(digest)
        except ValueError:
            raw = digest.encode()
        self._keys[key] = (int(seq), int(n), raw, float(received_at))
        self._keys.move_to_end(key)
        self.evict(now)

    def evict(self, now: float | None = None) -> None:
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        if self.max_age is not None:
            cutoff = (time.time() if now is None else now) - self.max_age
            while self._keys:
                first = next(iter(self._keys.values()))
                if first[3] >= cutoff:
                    break
                self._keys.popitem(last=False)

    def rows(self) -> Iterator[list[Any]]:
        for key, (seq, n, digest, at) in self._keys.items():
            yield [key, seq, n, digest.hex() if len(digest) == 32 else digest.decode(errors="replace"), at]

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)


@dataclass
class ArchiveFile:
    """One archived segment: its file name (in ``archive/``), seq range, records and events."""

    file: str
    first_seq: int
    last_seq: int
    records: int
    events: int

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "first_seq": self.first_seq, "last_seq": self.last_seq,
                "records": self.records, "events": self.events}


@dataclass
class SnapshotMeta:
    """The snapshot's first line: counters (the state itself is streamed)."""

    next_seq: int = 0
    covered_seq: int = 0
    created_at: float = 0.0
    keys: int = 0
    users: int = 0
    archive_files: int = 0
    archived_records: int = 0
    archived_events: int = 0


def snapshot_path(directory: Path) -> Path:
    return Path(directory) / SNAPSHOT_NAME


def write_snapshot(directory: Path, meta: SnapshotMeta, keys: KeyWindow, fresh: FreshEvents) -> Path:
    """Publish the snapshot atomically (see the module docstring for the format); returns its path."""
    path = snapshot_path(directory)
    key_rows = list(keys.rows())
    user_rows = list(fresh.dump())
    head = {
        "format": SNAPSHOT_FORMAT, "version": SNAPSHOT_VERSION, "next_seq": meta.next_seq,
        "covered_seq": meta.covered_seq, "created_at": round(meta.created_at, 3), "keys": len(key_rows),
        "users": len(user_rows), "key_window": {"max_keys": keys.max_keys, "max_age_s": keys.max_age},
        "fresh": {"per_user": fresh.per_user, "max_users": fresh.max_users},
        "archive": {"files": meta.archive_files, "records": meta.archived_records, "events": meta.archived_events},
    }
    digest = hashlib.sha256()
    lines = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        def put(obj: Any) -> None:
            nonlocal lines
            data = (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
            digest.update(data)
            fh.write(data)
            lines += 1

        put(head)
        for row in key_rows:
            put(["k", *row])
        for user, kept in user_rows:
            put(["u", user, [e[0] for e in kept], [list(e[1:]) for e in kept]])
        fh.write((json.dumps({"sha256": digest.hexdigest(), "lines": lines}) + "\n").encode())
        fh.flush()
    return path


def _verify_snapshot(path: Path) -> dict[str, Any]:
    """First pass: checksum and counts of every line; returns the head. Raises SnapshotError."""
    digest = hashlib.sha256()
    lines = 0
    head: dict[str, Any] | None = None
    trailer: Any = None
    with open(path, "rb") as fh:
        for line in fh:
            if trailer is not None:
                raise SnapshotError(f"{path}: bytes after the checksum line")
            if line.startswith(b'{"sha256"'):
                try:
                    trailer = json.loads(line)
                except ValueError:
                    raise SnapshotError(f"{path}: unreadable checksum line") from None
                continue
            digest.update(line)
            lines += 1
            if head is None:
                try:
                    head = json.loads(line)
                except ValueError:
                    raise SnapshotError(f"{path}: unreadable first line") from None
    if not isinstance(trailer, dict) or trailer.get("sha256") != digest.hexdigest():
        raise SnapshotError(f"{path}: checksum mismatch or missing (a torn or damaged snapshot)")
    if not isinstance(head, dict) or head.get("format") != SNAPSHOT_FORMAT or head.get("version") != SNAPSHOT_VERSION:
        raise SnapshotError(f"{path}: not a version {SNAPSHOT_VERSION} {SNAPSHOT_FORMAT} file")
    if trailer.get("lines") != lines or head.get("keys", -1) + head.get("users", -1) + 1 != lines:
        raise SnapshotError(f"{path}: line count does not match the header")
    return head


def read_snapshot_meta(directory: Path) -> SnapshotMeta | None:
    """The snapshot's counters and archive list after checking its checksum; None when there is none."""
    path = snapshot_path(directory)
    if not path.exists():
        return None
    head = _verify_snapshot(path)
    try:
        archive = head.get("archive") or {}
        return SnapshotMeta(int(head["next_seq"]), int(head["covered_seq"]), float(head.get("created_at", 0.0)),
                            int(head["keys"]), int(head["users"]), int(archive.get("files", 0)),
                            int(archive.get("records", 0)), int(archive.get("events", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"{path}: bad header field ({exc})") from None


def load_snapshot(directory: Path, keys: KeyWindow, fresh: FreshEvents | None) -> SnapshotMeta | None:
    """Check the snapshot, then stream its keys into ``keys`` and its users into ``fresh``.

    Returns None (nothing loaded) when there is no snapshot; raises ``SnapshotError`` (nothing
    loaded) when it is damaged. Memory: the state it holds, bounded by the windows.
    """
    meta = read_snapshot_meta(directory)
    if meta is None:
        return None
    path = snapshot_path(directory)

    def users() -> Iterator[tuple[str, list[FreshEvent]]]:
        with open(path, "rb") as fh:
            next(fh)
            for line in fh:
                if line.startswith(b'{"sha256"'):
                    return
                row = json.loads(line)
                if row[0] == "k":
                    keys.add(str(row[1]), int(row[2]), int(row[3]), str(row[4]), float(row[5]), now=None)
                elif row[0] == "u":  # a snapshot of an older version has no times, events or values
                    details = row[3] if len(row) > 3 else [[None, None, None]] * len(row[2])
                    yield str(row[1]), [(str(i), _int_or_none(t), None if e is None else str(e),
                                         None if v is None else float(v)) for i, (t, e, v) in zip(row[2], details)]

    try:
        if fresh is not None:
            fresh.restore(users())
        else:
            for _ in users():
                pass
    except (ValueError, TypeError, IndexError) as exc:
        raise SnapshotError(f"{path}: bad state line ({exc})") from None
    return meta


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


# ---------------------------------------------------------------------------- archive
_ARCHIVE_NAME = re.compile(r"^events-(\d{12})-(\d{12})\.parquet$")


def archive_name(first_seq: int, last_seq: int) -> str:
    return f"events-{first_seq:012d}-{last_seq:012d}.parquet"


def list_archives(directory: Path, below: int | None = None) -> list[ArchiveFile]:
    """Archive files by the seq range in their names, oldest first (``below``: only those whose first
    seq is below it, i.e. covered by a snapshot with that ``covered_seq``). Counts are not read (0)."""
    folder = Path(directory) / ARCHIVE_DIR
    out = []
    for path in folder.iterdir() if folder.is_dir() else []:
        m = _ARCHIVE_NAME.match(path.name)
        if m and (below is None or int(m.group(1)) < below):
            out.append(ArchiveFile(path.name, int(m.group(1)), int(m.group(2)), 0, 0))
    return sorted(out, key=lambda a: a.first_seq)


class ArchiveWriter:
    """Streams one segment's records into a Parquet file (``ARCHIVE_ROW_GROUP`` events per row group).

    Memory: one row group of events. ``finish`` publishes the file atomically and returns its
    :class:`ArchiveFile` (None when no record was added: no file is written).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory) / ARCHIVE_DIR
        self._columns: dict[str, list[Any]] = {c: [] for c in ARCHIVE_COLUMNS}
        self._writer: Any = None
        self._tmp: Path | None = None
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.records = 0
        self.events = 0

    def add(self, payload: dict[str, Any]) -> None:
        seq = int(payload["seq"])
        self.first_seq = seq if self.first_seq is None else min(self.first_seq, seq)
        self.last_seq = seq if self.last_seq is None else max(self.last_seq, seq)
        self.records += 1
        cols = self._columns
        key, digest, at = payload.get("key"), str(payload.get("digest", "")), float(payload.get("received_at", 0.0))
        for ev in payload["events"]:
            cols["user_id"].append(str(ev.get("user_id")))
            cols["item_id"].append(str(ev.get("item_id")))
            ts = ev.get("timestamp")
            cols["timestamp"].append(int(ts) if isinstance(ts, (int, float)) else None)
            cols["event"].append(None if ev.get("event") is None else str(ev.get("event")))
            value = ev.get("value")
            cols["value"].append(float(value) if isinstance(value, (int, float)) else None)
            cols["seq"].append(seq)
            cols["key"].append(key if isinstance(key, str) else None)
            cols["digest"].append(digest)
            cols["received_at"].append(at)
            self.events += 1
        if len(cols["seq"]) >= ARCHIVE_ROW_GROUP:
            self._flush()

    def _schema(self) -> Any:
        import pyarrow as pa

        return pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("timestamp", pa.int64()),
                          ("event", pa.string()), ("value", pa.float64()), ("seq", pa.int64()),
                          ("key", pa.string()), ("digest", pa.string()), ("received_at", pa.float64())])

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._columns["seq"]:
            return
        if self._writer is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._tmp = self.directory / f".pending-{time.time_ns()}.parquet.tmp"
            self._writer = pq.ParquetWriter(self._tmp, self._schema(), compression="zstd")
        self._writer.write_table(pa.table(self._columns, schema=self._schema()))
        self._columns = {c: [] for c in ARCHIVE_COLUMNS}

    def finish(self) -> ArchiveFile | None:
        if self.records == 0 or self.first_seq is None or self.last_seq is None:
            self.abort()
            return None
        self._flush()
        self._writer.close()
        self._writer = None
        name = archive_name(self.first_seq, self.last_seq)
        with atomic_path(self.directory / name) as tmp:
            assert self._tmp is not None
            self._tmp.replace(tmp)
        self._tmp = None
        return ArchiveFile(name, self.first_seq, self.last_seq, self.records, self.events)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None


def iter_archive(path: Path, min_seq: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(seq, event)`` for each row of one archive file with ``seq >= min_seq``, in file order.

    ``event`` holds the contract columns plus ``key``, ``digest`` and ``received_at``. Reads one
    row group at a time.
    """
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as pf:
        for batch in pf.iter_batches(batch_size=65_536):
            for row in batch.to_pylist():
                seq = int(row.pop("seq"))
                if seq >= min_seq:
                    yield seq, row
