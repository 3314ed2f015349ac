"""The exposure log of the A/B experiments: one durable JSON line per (experiment, unit).

Each line is one record of the exposure contract (``serving.experiments.EXPOSURE_COLUMNS``):
``{"user_id", "experiment", "variant", "timestamp"}``. The API writes it (through
``serving.api.exposure_recorder``); ``tlrec ab analyze --exposures`` reads it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tlrec.serving.experiments import EXPOSURE_COLUMNS

from tlrec.files import fsync_dir

logger = logging.getLogger(__name__)


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
    _FIELDS = EXPOSURE_COLUMNS

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
