"""Framing of the event log: one self-checking record per acknowledged batch, findable after damage.

Record format (``v2``, the only one written)::

    offset  bytes  field
    0       4      MAGIC = b"\\xffTLE"  (0xFF never occurs in UTF-8, so never inside a payload)
    4       4      payload length n, u32 big-endian, at most MAX_RECORD_BYTES
    8       8      seq, u64 big-endian (the record's sequence number; the payload repeats it)
    16      4      zlib.crc32(payload), u32 big-endian
    20      4      zlib.crc32(bytes 4..20: length, seq, payload CRC), u32 big-endian
    24      n      payload: UTF-8 JSON {"seq", "key", "digest", "received_at", "events": [...]}

The header CRC covers the length, so a flipped length byte can never make a reader skip
good records: a frame is trusted only when both CRCs match. A reader that meets a bad
frame searches forward for the next MAGIC whose frame validates (resynchronisation):
the bytes in between are one *damaged region* and every later record is still read.

Legacy records (``v1``, written before the magic existed) are still read:
``[length u32][zlib.crc32(payload) u32][payload]``. A file that does not start with MAGIC
may hold them (v2 records may follow: new appends are always v2); inside such a file the
reader also resynchronises on a v1 payload's ``{"seq":`` opening.

:func:`scan_bytes` turns a file's bytes into :class:`Frame` and :class:`Damage` items in
file order. A damaged region at the very end of a file is ``torn`` when it looks like
what a crash mid-``write`` leaves (a frame prefix: a partial header, or a valid header
whose payload runs past the end of the file) and ``corrupt`` otherwise (a complete
record that fails its CRC: damage at rest, which may have been acknowledged).
"""

from __future__ import annotations

import json
import mmap
import re
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAGIC = b"\xffTLE"
HEADER = struct.Struct(">4sIQII")  # magic, length, seq, payload crc, header crc
HEADER_BODY = struct.Struct(">IQI")  # the bytes the header CRC covers
LEGACY_HEADER = struct.Struct(">II")  # v1: length, payload crc
LEGACY_ANCHOR = b'{"seq":'
MAX_RECORD_BYTES = 64 << 20
_SEQ_TEXT = re.compile(rb'\{"seq":(\d{1,18})[,}]')


@dataclass(frozen=True)
class Frame:
    """One intact record: its byte range in the file, sequence number and parsed payload."""

    offset: int
    end: int
    seq: int
    payload: dict[str, Any]
    legacy: bool = False


@dataclass(frozen=True)
class Damage:
    """A damaged byte range ``[offset, end)``: no intact record starts inside it.

    ``kind``: ``corrupt`` (damage at rest: records were lost) or ``torn`` (the file's last
    bytes are a frame prefix, what a crash mid-write leaves; never acknowledged).
    ``records``: how many record starts the region holds (at least 1 when corrupt).
    ``seqs``: sequence numbers read from headers whose own CRC still matched (exact).
    ``seq_hint``: the largest sequence number the region may have held (exact headers, and a
    best-effort read of the payloads' ``{"seq":N`` openings), so a new record never reuses it.
    """

    offset: int
    end: int
    kind: str
    records: int
    seqs: tuple[int, ...] = field(default=())
    seq_hint: int | None = None

    @property
    def length(self) -> int:
        return self.end - self.offset


def encode_record(payload: dict[str, Any]) -> bytes:
    """Frame one JSON payload as a v2 record; ``payload["seq"]`` (default 0) goes in the header too."""
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    if len(data) > MAX_RECORD_BYTES:
        raise ValueError(f"record of {len(data)} bytes is over the limit of {MAX_RECORD_BYTES}")
    seq = int(payload.get("seq", 0))
    body = HEADER_BODY.pack(len(data), seq, zlib.crc32(data))
    return MAGIC + body + struct.pack(">I", zlib.crc32(body)) + data


