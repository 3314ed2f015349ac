"""The event log: framing, replay, torn tails, idempotency, failed writes; the fresh-events store."""

from __future__ import annotations

import logging
import os
import zlib

import pytest
from tlrec.serving.event_frames import HEADER, MAGIC, encode_record, iter_events, scan
from tlrec.serving.event_log import (
    LOG_NAME,
    EventLog,
    EventLogError,
    IdempotencyConflict,
)
from tlrec.serving.event_snapshot import FreshEvents, KeyWindow, SnapshotMeta, load_snapshot, write_snapshot


def _batch(n: int, user: str = "u1") -> list[dict]:
    return [{"user_id": user, "item_id": f"i{j}", "timestamp": 1_700_000_000 + j, "event": "view", "value": None}
            for j in range(n)]


def test_append_then_replay(tmp_path):
    fresh = FreshEvents()
    log = EventLog(tmp_path, on_batch=fresh.add)
    assert log.open() == 0
    a = log.append(_batch(2), "k1")
    b = log.append(_batch(3, "u2"), None)
    assert (a.seq, a.accepted, a.duplicate, b.seq) == (0, 2, False, 1)
    log.close()
    again = FreshEvents()
    log2 = EventLog(tmp_path, on_batch=again.add)
    assert log2.open() == 2 and log2.batches == 2
    assert again.get("u1") == ["i0", "i1"] and again.get("u2") == ["i0", "i1", "i2"]
    assert log2.append(_batch(2), "k1").duplicate  # key known from the replay
    assert len(list(iter_events(tmp_path / LOG_NAME))) == 5


def test_record_framing(tmp_path):
    frame = encode_record({"events": [], "seq": 7})
    magic, length, seq, pcrc, hcrc = HEADER.unpack_from(frame)
    assert magic == MAGIC and seq == 7 and length == len(frame) - HEADER.size
    assert pcrc == zlib.crc32(frame[HEADER.size:]) and hcrc == zlib.crc32(frame[4:20])


def test_legacy_records_are_still_read(tmp_path):
    """A log written before the magic (``[len][crc32][json]``) replays, and new records follow it."""
    import json
    import struct

    def legacy(payload: dict) -> bytes:
        data = json.dumps(payload, separators=(",", ":")).encode()
        return struct.pack(">II", len(data), zlib.crc32(data)) + data

    old = [legacy({"seq": i, "key": f"old{i}", "digest": "", "events": _batch(1)}) for i in range(3)]
    damaged = bytearray(old[1])
    damaged[-5] ^= 0x01
    (tmp_path / LOG_NAME).write_bytes(old[0] + bytes(damaged) + old[2])
    log = EventLog(tmp_path)
    assert log.open() == 2 and log.report.corrupt_records == 1 and log.batches == 3
    assert log.append(_batch(1), "new").seq == 3
    log.close()
    assert [r["key"] for r in scan(tmp_path / LOG_NAME)[0]] == ["old0", "old2", "new"]


