"""Damage in the middle of the event and exposure logs costs only the damaged records (issue 11, defect 1).

Fault injection: seeded single-byte flips, cut-off tails, cut-out ranges and duplicated
ranges over a log of a few hundred acknowledged batches. After each, a restart must recover
every record the damage did not touch, none twice, keep sequence numbers unique (a new
append gets a seq above all existing) and keep the idempotency keys of the survivors.
The seed of each trial is in the failure message. fsync is stubbed out while *building*
the logs (speed); recovery always runs on the real code.
"""

from __future__ import annotations

import logging
import os
import random
import zlib
from pathlib import Path

import pytest
from tlrec.serving.api.prometheus import Metrics
from tlrec.serving.event_frames import Frame, scan, scan_bytes
from tlrec.serving.event_log import LOG_NAME, EventLog
from tlrec.serving.event_snapshot import FreshEvents
from tlrec.serving.exposure_log import ExposureLog

BATCHES = 300
TRIALS = 60
OPS = ("flip", "truncate", "cut", "duplicate")


def _batch(i: int) -> list[dict]:
    """Batch ``i``: its events name it (item ``r<i>-<j>``), so a replayed batch says which record it was."""
    return [{"user_id": f"u{i % 17}", "item_id": f"r{i}-{j}", "timestamp": 1_700_000_000 + i, "event": "view",
             "value": None} for j in range(1 + i % 3)]


def _record_id(events: list[dict]) -> int:
    return int(events[0]["item_id"][1:].split("-")[0])


@pytest.fixture(scope="module")
def healthy_log(tmp_path_factory) -> tuple[bytes, list[tuple[int, int]]]:
    """The bytes of a log of BATCHES acknowledged batches (keys k<i>) and each record's byte range."""
    folder = tmp_path_factory.mktemp("healthy")
    mp = pytest.MonkeyPatch()
    mp.setattr(os, "fsync", lambda fd: None)
    try:
        log = EventLog(folder)
        log.open()
        for i in range(BATCHES):
            assert log.append(_batch(i), f"k{i}").seq == i
        log.close()
    finally:
        mp.undo()
    data = (folder / LOG_NAME).read_bytes()
    ranges = [(f.offset, f.end) for f in scan_bytes(data) if isinstance(f, Frame)]
    assert len(ranges) == BATCHES
    return data, ranges


def _damage(data: bytes, ranges: list[tuple[int, int]], op: str, rng: random.Random) -> tuple[bytes, set[int]]:
    """Apply one fault; returns the damaged bytes and the records it may cost (touched or physically gone)."""
    size = len(data)

    def touching(lo: int, hi: int) -> set[int]:  # records overlapping [lo, hi)
        return {i for i, (a, b) in enumerate(ranges) if a < hi and lo < b}

    if op == "flip":
        pos = rng.randrange(size)
        out = bytearray(data)
        out[pos] ^= rng.randrange(1, 256)
        return bytes(out), touching(pos, pos + 1)
    if op == "truncate":
        pos = rng.randrange(size)
        return data[:pos], {i for i, (a, b) in enumerate(ranges) if b > pos}
    if op == "cut":
        a = rng.randrange(size - 1)
        b = min(size, a + rng.randint(1, 3000))
        return data[:a] + data[b:], touching(a, b)
    a = rng.randrange(size - 1)
    b = min(size, a + rng.randint(1, 3000))
    at = rng.randrange(size + 1)
    return data[:at] + data[a:b] + data[at:], {i for i, (x, y) in enumerate(ranges) if x < at < y}