def _payload(body: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(body)
    except ValueError:  # includes UnicodeDecodeError
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
        return None
    seq = payload.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return None
    return payload


def _header_at(data: Any, pos: int) -> tuple[int, int, int] | None:
    """``(length, seq, payload crc)`` of a v2 header at ``pos`` whose header CRC matches, else None."""
    if pos + HEADER.size > len(data) or data[pos:pos + 4] != MAGIC:
        return None
    _, length, seq, pcrc, hcrc = HEADER.unpack_from(data, pos)
    if zlib.crc32(data[pos + 4:pos + 20]) != hcrc or length > MAX_RECORD_BYTES:
        return None
    return length, seq, pcrc


def _v2_at(data: Any, pos: int) -> Frame | None:
    header = _header_at(data, pos)
    if header is None:
        return None
    length, seq, pcrc = header
    start, end = pos + HEADER.size, pos + HEADER.size + length
    if end > len(data):
        return None
    body = data[start:end]
    if zlib.crc32(body) != pcrc:
        return None
    payload = _payload(body)
    if payload is None or payload["seq"] != seq:
        return None
    return Frame(pos, end, seq, payload)


def _v1_at(data: Any, pos: int) -> Frame | None:
    if pos < 0 or pos + LEGACY_HEADER.size > len(data):
        return None
    length, crc = LEGACY_HEADER.unpack_from(data, pos)
    start, end = pos + LEGACY_HEADER.size, pos + LEGACY_HEADER.size + length
    if length > MAX_RECORD_BYTES or end > len(data):
        return None
    body = data[start:end]
    if zlib.crc32(body) != crc:
        return None
    payload = _payload(body)
    if payload is None:
        return None
    return Frame(pos, end, int(payload["seq"]), payload, legacy=True)


def _frame_at(data: Any, pos: int) -> Frame | None:
    if data[pos:pos + 4] == MAGIC:
        return _v2_at(data, pos)
    return _v1_at(data, pos)


def _find_legacy(data: Any, start: int) -> int:
    hit = data.find(LEGACY_ANCHOR, start + LEGACY_HEADER.size)
    return -1 if hit == -1 else hit - LEGACY_HEADER.size


def next_frame(data: Any, start: int, legacy: bool) -> Frame | None:
    """The first intact record starting at or after ``start`` (v2 by MAGIC; v1 by anchor when ``legacy``)."""
    m = data.find(MAGIC, start)
    v1 = _find_legacy(data, start) if legacy else -1
    while m != -1 or v1 != -1:
        if m != -1 and (v1 == -1 or m <= v1):
            frame = _v2_at(data, m)
            if frame is not None:
                return frame
            m = data.find(MAGIC, m + 1)
        else:
            frame = _v1_at(data, v1)
            if frame is not None:
                return frame
            v1 = _find_legacy(data, v1 + 1)
    return None


def _describe(data: Any, start: int, end: int, legacy: bool) -> tuple[int, tuple[int, ...], int | None]:
    """Record starts in a damaged region, exact seqs of its intact headers, and the largest seq it may hold."""
    starts, seqs = 0, []
    m = data.find(MAGIC, start, end)
    while m != -1:
        starts += 1
        header = _header_at(data, m)
        if header is not None:
            seqs.append(header[1])
        m = data.find(MAGIC, m + 1, end)
    hint = max(seqs) if seqs else None
    for match in _SEQ_TEXT.finditer(bytes(data[start:end])):  # a payload's opening, when its header is hit
        starts += legacy
        hint = max(hint or 0, int(match.group(1)))
    return max(starts, 1), tuple(seqs), hint


def _tail_is_torn(data: Any, pos: int, legacy: bool) -> bool:
    """True if the bytes from ``pos`` to the end are a frame prefix (a write cut by a crash)."""
    rest = len(data) - pos
    k = min(rest, 4)
    if data[pos:pos + k] == MAGIC[:k]:
        if rest < HEADER.size:
            return True
        header = _header_at(data, pos)
        return header is not None and pos + HEADER.size + header[0] > len(data)
    if not legacy:
        return False  # a v2 write starts with MAGIC: anything else is damage
    if rest < LEGACY_HEADER.size:
        return True
    length, _ = LEGACY_HEADER.unpack_from(data, pos)
    return length <= MAX_RECORD_BYTES and pos + LEGACY_HEADER.size + length > len(data)


def scan_bytes(data: Any) -> Iterator[Frame | Damage]:
    """Every intact record and every damaged region of one log file's bytes, in file order.

    ``data``: ``bytes`` or an ``mmap`` of the file. Reads each byte about once when the
    file is healthy; after damage, searches forward for the next valid frame. Never raises
    on bad input.
    """
    n = len(data)
    legacy = n > 0 and data[:4] != MAGIC
    pos = 0
    while pos < n:
        frame = _frame_at(data, pos)
        if frame is not None:
            yield frame
            pos = frame.end
            continue
        nxt = next_frame(data, pos + 1, legacy)
        end = nxt.offset if nxt is not None else n
        torn = nxt is None and _tail_is_torn(data, pos, legacy)
        records, seqs, hint = _describe(data, pos, end, legacy)
        yield Damage(pos, end, "torn" if torn else "corrupt", 0 if torn else records, seqs, hint)
        pos = end


@contextmanager
def mapped(path: Path) -> Iterator[Any]:
    """The file's bytes, memory-mapped read-only (``b""`` when empty or missing): pages are read on
    demand and dropped when the map closes, so scanning a large file does not hold it in memory."""
    path = Path(path)
    size = path.stat().st_size if path.exists() else 0
    if size == 0:
        yield b""
        return
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        yield data


def scan(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Every intact record of one file (damaged regions skipped) and the end of the last one.

    Returns ``(payloads in file order, offset just past the last intact record)``. Records are
    not deduplicated (a duplicated byte range yields its records twice): the event log replay
    keeps the first of each sequence number. Holds all payloads: for tests and small files.
    """
    records: list[dict[str, Any]] = []
    end = 0
    with mapped(Path(path)) as data:
        for item in scan_bytes(data):
            if isinstance(item, Frame):
                records.append(item.payload)
                end = item.end
    return records, end


def iter_events(path: Path) -> Iterator[dict[str, Any]]:
    """Every event of every intact record of one file, in file order, each sequence number once.

    ``path``: one segment (``events.log``). For everything the log holds, archived segments
    included, use ``serving.event_log.iter_all_events(directory)``.
    """
    seen: set[int] = set()
    with mapped(Path(path)) as data:
        for item in scan_bytes(data):
            if isinstance(item, Frame) and item.seq not in seen:
                seen.add(item.seq)
                yield from item.payload["events"]