@pytest.mark.parametrize("damage", ["half_header", "half_payload", "flipped_byte", "garbage_length"])
def test_torn_tail_is_cut_and_kept_aside(tmp_path, damage, caplog):
    log = EventLog(tmp_path)
    log.open()
    log.append(_batch(2), "good")
    log.close()
    path = tmp_path / LOG_NAME
    good_size = path.stat().st_size
    frame = encode_record({"seq": 1, "key": "torn", "events": _batch(1)})
    torn = {
        "half_header": frame[:5],
        "half_payload": frame[: len(frame) // 2],
        "flipped_byte": frame[:-3] + bytes([frame[-3] ^ 0xFF]) + frame[-2:],
        "garbage_length": b"\xff\xff\xff\xff" + frame[4:],
    }[damage]
    with open(path, "ab") as fh:
        fh.write(torn)
    log2 = EventLog(tmp_path)
    with caplog.at_level(logging.WARNING, logger="tlrec.serving"):
        assert log2.open() == 1
    assert path.stat().st_size == good_size
    torn_write = damage.startswith("half")  # a crash mid-write: WARNING; a whole record that fails its CRC: ERROR
    levels = {r.levelno for r in caplog.records}
    assert (logging.ERROR in levels) != torn_write and log2.report.corrupt_records == (0 if torn_write else 1)
    assert log2.report.torn_tail_bytes == (len(torn) if torn_write else 0)
    assert (tmp_path / f"{LOG_NAME}.dropped-{good_size}").read_bytes() == torn
    log2.append(_batch(1), "after")  # appends after the cut replay cleanly
    log2.close()
    records, end = scan(path)
    assert [r["key"] for r in records] == ["good", "after"] and end == path.stat().st_size


def test_key_reused_for_another_batch_conflicts(tmp_path):
    log = EventLog(tmp_path)
    log.open()
    log.append(_batch(2), "k")
    with pytest.raises(IdempotencyConflict, match="'k'"):
        log.append(_batch(3), "k")
    assert log.batches == 1


def test_failed_write_rolls_back_and_is_not_acknowledged(tmp_path, monkeypatch):
    log = EventLog(tmp_path)
    log.open()
    log.append(_batch(1), "before")
    real_write = os.write

    def short_write(fd, data):  # a disk that takes half the frame, then fails
        real_write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", short_write)
    with pytest.raises(EventLogError, match="No space left"):
        log.append(_batch(2), "failed")
    monkeypatch.setattr(os, "write", real_write)
    log.append(_batch(1), "after")
    log.close()
    records, end = scan(tmp_path / LOG_NAME)
    assert [r["key"] for r in records] == ["before", "after"]
    assert end == (tmp_path / LOG_NAME).stat().st_size


def test_fresh_events_are_bounded_per_user_and_in_users():
    fresh = FreshEvents(per_user=3, max_users=2)
    fresh.add(_batch(5, "a"))
    assert fresh.get("a") == ["i2", "i3", "i4"]
    fresh.add(_batch(1, "b"))
    fresh.add(_batch(1, "a"))  # a is now the most recent
    fresh.add(_batch(1, "c"))  # evicts b, the least recently written
    assert fresh.get("b") == [] and fresh.get("a") and fresh.get("c") and len(fresh) == 2


def test_fresh_events_keep_time_event_and_value_through_a_snapshot(tmp_path):
    fresh = FreshEvents()
    fresh.add([{"user_id": "a", "item_id": "i1", "timestamp": 1_700_000_000, "event": "purchase", "value": 2.5},
               {"user_id": "a", "item_id": "i2", "timestamp": 1_700_000_050, "event": "view", "value": None}])
    assert fresh.get("a") == ["i1", "i2"]
    write_snapshot(tmp_path, SnapshotMeta(next_seq=1, covered_seq=1), KeyWindow(), fresh)
    again = FreshEvents()
    load_snapshot(tmp_path, KeyWindow(), again)
    assert again.events("a") == [("i1", 1_700_000_000, "purchase", 2.5), ("i2", 1_700_000_050, "view", None)]


def test_a_snapshot_without_event_details_still_loads(tmp_path):
    """Snapshots written before fresh events kept their time, type and value hold item ids only."""
    import hashlib
    import json

    lines = [json.dumps({"format": "tlrec-events-snapshot", "version": 1, "next_seq": 1, "covered_seq": 1,
                         "created_at": 0.0, "keys": 0, "users": 1, "key_window": {}, "fresh": {}, "archive": {}}),
             json.dumps(["u", "a", ["i1", "i2"]])]
    body = "".join(line + "\n" for line in lines).encode()
    footer = json.dumps({"sha256": hashlib.sha256(body).hexdigest(), "lines": 2}) + "\n"
    (tmp_path / "events.snapshot").write_bytes(body + footer.encode())
    fresh = FreshEvents()
    load_snapshot(tmp_path, KeyWindow(), fresh)
    assert fresh.events("a") == [("i1", None, None, None), ("i2", None, None, None)]