@pytest.mark.parametrize("op", OPS)
def test_event_log_survives_random_damage(tmp_path, healthy_log, op):
    data, ranges = healthy_log
    for trial in range(TRIALS // len(OPS)):
        seed = zlib.crc32(f"{op}-{trial}".encode())
        rng = random.Random(seed)
        damaged, lost_ok = _damage(data, ranges, op, rng)
        folder = tmp_path / f"{op}-{trial}"
        folder.mkdir()
        (folder / LOG_NAME).write_bytes(damaged)
        replayed: list[list[dict]] = []
        log = EventLog(folder, on_batch=replayed.append)
        log.open()
        ids = [_record_id(events) for events in replayed]
        where = f"{op} seed {seed}"
        assert len(ids) == len(set(ids)), f"{where}: a record replayed twice"
        missing = set(range(BATCHES)) - set(ids) - lost_ok
        assert not missing, f"{where}: undamaged records lost: {sorted(missing)[:10]}"
        assert all(events == _batch(_record_id(events)) for events in replayed), f"{where}: a record changed"
        if op in ("flip", "duplicate"):  # the last record's seq is still known (header or payload)
            assert log.batches >= BATCHES, f"{where}: next seq {log.batches} could reuse an acknowledged one"
        survivors = sorted(set(ids))
        assert log.batches > max(survivors, default=-1)
        for i in survivors[:: max(1, len(survivors) // 10)]:  # survivors' keys still dedupe
            ack = log.append(_batch(i), f"k{i}")
            assert ack.duplicate and ack.seq == i, f"{where}: key k{i} forgotten"
        new = log.append([{"user_id": "x", "item_id": "new", "timestamp": 1, "event": "view", "value": None}], "new")
        assert not new.duplicate and new.seq > max(survivors, default=-1)
        log.close()
        records, _ = scan(folder / LOG_NAME)  # the new record follows whatever damage stays in place
        assert records[-1]["key"] == "new"
        again: list[list[dict]] = []
        reopened = EventLog(folder, on_batch=again.append)
        reopened.open()
        assert [_record_id(e) for e in again[:-1]] == ids and reopened.batches == new.seq + 1, where
        reopened.close()


def test_one_flipped_byte_in_record_500_of_2000(tmp_path, monkeypatch, caplog):
    """The issue's scenario: one byte of record 500 flipped, then a restart through the real EventLog."""
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    log = EventLog(tmp_path)
    log.open()
    for i in range(2000):
        log.append(_batch(i), f"k{i}")
    log.close()
    monkeypatch.setattr(os, "fsync", real_fsync)
    path = tmp_path / LOG_NAME
    data = bytearray(path.read_bytes())
    frames = [f for f in scan_bytes(bytes(data)) if isinstance(f, Frame)]
    start, end = frames[500].offset, frames[500].end
    data[(start + end) // 2] ^= 0x20
    path.write_bytes(bytes(data))

    metrics = Metrics()
    fresh = FreshEvents()
    caplog.set_level(logging.INFO, logger="tlrec.serving")
    log = EventLog(tmp_path, fresh=fresh, on_corrupt=metrics.event_log_corrupt.inc)
    assert log.open() == 1999
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and any(f"at byte {start}" in r.getMessage() for r in errors)
    assert not any("torn tail" in r.getMessage() for r in caplog.records)
    assert "tlrec_event_log_corrupt_records_total 1.0" in metrics.render().decode()
    assert path.stat().st_size == len(data)  # nothing cut: the bad bytes stay in place, skipped
    assert (tmp_path / f"{LOG_NAME}.corrupt-{start}").read_bytes() == bytes(data[start:end])
    assert not list(tmp_path.glob("*.dropped-*"))
    assert log.report.corrupt_records == 1 and log.report.regions[0].offset == start
    assert log.append(_batch(1999), "k1999").duplicate  # keys after the damage are remembered
    assert log.append(_batch(499), "k499").seq == 499
    lost_again = log.append(_batch(500), "k500")  # the lost batch, retried: stored, with a new seq
    assert not lost_again.duplicate and lost_again.seq == 2000
    assert log.append(_batch(2001), "k2001").seq == 2001
    log.close()


def test_app_counts_corrupt_records_at_start_up(tmp_path):
    """The server's start-up sets tlrec_event_log_corrupt_records_total from the replay (even if no model loads)."""
    import time

    from fastapi.testclient import TestClient
    from tlrec.serving.api.app import create_app
    from tlrec.serving.settings import Settings

    events = tmp_path / "events"
    log = EventLog(events)
    log.open()
    for i in range(5):
        log.append(_batch(i), f"k{i}")
    log.close()
    data = bytearray((events / LOG_NAME).read_bytes())
    frames = [f for f in scan_bytes(bytes(data)) if isinstance(f, Frame)]
    data[frames[2].offset + 30] ^= 0x01
    (events / LOG_NAME).write_bytes(bytes(data))
    app = create_app(Settings(artifacts=tmp_path / "no-model", insecure=True, events_dir=events, threads=1))
    with TestClient(app) as client:
        for _ in range(100):  # start-up runs in the background; bounded wait
            body = client.get("/metrics").text
            if "tlrec_event_log_corrupt_records_total 1.0" in body:
                break
            time.sleep(0.05)
        assert "tlrec_event_log_corrupt_records_total 1.0" in body


# ---------------------------------------------------------------------------- exposure log
EXPOSURES = 300


def _exposure_line_ranges(data: bytes) -> list[tuple[int, int]]:
    ranges, pos = [], 0
    for line in data.split(b"\n")[:-1]:
        ranges.append((pos, pos + len(line) + 1))
        pos += len(line) + 1
    return ranges


@pytest.fixture(scope="module")
def healthy_exposures(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("exposures") / "exposures.jsonl"
    mp = pytest.MonkeyPatch()
    mp.setattr(os, "fsync", lambda fd: None)
    try:
        with ExposureLog(path) as log:
            for i in range(EXPOSURES):
                assert log.log(f"user-{i}", "exp", "control" if i % 2 else "treatment", 1_800_000_000.0 + i)
    finally:
        mp.undo()
    return path.read_bytes()


def _check_exposures(path: Path, lost_ok: set[int], where: str) -> None:
    with ExposureLog(path) as log:
        seen = {i for i in range(EXPOSURES) if log.known(f"user-{i}", "exp")}
        missing = set(range(EXPOSURES)) - seen - lost_ok
        assert not missing, f"{where}: undamaged exposures lost: {sorted(missing)[:10]}"
        for i in sorted(seen)[::25]:  # never logged twice
            assert not log.log(f"user-{i}", "exp", "control"), f"{where}: user-{i} logged again"
        assert log.log("someone-new", "exp", "control")
    with ExposureLog(path) as again:  # the file stays readable: the new line is there, the survivors too
        assert again.known("someone-new", "exp")
        assert all(again.known(f"user-{i}", "exp") for i in seen), where


@pytest.mark.parametrize("op", OPS)
def test_exposure_log_survives_random_damage(tmp_path, healthy_exposures, op):
    data = healthy_exposures
    ranges = _exposure_line_ranges(data)
    for trial in range(TRIALS // len(OPS)):
        seed = zlib.crc32(f"exposures-{op}-{trial}".encode())
        damaged, lost_ok = _damage(data, ranges, op, random.Random(seed))
        path = tmp_path / f"{op}-{trial}.jsonl"
        path.write_bytes(damaged)
        _check_exposures(path, lost_ok, f"{op} seed {seed}")


@pytest.mark.parametrize("where", ["middle", "last"])
def test_a_flipped_newline_costs_no_exposure(tmp_path, healthy_exposures, where):
    """A newline flipped into another byte merges two lines (the old reader lost both, or cut the last one)."""
    data = bytearray(healthy_exposures)
    newlines = [i for i, b in enumerate(data) if b == 0x0A]
    data[newlines[150] if where == "middle" else newlines[-1]] = ord("x")
    path = tmp_path / "exposures.jsonl"
    path.write_bytes(bytes(data))
    _check_exposures(path, set(), where)
    for dropped in tmp_path.glob("*.dropped-*"):  # at most the stray byte after the last record is cut
        assert b'{"user_id"' not in dropped.read_bytes()


def test_exposure_log_torn_tail_is_cut_and_kept_aside(tmp_path, healthy_exposures):
    path = tmp_path / "exposures.jsonl"
    torn = b'{"user_id": "late", "experim'
    path.write_bytes(healthy_exposures + torn)
    report = ExposureLog.check(path)
    assert report["healthy"] and report["torn_tail_bytes"] == len(torn) and path.stat().st_size == len(
        healthy_exposures) + len(torn)  # check() changes nothing
    _check_exposures(path, set(), "torn tail")
    assert (tmp_path / f"exposures.jsonl.dropped-{len(healthy_exposures)}").read_bytes() == torn


def test_exposure_check_reports_damage(tmp_path, healthy_exposures):
    data = bytearray(healthy_exposures)
    start, _ = _exposure_line_ranges(bytes(data))[10]
    data[start + 3] = 0xFF  # inside user_id: unreadable (not UTF-8)
    path = tmp_path / "exposures.jsonl"
    path.write_bytes(bytes(data) + bytes(healthy_exposures[:200]))  # + a duplicated range
    report = ExposureLog.check(path)
    assert not report["healthy"] and report["unreadable"][0]["offset"] == start and report["duplicates"] >= 1
    assert report["exposures"] == EXPOSURES - 1


def test_exposure_damage_is_logged_at_error(tmp_path, healthy_exposures, caplog):
    path = tmp_path / "exposures.jsonl"
    data = bytearray(healthy_exposures)
    start, _ = _exposure_line_ranges(bytes(data))[7]
    data[start + 1] ^= 0x04
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="tlrec.serving.experiments"):
        ExposureLog(path).close()
    assert any(f"at byte {start}" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
