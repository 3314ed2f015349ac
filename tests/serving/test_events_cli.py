"""`tlrec events verify` (read-only health, exit 0/1) and `tlrec events compact`."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from tlrec.services.cli import app
from tlrec.serving.event_frames import Frame, scan_bytes
from tlrec.serving.event_log import LOG_NAME, EventLog, iter_all_events
from tlrec.serving.event_snapshot import FreshEvents
from tlrec.serving.exposure_log import ExposureLog
from typer.testing import CliRunner


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def _batch(i: int) -> list[dict]:
    return [{"user_id": f"u{i % 5}", "item_id": f"r{i}", "timestamp": 1_700_000_000 + i, "event": "view",
             "value": None}]


def _log(folder: Path, n: int = 40, exposures: bool = True) -> Path:
    log = EventLog(folder, fresh=FreshEvents(), segment_bytes=2048, auto_compact=False)
    log.open()
    for i in range(n):
        log.append(_batch(i), f"k{i}")
    log.close()
    if exposures:
        with ExposureLog(folder / "exposures.jsonl") as ex:
            ex.log_many([(f"u{i}", "exp", "control", 1.0) for i in range(10)])
    return folder


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _verify(folder: Path, *extra: str):
    return CliRunner().invoke(app, ["events", "verify", str(folder), *extra])


def test_verify_a_healthy_log(tmp_path):
    folder = _log(tmp_path / "events")
    before = _tree(folder)
    result = _verify(folder)
    assert result.exit_code == 0, result.output
    assert "healthy" in result.stdout and "next sequence number" in result.stdout
    doc = json.loads(_verify(folder, "--json").stdout)
    assert doc["healthy"] and doc["event_log"]["records"] == 40 and doc["event_log"]["next_seq"] == 40
    assert doc["event_log"]["first_seq"] == 0 and doc["event_log"]["last_seq"] == 39
    assert doc["exposures"]["exposures"] == 10 and doc["exposures"]["healthy"]
    assert _tree(folder) == before  # read-only


def test_verify_reports_damage_with_offsets_and_changes_nothing(tmp_path):
    folder = _log(tmp_path / "events", exposures=False)
    seg = sorted(folder.glob("events.*.log"))[0]  # a sealed segment
    data = bytearray(seg.read_bytes())
    frame = [f for f in scan_bytes(bytes(data)) if isinstance(f, Frame)][3]
    data[frame.offset + 30] ^= 0x40
    seg.write_bytes(bytes(data) + bytes(data[frame.end:frame.end + 200]))  # + a stray partial copy
    live = folder / LOG_NAME
    live.write_bytes(live.read_bytes() + b"\xffTL")  # a torn tail: reported, not damage
    before = _tree(folder)
    result = _verify(folder)
    assert result.exit_code == 1, result.output
    assert "DAMAGED" in result.stdout and str(frame.offset) in result.stdout
    doc = json.loads(_verify(folder, "--json").stdout)
    log = doc["event_log"]
    assert not doc["healthy"] and log["corrupt_records"] >= 1 and log["torn_tail_bytes"] == 3
    assert log["regions"][0]["offset"] == frame.offset and log["regions"][0]["file"] == seg.name
    assert _tree(folder) == before  # no cut, no quarantine copy, no lock file written


def test_verify_sees_duplicated_records(tmp_path):
    folder = _log(tmp_path / "events", n=5, exposures=False)
    live = folder / LOG_NAME
    live.write_bytes(live.read_bytes() * 2)
    doc = json.loads(_verify(folder, "--json").stdout)
    assert doc["event_log"]["duplicates"] >= 1 and not doc["healthy"]


def test_verify_a_missing_folder_is_bad_input(tmp_path):
    result = _verify(tmp_path / "nope")
    assert result.exit_code == 2 and "not a folder" in result.output


def test_compact_then_verify(tmp_path):
    folder = _log(tmp_path / "events")
    events_before = list(iter_all_events(folder))
    result = CliRunner().invoke(app, ["events", "compact", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["compacted"] and doc["records"] == 40 and doc["covered_seq"] == 40
    assert list(iter_all_events(folder)) == events_before
    verified = json.loads(_verify(folder, "--json").stdout)
    assert verified["healthy"] and verified["event_log"]["records"] == 0
    assert verified["event_log"]["archived_events"] == 40 and verified["event_log"]["snapshot"] == "loaded"
    again = CliRunner().invoke(app, ["events", "compact", str(folder)])
    assert again.exit_code == 0 and "nothing to compact" in again.stdout


def test_compact_refuses_a_log_in_use(tmp_path):
    folder = _log(tmp_path / "events")
    log = EventLog(folder)
    log.open()
    try:
        result = CliRunner().invoke(app, ["events", "compact", str(folder)])
    finally:
        log.close()
    assert result.exit_code == 2 and "in use" in result.output
