"""Request-header size limit (TLREC_MAX_HEADER_BYTES) on a real `tlrec serve`: 431, and the server stops reading.

Raw sockets on 127.0.0.1, every loop bounded in bytes and time.
"""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time

import httpx
import pytest

from tlrec.serving.settings import Settings

LIMIT = Settings.model_fields["max_header_bytes"].default
HUGE = 16 << 20  # what the client tries to send: 16 MiB of one X-API-Key header
CHUNK = 64 << 10


def _stream_huge_header(port: int, seconds: float = 10.0) -> tuple[int, bytes]:
    """Send ``GET /v1/ping`` with a 16 MiB X-API-Key, stopping once the server answers or hangs up.

    Returns the bytes sent and the response read (empty if none came within the bounds).
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sent, response = 0, b""
    deadline = time.monotonic() + seconds
    try:
        sock.sendall(b"GET /v1/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: ")
        chunk = b"k" * CHUNK
        while sent < HUGE and time.monotonic() < deadline:
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered (or closed)
            try:
                sock.sendall(chunk)
            except (OSError, TimeoutError):  # reset / broken pipe once the server closed, or stopped reading
                break
            sent += len(chunk)
        sock.settimeout(max(0.5, min(5.0, deadline - time.monotonic())))
        while len(response) < 65536:
            try:
                data = sock.recv(65536)
            except (OSError, TimeoutError):
                break
            if not data:
                break
            response += data
    finally:
        sock.close()
    return sent, response


def _read_counts(log: str) -> list[int]:
    return [int(n) for n in re.findall(r"request headers over \d+ bytes \((\d+) read\): 431", log)]


def test_huge_header_gets_431_and_the_server_stops_reading(api, keys):
    assert LIMIT == 16 * 1024
    before = len(_read_counts(api.tail(1 << 20)))
    sent, response = _stream_huge_header(api.port)
    assert response.startswith(b"HTTP/1.1 431 "), (sent, response[:300])
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert json.loads(body) == {"error": f"request headers over {LIMIT} bytes", "detail": None}
    assert sent < HUGE, "the client could send the whole 16 MiB: the server kept reading"
    # the server's own count of what it read before refusing (logged): the limit plus at most one socket read
    deadline = time.monotonic() + 5
    while len(counts := _read_counts(api.tail(1 << 20))) <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(counts) > before and LIMIT < counts[-1] <= LIMIT + (1 << 20), counts[before:]
    # and the server is fine: a normal request works at once
    r = httpx.get(f"{api.base}/v1/ping", headers={"X-API-Key": keys["user"]}, timeout=5)
    assert r.status_code == 200


@pytest.mark.parametrize(("pad", "status"), [(LIMIT // 2, 200), (LIMIT + 1, 431), (4 * LIMIT, 431)])
def test_header_limit_counts_the_whole_head(api, keys, pad, status):
    request = (f"GET /v1/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {keys['user']}\r\n"
               f"X-Padding: {'p' * pad}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as sock:
        sock.sendall(request)
        response = b""
        while len(response) < 65536:
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            response += data
    assert response.startswith(f"HTTP/1.1 {status} ".encode()), response[:200]


def test_other_clients_are_not_slowed_by_a_huge_header(api, keys):
    done = threading.Event()

    def attack() -> None:
        try:
            for _ in range(5):  # bounded: five 16 MiB attempts, each refused at the limit
                _stream_huge_header(api.port, seconds=5)
        finally:
            done.set()

    thread = threading.Thread(target=attack, daemon=True)
    thread.start()
    slowest = 0.0
    with httpx.Client(base_url=api.base, headers={"X-API-Key": keys["user"]}, timeout=5) as client:
        for _ in range(50):
            t0 = time.perf_counter()
            assert client.get("/v1/ping").status_code == 200
            slowest = max(slowest, time.perf_counter() - t0)
            if done.is_set():
                break
    thread.join(timeout=30)
    # refused at the limit, a huge header costs the server one read: pings stay at a few ms (generous bound)
    assert slowest < 0.5, f"a ping took {slowest:.3f} s while another client sent huge headers"
