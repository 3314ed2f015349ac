"""Append-only event log (durable before acknowledging) and the per-user fresh events it feeds.

The public names live here; the code is split in three modules:

* ``serving.event_frames``: the record format. Each acknowledged batch is one record
  ``MAGIC(4) | length(4) | seq(8) | crc32(payload)(4) | crc32(header)(4) | payload`` (big-endian;
  ``payload``: UTF-8 JSON ``{"seq", "key", "digest", "received_at", "events": [{"user_id",
  "item_id", "timestamp", "event", "value"}]}``, the interactions contract with ``timestamp`` in
  int seconds). Records of the older format (``length | crc32 | payload``, no magic) are
  still read; new records are always written in the new one.
* ``serving.event_log``: :class:`EventLog`. ``append`` writes one record, ``fsync``s it and only
  then returns: an acknowledged batch survives ``kill -9`` and power loss. The live segment
  ``events.log`` is sealed as ``events.<next seq>.log`` past 32 MB, and sealed segments are
  compacted in the background into ``archive/*.parquet`` + ``events.snapshot``.
  On open: the snapshot is loaded, then only the segments after it are replayed. A damaged
  region inside a segment (a flipped byte, a lost or duplicated range) costs only the records
  inside it: the reader resynchronises on the next valid frame, keeps every later record,
  logs the damage at ERROR, copies the bytes to ``<segment>.corrupt-<offset>`` (they stay in
  place, skipped) and counts them (``tlrec_event_log_corrupt_records_total``). Only a
  damaged *last* region of the live segment is cut (kept in ``events.log.dropped-<offset>``):
  a torn write (WARNING) or a damaged last record (ERROR, counted). Each seq is replayed
  once; the next seq is above every seq seen.
* ``serving.event_snapshot``: :class:`FreshEvents`, the idempotency window (the keys of the
  last 100,000 keyed batches and at most 24 h old: a retry after that is stored again), the
  snapshot and the Parquet archive.

``tlrec events verify DIR`` reports the log's health without changing it;
``tlrec events compact DIR`` compacts a log no server has open.
"""

from __future__ import annotations

from tlrec.serving.event_frames import (
    HEADER,
    MAGIC,
    MAX_RECORD_BYTES,
    Damage,
    Frame,
    encode_record,
    iter_events,
    scan,
    scan_bytes,
)
from tlrec.serving.event_log import (
    LOG_NAME,
    Ack,
    CompactionReport,
    EventLog,
    EventLogError,
    IdempotencyConflict,
    LogReport,
    Region,
    batch_digest,
    check_log,
    iter_all_events,
)
from tlrec.serving.event_snapshot import FreshEvents, KeyWindow, SnapshotError

__all__ = [
    "HEADER",
    "LOG_NAME",
    "MAGIC",
    "MAX_RECORD_BYTES",
    "Ack",
    "CompactionReport",
    "Damage",
    "EventLog",
    "EventLogError",
    "Frame",
    "FreshEvents",
    "IdempotencyConflict",
    "KeyWindow",
    "LogReport",
    "Region",
    "SnapshotError",
    "batch_digest",
    "check_log",
    "encode_record",
    "iter_all_events",
    "iter_events",
    "scan",
    "scan_bytes",
]
