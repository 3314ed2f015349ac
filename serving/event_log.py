"""The durable, idempotent, segmented event log of one server, and the fresh events it feeds.

``EventLog.append`` writes one record per acknowledged batch, ``fsync``s it and only then
returns: an acknowledged batch survives ``kill -9`` and power loss. A record is
``MAGIC(4) | length(4) | seq(8) | crc32(payload)(4) | crc32(header)(4) | payload``
(``serving.event_frames``; ``payload``: UTF-8 JSON ``{"seq", "key", "digest", "received_at",
"events": [{"user_id", "item_id", "timestamp", "event", "value"}]}``, the interactions contract
with ``timestamp`` in int seconds); records of the older format (``length | crc32 | payload``)
are still read. The idempotency window (``serving.event_snapshot``) remembers the keys of the
last 100,000 keyed batches, at most 24 h old: a retry after that is stored again.
``tlrec events verify DIR`` reports a log's health without changing it; ``tlrec events compact
DIR`` compacts a log no server has open.

Files in the events folder:

* ``events.log``: the live segment, appended to (v2 frames, ``serving.event_frames``).
* ``events.<B>.log`` (``B``: 12 digits): a sealed segment, every record in it has ``seq < B``.
  The live segment is sealed (renamed) once it passes ``segment_bytes``.
* ``events.snapshot`` + ``archive/*.parquet``: compacted state (``serving.event_snapshot``).
* ``events.lock``: held (``flock``) by the one process that has the log open.
* ``<segment>.corrupt-<offset>``: a copy of a damaged region found inside a segment (the
  bytes stay in place and are skipped); ``events.log.dropped-<offset>``: a damaged or torn
  last region cut off the live segment. Neither is ever read back.

Recovery rules (``EventLog.open``): every intact record is replayed once (the first of each
seq), a damaged region costs only the records inside it (logged at ERROR, quarantined,
counted), and only the live segment's final damaged region is cut. The next seq is above
every seq seen, including those read from damaged records' intact headers.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlrec.errors import TlrecError
from tlrec.files import fsync_dir
from tlrec.serving.event_frames import Damage, Frame, encode_record, mapped, scan_bytes
from tlrec.serving.event_snapshot import (
    ARCHIVE_DIR,
    DEFAULT_KEY_MAX_AGE,
    DEFAULT_KEY_WINDOW,
    ArchiveFile,
    ArchiveWriter,
    FreshEvents,
    KeyWindow,
    SnapshotError,
    SnapshotMeta,
    iter_archive,
    list_archives,
    load_snapshot,
    read_snapshot_meta,
    write_snapshot,
)

logger = logging.getLogger(__name__)

LOG_NAME = "events.log"
LOCK_NAME = "events.lock"
DEFAULT_SEGMENT_BYTES = 32 << 20
_SEALED = re.compile(r"^events\.(\d{12})(?:-(\d+))?\.log$")


class EventLogError(TlrecError, RuntimeError):
    """The log cannot be opened or written (in use, disk full, I/O error); a batch was not acknowledged."""


class IdempotencyConflict(ValueError):
    """An idempotency key sent again with a different batch."""


@dataclass(frozen=True)
class Ack:
    """What ``EventLog.append`` acknowledges: the record's sequence number, events in it, and
    whether this call was a retry of an already stored batch (nothing new written)."""

    seq: int
    accepted: int
    duplicate: bool


def batch_digest(events: Sequence[dict[str, Any]]) -> str:
    """sha256 of a batch's canonical JSON: tells a true retry from a reused key."""
    return hashlib.sha256(json.dumps(list(events), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Region:
    """A damaged region of a segment: where, how long, what happened to it."""

    file: str
    offset: int
    length: int
    kind: str  # corrupt | torn
    records: int
    action: str  # quarantined (left in place, skipped) | cut (removed from the live segment's end)
    copy: str | None  # the file holding a copy of the bytes


@dataclass
class LogReport:
    """What a replay (``EventLog.open``) or a read-only check (``check_log``) found."""

    records: int = 0  # intact records replayed from segments (after the snapshot)
    events: int = 0
    segments: int = 0
    segment_bytes: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    next_seq: int = 0
    duplicates: int = 0  # intact records whose seq was already read (a duplicated byte range)
    covered: int = 0  # records skipped because the snapshot already holds them
    regions: list[Region] = field(default_factory=list)
    snapshot: str = "none"  # none | loaded | damaged (rebuilt from the archive)
    snapshot_covered_seq: int = 0
    snapshot_keys: int = 0
    snapshot_users: int = 0
    archives: int = 0
    archived_events: int = 0
    keys: int = 0
    seconds: float = 0.0

    @property
    def corrupt_records(self) -> int:
        return sum(r.records for r in self.regions if r.kind == "corrupt")

    @property
    def torn_tail_bytes(self) -> int:
        return sum(r.length for r in self.regions if r.kind == "torn")

    @property
    def healthy(self) -> bool:
        """No record lost or doubled and the snapshot intact (a torn tail is a crash's normal leftover)."""
        return self.corrupt_records == 0 and self.duplicates == 0 and self.snapshot != "damaged"

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy, "records": self.records, "events": self.events, "segments": self.segments,
            "segment_bytes": self.segment_bytes, "first_seq": self.first_seq, "last_seq": self.last_seq,
            "next_seq": self.next_seq, "duplicates": self.duplicates, "covered_skipped": self.covered,
            "corrupt_records": self.corrupt_records, "torn_tail_bytes": self.torn_tail_bytes,
            "regions": [r.__dict__ for r in self.regions], "snapshot": self.snapshot,
            "snapshot_covered_seq": self.snapshot_covered_seq, "snapshot_keys": self.snapshot_keys,
            "snapshot_users": self.snapshot_users, "archives": self.archives,
            "archived_events": self.archived_events, "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class CompactionReport:
    """What one compaction did."""

    segments: int
    records: int
    events: int
    archives: tuple[str, ...]
    covered_seq: int
    seconds: float


def sealed_segments(directory: Path) -> list[tuple[int, Path]]:
    """``(B, path)`` of every sealed segment, oldest first (``B``: every seq inside is below it)."""
    out = []
    for path in Path(directory).glob("events.*.log"):
        m = _SEALED.match(path.name)
        if m:
            out.append((int(m.group(1)), int(m.group(2) or 0), path))
    return [(b, p) for b, _, p in sorted(out)]


def _copy_out(data: Any, start: int, end: int, target: Path) -> None:
    """Write ``data[start:end]`` to ``target`` (fsynced) unless an identical copy is there already."""
    chunk = bytes(data[start:end])
    if target.exists() and target.stat().st_size == len(chunk):
        return
    with open(target, "wb") as fh:
        fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(target.parent)


@dataclass
class _Fold:
    """Replay state while reading segments: seqs seen, the largest seq (or hint) met."""

    seen: set[int] = field(default_factory=set)
    max_seq: int = -1


class EventLog:
    """The durable, idempotent event log of one server process (one writer per folder, ``flock``ed).

    ``append`` is thread-safe (one lock serialises writes) and blocking (it fsyncs): call it
    off the event loop. ``fresh`` is restored from the snapshot, then receives each batch's
    events in log order (replayed records, then each new record once durable); ``on_batch``
    (optional) is called with the events of the same records (not the snapshot's). Pass a
    store as ``fresh`` so that compaction keeps it; never also pass its ``add`` as ``on_batch``.
    ``on_corrupt(n)`` is called with the number of corrupt records found, at open and when a
    compaction meets damage not seen before.

    Bounds: the idempotency window (``key_window`` keys, ``key_max_age`` seconds), the
    ``fresh`` store's bounds, and the seqs of the segments since the last compaction. When
    the live segment passes ``segment_bytes`` it is sealed and, with ``auto_compact``, a
    background thread archives the sealed segments and writes a new snapshot.
    """

    def __init__(self, directory: Path, on_batch: Callable[[list[dict[str, Any]]], None] | None = None, *,
                 fresh: FreshEvents | None = None, on_corrupt: Callable[[int], None] | None = None,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES, key_window: int = DEFAULT_KEY_WINDOW,
                 key_max_age: float | None = DEFAULT_KEY_MAX_AGE, auto_compact: bool = True) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOG_NAME
        self.fresh = fresh
        self._on_batch = on_batch
        self._on_corrupt = on_corrupt
        self.segment_bytes = segment_bytes
        self.auto_compact = auto_compact
        self._keys = KeyWindow(key_window, key_max_age)
        self._lock = threading.Lock()
        self._compact_lock = threading.Lock()
        self._compactor: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._end = 0
        self._seq = 0
        self._broken: str | None = None
        self._closed = False
        self._known_damage: set[tuple[str, int]] = set()
        self.report = LogReport()

    # ------------------------------------------------------------------ open / replay
    def open(self) -> int:
        """Take the folder's lock, load the snapshot, replay the segments after it; returns records replayed.

        Raises ``EventLogError`` when another process has the log open. Damage is handled as
        the module docstring says and summarised in ``self.report``.
        """
        started = time.perf_counter()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            return self._open(started)
        except BaseException:
            self.close()  # release the lock: a later open (a retry, another process) may succeed
            raise

    def _open(self, started: float) -> int:
        report = self.report = LogReport()
        fold = _Fold()
        meta = self._load_snapshot(report)
        covered = meta.covered_seq if meta is not None else 0
        fold.max_seq = (meta.next_seq - 1) if meta is not None else -1
        for boundary, seg in sealed_segments(self.directory):
            if boundary <= covered:  # compaction crashed after its snapshot, before removing the segment
                logger.info("event log: %s is covered by the snapshot (seq < %d): removed", seg.name, covered)
                seg.unlink(missing_ok=True)
                fsync_dir(self.directory)
                continue
            self._replay(seg, covered, fold, report, live=False)
        self._replay(self.path, covered, fold, report, live=True)
        self._seq = fold.max_seq + 1
        report.next_seq = self._seq
        report.keys = len(self._keys)
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if created:
            fsync_dir(self.directory)
        self._end = os.fstat(self._fd).st_size
        report.seconds = time.perf_counter() - started
        if report.corrupt_records:
            logger.error("event log %s: %d corrupt record(s) in %d region(s) lost; every other record kept "
                         "(details above; `tlrec events verify %s`)", self.directory, report.corrupt_records,
                         sum(r.kind == "corrupt" for r in report.regions), self.directory)
            if self._on_corrupt is not None:
                self._on_corrupt(report.corrupt_records)
        if report.duplicates:
            logger.warning("event log %s: %d duplicated record(s) skipped (same seq read twice)",
                           self.directory, report.duplicates)
        logger.info("event log %s: snapshot %s (seq < %d), %d batches replayed from %d segment(s) (%d bytes) "
                    "in %.2fs; next seq %d", self.directory, report.snapshot, covered, report.records,
                    report.segments, report.segment_bytes, report.seconds, self._seq)
        return report.records

    def _take_lock(self) -> None:
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise EventLogError(f"event log {self.directory} is in use by another process "
                                f"({LOCK_NAME} is locked)") from None
        self._lock_fd = fd

    def _load_snapshot(self, report: LogReport) -> SnapshotMeta | None:
        meta, report.snapshot = _load_state(self.directory, self._keys, self.fresh)
        if meta is not None:
            report.snapshot_covered_seq = meta.covered_seq
            report.snapshot_keys = len(self._keys)
            report.snapshot_users = len(self.fresh) if self.fresh is not None else meta.users
            report.archives = meta.archive_files
            report.archived_events = meta.archived_events
        return meta

    def _replay(self, path: Path, covered: int, fold: _Fold, report: LogReport, live: bool) -> None:
        if not path.exists():
            return
        report.segments += 1
        cut_at: int | None = None
        with mapped(path) as data:
            report.segment_bytes += len(data)
            for item in scan_bytes(data):
                if isinstance(item, Damage):
                    at_end = item.end == len(data)
                    if live and at_end:
                        cut_at = item.offset
                        target = path.parent / f"{path.name}.dropped-{item.offset}"
                        _copy_out(data, item.offset, item.end, target)
                        region = Region(path.name, item.offset, item.length, item.kind, item.records, "cut",
                                        target.name)
                    else:
                        target = path.parent / f"{path.name}.corrupt-{item.offset}"
                        _copy_out(data, item.offset, item.end, target)
                        region = Region(path.name, item.offset, item.length, "corrupt", max(item.records, 1),
                                        "quarantined", target.name)
                    self._log_region(region)
                    self._known_damage.add((path.name, item.offset))
                    report.regions.append(region)
                    if item.seq_hint is not None and region.kind == "corrupt":  # a torn write was never acked
                        fold.max_seq = max(fold.max_seq, item.seq_hint)
                    continue
                if item.seq < covered or item.seq in fold.seen:
                    if item.seq < covered:
                        report.covered += 1
                    else:
                        report.duplicates += 1
                    continue
                self._apply(item, fold, report)
        if cut_at is not None:
            with open(path, "r+b") as fh:
                fh.truncate(cut_at)
                fh.flush()
                os.fsync(fh.fileno())
            fsync_dir(path.parent)

    def _apply(self, frame: Frame, fold: _Fold, report: LogReport) -> None:
        payload = frame.payload
        fold.seen.add(frame.seq)
        fold.max_seq = max(fold.max_seq, frame.seq)
        events = payload["events"]
        key = payload.get("key")
        if isinstance(key, str):
            self._keys.add(key, frame.seq, len(events), str(payload.get("digest", "")),
                           float(payload.get("received_at", 0.0) or 0.0))
        if self.fresh is not None:
            self.fresh.add(events)
        if self._on_batch is not None:
            self._on_batch(events)
        report.records += 1
        report.events += len(events)
        report.first_seq = frame.seq if report.first_seq is None else min(report.first_seq, frame.seq)
        report.last_seq = frame.seq if report.last_seq is None else max(report.last_seq, frame.seq)

    def _log_region(self, region: Region) -> None:
        where = f"{self.directory / region.file} at byte {region.offset}"
        if region.kind == "torn":
            logger.warning("event log %s: cut a torn tail of %d bytes (a write cut by a crash, never acknowledged; "
                           "kept in %s)", where, region.length, region.copy)
        elif region.action == "cut":
            logger.error("event log %s: the last %d bytes are a damaged record (%d record(s) lost, possibly "
                         "acknowledged); cut, kept in %s", where, region.length, region.records, region.copy)
        else:
            logger.error("event log %s: %d damaged bytes (%d record(s) lost) skipped, every later record kept; "
                         "copy in %s", where, region.length, region.records, region.copy)

    # ------------------------------------------------------------------ append
    def append(self, events: list[dict[str, Any]], key: str | None = None, digest: str | None = None) -> Ack:
        """Durably append one batch (fsync before returning); a remembered ``key`` returns the stored ack.

        ``digest`` identifies the batch as the client sent it (default: ``batch_digest(events)``;
        pass the digest of the request when the server fills in defaults such as "now").
        Raises ``IdempotencyConflict`` when ``key`` was used for a different batch, and
        ``EventLogError`` when the write fails (the log is then rolled back to its last
        record, so nothing half-written stays in front of later records). Keys are remembered
        within the idempotency window only (see ``KeyWindow``).
        """
        digest = digest or batch_digest(events)
        roll = False
        with self._lock:
            if self._fd is None:
                raise EventLogError("event log is not open")
            now = time.time()
            if key is not None:
                hit = self._keys.get(key, now)
                if hit is not None:
                    seq, n, stored = hit
                    if stored != digest:
                        raise IdempotencyConflict(f"idempotency key {key!r} was already used for a different batch")
                    return Ack(seq, n, True)
            if self._broken:
                raise EventLogError(self._broken)
            seq = self._seq
            received = round(now, 3)
            frame = encode_record({"seq": seq, "key": key, "digest": digest, "received_at": received,
                                   "events": events})
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
                self._keys.add(key, seq, len(events), digest, received, now)
            if self.fresh is not None:
                self.fresh.add(events)
            if self._on_batch is not None:
                self._on_batch(events)
            if self._end >= self.segment_bytes:
                roll = self._roll_locked() is not None
        if roll and self.auto_compact:
            self._start_compactor()
        return Ack(seq, len(events), False)

    def _roll_back(self, exc: OSError) -> None:
        try:
            os.ftruncate(self._fd, self._end)  # type: ignore[arg-type]
            os.fsync(self._fd)  # type: ignore[arg-type]
        except OSError as again:
            self._broken = f"event log unusable after a failed write ({exc}; rollback failed: {again})"
            logger.error("%s", self._broken)

    def _roll_locked(self) -> Path | None:
        """Seal the live segment (holding ``_lock``): rename it ``events.<next seq>.log``, start a new one."""
        if self._fd is None or self._broken or self._end == 0:
            return None
        target = self.directory / f"events.{self._seq:012d}.log"
        n = 0
        while target.exists():
            n += 1
            target = self.directory / f"events.{self._seq:012d}-{n}.log"
        os.close(self._fd)
        self._fd = None
        try:
            os.rename(self.path, target)
            fsync_dir(self.directory)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            fsync_dir(self.directory)
        except OSError as exc:
            self._broken = f"event log unusable: sealing the live segment failed ({exc})"
            logger.error("%s", self._broken)
            if self._fd is None and self.path.exists():
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            return None
        self._end = 0
        logger.info("event log: sealed %s (records below seq %d)", target.name, self._seq)
        return target

    @property
    def batches(self) -> int:
        """The sequence number the next record gets (records ever appended, lost ones included)."""
        return self._seq

    # ------------------------------------------------------------------ compaction
    def _start_compactor(self) -> None:
        if self._compactor is not None and self._compactor.is_alive():
            return  # the running one loops until no sealed segment is left
        self._compactor = threading.Thread(target=self._compact_background, name="event-log-compaction",
                                           daemon=True)
        self._compactor.start()

    def _compact_background(self) -> None:
        try:
            while not self._closed and self._compact_sealed() is not None:
                pass
        except Exception as exc:  # noqa: BLE001 - compaction retries at the next seal; appends go on
            logger.error("event log %s: compaction failed (%s); the segments stay in the replay path",
                         self.directory, exc, exc_info=exc)

    def compact(self) -> CompactionReport | None:
        """Seal the live segment, archive every sealed segment and write a new snapshot; blocking.

        Crash-safe at every step: the archive files, then the snapshot are published atomically,
        and only then are the segments removed (a restart skips a segment the snapshot covers,
        by seq). Returns None when there was nothing to compact.
        """
        if self._fd is None:
            raise EventLogError("event log is not open")
        with self._lock:
            self._roll_locked()
        result = None
        while (step := self._compact_sealed()) is not None:
            result = step if result is None else CompactionReport(
                result.segments + step.segments, result.records + step.records, result.events + step.events,
                result.archives + step.archives, step.covered_seq, result.seconds + step.seconds)
        return result

    def _compact_sealed(self) -> CompactionReport | None:
        """Fold the snapshot + every sealed segment it does not cover into a new snapshot."""
        with self._compact_lock:
            started = time.perf_counter()
            try:
                meta = read_snapshot_meta(self.directory) or SnapshotMeta()
            except SnapshotError:
                meta = SnapshotMeta(covered_seq=-1)  # rebuilt below
            sealed = [(b, p) for b, p in sealed_segments(self.directory) if b > meta.covered_seq]
            if not sealed or self._closed:
                return None
            keys = KeyWindow(self._keys.max_keys, self._keys.max_age)
            fresh = FreshEvents(self.fresh.per_user, self.fresh.max_users) if self.fresh is not None \
                else FreshEvents()
            meta = _load_state(self.directory, keys, fresh)[0] or SnapshotMeta()
            covered = meta.covered_seq
            sealed = [(b, p) for b, p in sealed if b > covered]
            _remove_orphan_archives(self.directory, covered)
            fold = _Fold(max_seq=meta.next_seq - 1)
            files, total_records, total_events = meta.archive_files, meta.archived_records, meta.archived_events
            records = events = 0
            new_files: list[str] = []
            for _, seg in sealed:
                writer = ArchiveWriter(self.directory)
                try:
                    with mapped(seg) as data:
                        for item in scan_bytes(data):
                            if isinstance(item, Damage):
                                self._quarantine_late(seg, data, item)
                                if item.seq_hint is not None:
                                    fold.max_seq = max(fold.max_seq, item.seq_hint)
                                continue
                            if item.seq < covered or item.seq in fold.seen:
                                continue
                            fold.seen.add(item.seq)
                            fold.max_seq = max(fold.max_seq, item.seq)
                            payload = item.payload
                            writer.add(payload)
                            key = payload.get("key")
                            if isinstance(key, str):
                                keys.add(key, item.seq, len(payload["events"]), str(payload.get("digest", "")),
                                         float(payload.get("received_at", 0.0) or 0.0))
                            fresh.add(payload["events"])
                    archive = _publish_archive(writer)
                except BaseException:
                    writer.abort()
                    raise
                if archive is not None:
                    files, total_records, total_events = (files + 1, total_records + archive.records,
                                                          total_events + archive.events)
                    new_files.append(archive.file)
                    records += archive.records
                    events += archive.events
            new_covered = max(b for b, _ in sealed)
            new_meta = SnapshotMeta(next_seq=max(meta.next_seq, fold.max_seq + 1), covered_seq=new_covered,
                                    created_at=time.time(), archive_files=files,
                                    archived_records=total_records, archived_events=total_events)
            write_snapshot(self.directory, new_meta, keys, fresh)
            _drop_segments([p for _, p in sealed])
            report = CompactionReport(len(sealed), records, events, tuple(new_files), new_covered,
                                      time.perf_counter() - started)
            logger.info("event log %s: compacted %d segment(s) (%d batches, %d events) into %s in %.2fs; "
                        "snapshot covers seq < %d", self.directory, report.segments, records, events,
                        ", ".join(new_files) or "no archive", report.seconds, new_covered)
            return report

    def _quarantine_late(self, seg: Path, data: Any, item: Damage) -> None:
        """A damaged region met by compaction: keep a copy before the segment goes; report it if new."""
        _copy_out(data, item.offset, item.end, seg.parent / f"{seg.name}.corrupt-{item.offset}")
        if (seg.name, item.offset) in self._known_damage:
            return
        self._known_damage.add((seg.name, item.offset))
        region = Region(seg.name, item.offset, item.length, "corrupt", max(item.records, 1), "quarantined",
                        f"{seg.name}.corrupt-{item.offset}")
        self._log_region(region)
        if self._on_corrupt is not None:
            self._on_corrupt(region.records)

    def close(self) -> None:
        """Stop: wait (up to 30 s) for a running compaction, close the live segment, release the lock.

        The log cannot be opened again by this object (make a new one)."""
        self._closed = True
        compactor = self._compactor
        if compactor is not None and compactor.is_alive() and compactor is not threading.current_thread():
            compactor.join(timeout=30)
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


# ---------------------------------------------------------------------------- compaction steps
# Module-level so that tests can inject a crash between the steps.
def _publish_archive(writer: ArchiveWriter) -> ArchiveFile | None:
    """Step 1: publish a segment's archive file (atomic)."""
    return writer.finish()


def _drop_segments(paths: list[Path]) -> None:
    """Step 3 (after the snapshot): remove the archived segments from the replay path."""
    for path in paths:
        path.unlink(missing_ok=True)
    if paths:
        fsync_dir(paths[0].parent)


def _remove_orphan_archives(directory: Path, covered: int) -> None:
    """Archive files at or above the snapshot's ``covered_seq`` (left by a compaction that crashed
    before its snapshot; their segments are still in the replay path) and temporary files."""
    folder = Path(directory) / ARCHIVE_DIR
    covered_names = {a.file for a in list_archives(directory, below=covered)}
    for path in folder.iterdir() if folder.is_dir() else []:
        if path.name not in covered_names and (path.suffix == ".parquet" or path.name.endswith(".tmp")):
            logger.info("event log: removing %s (not covered by the snapshot: left by an interrupted compaction)",
                        path)
            path.unlink(missing_ok=True)


def _load_state(directory: Path, keys: KeyWindow, fresh: FreshEvents | None) -> tuple[SnapshotMeta | None, str]:
    """Load the snapshot into ``keys`` and ``fresh``; when it is damaged, rebuild them from the archive.

    Returns ``(meta or None, "none" | "loaded" | "damaged")``.
    """
    try:
        meta = load_snapshot(directory, keys, fresh)
    except (SnapshotError, OSError) as exc:
        logger.error("event log %s: the snapshot is unusable (%s); rebuilding its state from the archive",
                     directory, exc)
        return _rebuild_from_archive(directory, keys, fresh), "damaged"
    return meta, "loaded" if meta is not None else "none"


def _archive_records(path: Path, min_seq: int = 0) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """``(seq, events)`` per record of one archive file (its rows grouped by seq), in file order."""
    current: int | None = None
    rows: list[dict[str, Any]] = []
    for seq, row in iter_archive(path, min_seq):
        if seq != current and rows:
            yield current, rows  # type: ignore[misc]
            rows = []
        current = seq
        rows.append(row)
    if rows:
        yield current, rows  # type: ignore[misc]


def _rebuild_from_archive(directory: Path, keys: KeyWindow, fresh: FreshEvents | None) -> SnapshotMeta | None:
    """State from every archive file (the snapshot is damaged): keys, fresh events, next and covered seq.

    Reads the whole archive, one row group at a time: slow, but only after damage.
    """
    files = list_archives(directory)
    if not files:
        return None
    max_seq = -1
    records = events = 0
    for archive in files:
        before = max_seq  # files never overlap; this guards against one that does
        for seq, rows in _archive_records(Path(directory) / ARCHIVE_DIR / archive.file):
            if seq <= before:
                continue
            records += 1
            events += len(rows)
            key = rows[0].get("key")
            if isinstance(key, str):
                keys.add(key, seq, len(rows), str(rows[0].get("digest") or ""), float(rows[0].get("received_at") or 0))
            if fresh is not None:
                fresh.add(rows)
            max_seq = max(max_seq, seq)
    logger.error("event log %s: state rebuilt from %d archive file(s) up to seq %d", directory, len(files), max_seq)
    return SnapshotMeta(next_seq=max_seq + 1, covered_seq=max_seq + 1, created_at=time.time(),
                        archive_files=len(files), archived_records=records, archived_events=events)


# ---------------------------------------------------------------------------- reading everything
def iter_all_events(directory: Path) -> Iterator[dict[str, Any]]:
    """Every event the log holds, each record once, oldest first: the archive files the snapshot lists,
    then the segments (records the snapshot covers skipped). Read-only; for training and checks.

    Each event has the contract keys ``user_id, item_id, timestamp, event, value``. With a damaged
    snapshot, every archive file in the folder is read (records below the largest archived seq
    are then taken from the archive only). Memory: one Parquet row group or one record at a
    time, plus the seqs of the segments.
    """
    directory = Path(directory)
    try:
        meta = read_snapshot_meta(directory)
    except SnapshotError as exc:
        logger.error("%s; reading every archive file instead", exc)
        archives = list_archives(directory)
        covered = max((a.last_seq for a in archives), default=-1) + 1
    else:
        covered = meta.covered_seq if meta is not None else 0
        archives = list_archives(directory, below=covered)
    contract = ("user_id", "item_id", "timestamp", "event", "value")
    for archive in archives:  # a snapshot's archive files never share a seq (each compaction skips covered seqs)
        for _, row in iter_archive(directory / ARCHIVE_DIR / archive.file):
            yield {c: row.get(c) for c in contract}
    seen: set[int] = set()
    segments = [p for b, p in sealed_segments(directory) if b > covered] + [directory / LOG_NAME]
    for seg in segments:
        with mapped(seg) as data:
            for item in scan_bytes(data):
                if isinstance(item, Frame) and item.seq >= covered and item.seq not in seen:
                    seen.add(item.seq)
                    yield from item.payload["events"]


# ---------------------------------------------------------------------------- read-only check
def check_log(directory: Path) -> LogReport:
    """What ``EventLog.open`` would find, without changing anything (no lock, no cut, no copy).

    Checks the snapshot's checksum, every segment's frames, and that the archive files the
    snapshot covers are readable and hold as many files and events as it says.
    """
    started = time.perf_counter()
    directory = Path(directory)
    report = LogReport()
    covered, next_seq = 0, 0
    try:
        meta = read_snapshot_meta(directory)
    except (SnapshotError, OSError) as exc:
        logger.error("%s", exc)
        report.snapshot = "damaged"
        meta = None
    if meta is not None:
        report.snapshot = "loaded"
        covered, next_seq = meta.covered_seq, meta.next_seq
        report.snapshot_covered_seq, report.snapshot_keys, report.snapshot_users = covered, meta.keys, meta.users
        files = list_archives(directory, below=covered)
        rows = [_parquet_rows(directory / ARCHIVE_DIR / a.file) for a in files]
        report.archives = len(files)
        report.archived_events = sum(r or 0 for r in rows)
        if None in rows or len(files) != meta.archive_files or report.archived_events != meta.archived_events:
            logger.error("%s: %d archive file(s) with %d events readable, the snapshot says %d with %d",
                         directory / ARCHIVE_DIR, sum(r is not None for r in rows), report.archived_events,
                         meta.archive_files, meta.archived_events)
            report.snapshot = "damaged"
    fold = _Fold(max_seq=next_seq - 1)
    live = directory / LOG_NAME
    for boundary, seg in [*sealed_segments(directory), (None, live)]:
        if boundary is not None and boundary <= covered:
            continue
        if not seg.exists():
            continue
        report.segments += 1
        with mapped(seg) as data:
            report.segment_bytes += len(data)
            for item in scan_bytes(data):
                if isinstance(item, Damage):
                    at_end = item.end == len(data)
                    kind = item.kind if (seg == live and at_end) else "corrupt"
                    action = "cut" if (seg == live and at_end) else "quarantined"
                    report.regions.append(Region(seg.name, item.offset, item.length, kind,
                                                 max(item.records, 1) if kind == "corrupt" else 0, action, None))
                    if item.seq_hint is not None and kind == "corrupt":
                        fold.max_seq = max(fold.max_seq, item.seq_hint)
                    continue
                if item.seq < covered:
                    report.covered += 1
                elif item.seq in fold.seen:
                    report.duplicates += 1
                else:
                    fold.seen.add(item.seq)
                    fold.max_seq = max(fold.max_seq, item.seq)
                    report.records += 1
                    report.events += len(item.payload["events"])
                    report.first_seq = item.seq if report.first_seq is None else min(report.first_seq, item.seq)
                    report.last_seq = item.seq if report.last_seq is None else max(report.last_seq, item.seq)
    report.next_seq = fold.max_seq + 1
    report.seconds = time.perf_counter() - started
    return report


def _parquet_rows(path: Path) -> int | None:
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (OSError, ValueError):
        return None
