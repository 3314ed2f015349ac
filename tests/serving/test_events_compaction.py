"""Segments, snapshot and Parquet archive (issue 11, defect 6): start-up bounded by the snapshot, not history.

Every test checks the same invariant after compaction, restart or an injected crash: all
events still reachable exactly once (archive + live), idempotency keys still dedupe, the
fresh per-user state is what an uninterrupted process would hold, the next seq is new.
"""

from __future__ import annotations

import logging
import os
import threading

import polars as pl
import pytest
from tlrec.serving import event_log
from tlrec.serving.event_log import LOG_NAME, EventLog, EventLogError, iter_all_events
from tlrec.serving.event_snapshot import (
    ARCHIVE_DIR,
    SNAPSHOT_NAME,
    FreshEvents,
    KeyWindow,
)


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    """Durability is not what these tests measure (the crash tests raise between steps instead)."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def _batch(i: int) -> list[dict]:
    return [{"user_id": f"u{i % 7}", "item_id": f"r{i}-{j}", "timestamp": 1_700_000_000 + i, "event": "click",
             "value": float(j) if j else None} for j in range(1 + i % 3)]


def _all(n: int) -> list[dict]:
    return [e for i in range(n) for e in _batch(i)]


def _fresh_after(n: int, start: int = 0) -> list:
    fresh = FreshEvents(per_user=5, max_users=4)
    for i in range(start, n):
        fresh.add(_batch(i))
    return list(fresh.dump())


def _open(folder, **kw) -> tuple[EventLog, FreshEvents]:
    fresh = FreshEvents(per_user=5, max_users=4)
    log = EventLog(folder, fresh=fresh, segment_bytes=kw.pop("segment_bytes", 4096),
                   auto_compact=kw.pop("auto_compact", False), **kw)
    log.open()
    return log, fresh


def _fill(log: EventLog, start: int, stop: int) -> None:
    for i in range(start, stop):
        assert log.append(_batch(i), f"k{i}").seq == i


def _check(folder, n: int) -> EventLog:
    """Everything reachable once; keys dedupe; fresh state as if never restarted; returns the open log."""
    assert list(iter_all_events(folder)) == _all(n)
    log, fresh = _open(folder)
    assert list(fresh.dump()) == _fresh_after(n)
    assert log.batches == n
    for i in range(0, n, max(1, n // 15)):
        ack = log.append(_batch(i), f"k{i}")
        assert ack.duplicate and ack.seq == i
    return log


def test_compaction_then_restart_replays_only_the_live_segment(tmp_path):
    log, _ = _open(tmp_path)
    _fill(log, 0, 200)
    sealed = event_log.sealed_segments(tmp_path)
    assert len(sealed) >= 5  # 4 KB segments
    result = log.compact()
    assert result is not None and result.records == 200 and result.covered_seq == 200
    assert not event_log.sealed_segments(tmp_path) and (tmp_path / LOG_NAME).stat().st_size == 0
    _fill(log, 200, 210)
    log.close()

    again, fresh = _open(tmp_path)
    assert again.report.records == 10 and again.report.snapshot == "loaded"  # replay: the live segment only
    assert again.report.segment_bytes < 4096 and again.report.snapshot_covered_seq == 200
    again.close()
    _check(tmp_path, 210).close()

    archives = sorted((tmp_path / ARCHIVE_DIR).glob("*.parquet"))
    frame = pl.concat([pl.read_parquet(p) for p in archives])
    assert frame.columns[:5] == ["user_id", "item_id", "timestamp", "event", "value"]
    assert frame.height == len(_all(200)) and frame["seq"].n_unique() == 200
    assert frame.schema["timestamp"] == pl.Int64


def test_archive_reads_as_training_interactions(tmp_path):
    from tlrec.training.data import load_interactions

    log, _ = _open(tmp_path)
    _fill(log, 0, 30)
    log.compact()
    log.close()
    archives = sorted((tmp_path / ARCHIVE_DIR).glob("*.parquet"))
    assert sum(load_interactions(path).height for path in archives) == len(_all(30))


@pytest.mark.parametrize("step", ["archive", "snapshot", "drop", "drop_half"])
def test_a_crash_between_compaction_steps_loses_and_doubles_nothing(tmp_path, monkeypatch, step):
    log, _ = _open(tmp_path)
    _fill(log, 0, 120)
    boom = RuntimeError(f"crash at {step}")
    if step == "archive":  # the second segment's archive is never published
        real = event_log._publish_archive
        calls = []

        def publish(writer):
            calls.append(1)
            if len(calls) == 2:
                raise boom
            return real(writer)

        monkeypatch.setattr(event_log, "_publish_archive", publish)
    elif step == "snapshot":
        monkeypatch.setattr(event_log, "write_snapshot", lambda *a, **k: (_ for _ in ()).throw(boom))
    elif step == "drop":
        monkeypatch.setattr(event_log, "_drop_segments", lambda paths: (_ for _ in ()).throw(boom))
    else:
        def drop_half(paths):
            paths[0].unlink()
            raise boom

        monkeypatch.setattr(event_log, "_drop_segments", drop_half)
    with pytest.raises(RuntimeError, match="crash at"):
        log.compact()
    log.close()  # the process dies here; what is on disk must be enough
    monkeypatch.undo()
    monkeypatch.setattr(os, "fsync", lambda fd: None)

    reopened = _check(tmp_path, 120)
    _fill(reopened, 120, 130)
    assert reopened.compact() is not None  # a later compaction finishes the job
    reopened.close()
    again = _check(tmp_path, 130)
    assert again.report.records == 0
    again.close()
    listed = {p.name for p in (tmp_path / ARCHIVE_DIR).iterdir()}
    assert all(name.endswith(".parquet") for name in listed)  # no orphan or temporary file left


def test_the_server_compacts_in_the_background(tmp_path):
    log, _ = _open(tmp_path, segment_bytes=2048, auto_compact=True)
    _fill(log, 0, 150)
    for _ in range(3):  # appends seal segments while the compactor runs; wait for it (bounded)
        if log._compactor is not None:
            log._compactor.join(timeout=30)
    log.close()
    assert (tmp_path / SNAPSHOT_NAME).exists() and list((tmp_path / ARCHIVE_DIR).glob("*.parquet"))
    assert len(event_log.sealed_segments(tmp_path)) <= 1
    _check(tmp_path, 150).close()


def test_appends_go_on_while_compacting(tmp_path, monkeypatch):
    """Compaction works on sealed segments only: an append never waits for it."""
    log, _ = _open(tmp_path)
    _fill(log, 0, 100)
    entered, release = threading.Event(), threading.Event()
    real = event_log._publish_archive

    def slow(writer):
        entered.set()
        release.wait(10)
        return real(writer)

    monkeypatch.setattr(event_log, "_publish_archive", slow)
    worker = threading.Thread(target=log.compact)
    worker.start()
    assert entered.wait(10)
    _fill(log, 100, 110)  # while the compaction is held
    release.set()
    worker.join(10)
    log.close()
    _check(tmp_path, 110).close()


def test_a_damaged_snapshot_is_rebuilt_from_the_archive(tmp_path, caplog):
    log, _ = _open(tmp_path)
    _fill(log, 0, 60)
    log.compact()
    _fill(log, 60, 70)
    log.close()
    snap = tmp_path / SNAPSHOT_NAME
    data = bytearray(snap.read_bytes())
    data[len(data) // 2] ^= 0x01
    snap.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="tlrec.serving"):
        reopened = _check(tmp_path, 70)
    assert reopened.report.snapshot == "damaged"
    assert any("snapshot is unusable" in r.getMessage() for r in caplog.records)
    assert reopened.compact() is not None  # writes a good snapshot again
    reopened.close()
    again = _check(tmp_path, 70)
    assert again.report.snapshot == "loaded"
    again.close()


def test_a_segment_the_snapshot_covers_is_skipped_by_seq(tmp_path, monkeypatch):
    """A segment left behind after the snapshot (crash before removal) is neither replayed nor archived twice."""
    log, _ = _open(tmp_path)
    _fill(log, 0, 50)
    kept = {p: p.read_bytes() for _, p in event_log.sealed_segments(tmp_path)}
    log.compact()
    log.close()
    for path, data in kept.items():  # put the archived segments back
        path.write_bytes(data)
    reopened = _check(tmp_path, 50)
    assert reopened.report.records == 0 and not event_log.sealed_segments(tmp_path)
    reopened.close()


def test_start_up_cost_is_bounded_by_the_snapshot(tmp_path):
    """Twice the history, compacted: the same replay work and state size at start-up."""
    sizes = []
    for n in (200, 400):
        folder = tmp_path / str(n)
        log, _ = _open(folder, key_window=50)
        _fill(log, 0, n)
        log.compact()
        log.close()
        reopened, fresh = _open(folder, key_window=50)
        sizes.append((reopened.report.records, reopened.report.segment_bytes, reopened.report.keys, len(fresh),
                       len((folder / SNAPSHOT_NAME).read_bytes().splitlines())))
        reopened.close()
    assert sizes[0] == sizes[1] == (0, 0, 50, 4, 1 + 50 + 4 + 1)  # head, keys, users, checksum


def test_key_window_forgets_the_oldest_keys():
    window = KeyWindow(max_keys=3, max_age=100.0)
    for i in range(5):
        window.add(f"k{i}", i, 1, "ab" * 32, received_at=1000.0 + i, now=1000.0 + i)
    assert [k in window for k in ("k0", "k1", "k2", "k4")] == [False, False, True, True]
    assert window.get("k2", now=1102.5) is None and window.get("k4", now=1102.5) == (4, 1, "ab" * 32)


def test_forgotten_keys_survive_a_restart_as_forgotten(tmp_path):
    log, _ = _open(tmp_path, key_window=10)
    _fill(log, 0, 40)
    log.compact()
    log.close()
    again, _ = _open(tmp_path, key_window=10)
    assert again.append(_batch(35), "k35").duplicate  # inside the window
    ack = again.append(_batch(3), "k3")  # outside: stored as a new batch (documented)
    assert not ack.duplicate and ack.seq == 40
    again.close()


def test_one_process_per_log(tmp_path):
    log, _ = _open(tmp_path)
    with pytest.raises(EventLogError, match="in use"):
        EventLog(tmp_path).open()
    log.close()
    EventLog(tmp_path).open()
