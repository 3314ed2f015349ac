"""A real `tlrec serve` in a subprocess on 127.0.0.1 (free port), with bounded waits.

``api`` is one server on the session's demo world, shared by the API, auth and fuzz tests;
tests that kill or reload start their own ``Server``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
USER_KEY = "user-key-1"
OTHER_USER_KEY = "user-key-2"
ADMIN_KEY = "admin-key-xyz"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One ``python -m services.cli serve`` process; ``start`` waits (bounded) for /readyz."""

    def __init__(self, artifacts: Path, events_dir: Path, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.artifacts = artifacts
        self.events_dir = events_dir
        self.env = {
            **os.environ, "HF_HUB_OFFLINE": "1", "TLREC_API_KEYS": f"{USER_KEY},{OTHER_USER_KEY}",
            "TLREC_ADMIN_KEY": ADMIN_KEY, "TLREC_EVENTS_DIR": str(events_dir), "TLREC_THREADS": "1",
            **(env or {}),
        }
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log = events_dir.parent / f"server-{events_dir.name}.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> "Server":
        self.port = free_port()
        self.events_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tlrec.services.cli", "serve", "--artifacts", str(self.artifacts),
                 "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log", *self.args],
                cwd=REPO, env=self.env, stdout=log, stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}): {self.tail()}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout:.0f} s: {self.tail()}")

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, key: str | None = USER_KEY, timeout: float = 10.0) -> httpx.Client:
        headers = {"X-API-Key": key} if key is not None else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=timeout)


@pytest.fixture(scope="session")
def api(world, tmp_path_factory) -> Iterator[Server]:
    """One server on the demo world's artifacts (NCF current), keys set, events in a temp dir."""
    server = Server(world.artifacts, tmp_path_factory.mktemp("api") / "events").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def keys() -> dict[str, str]:
    """The keys every test server is started with."""
    return {"user": USER_KEY, "other": OTHER_USER_KEY, "admin": ADMIN_KEY}


@pytest.fixture(scope="session")
def make_server() -> type[Server]:
    """The ``Server`` class, for tests that start (and kill) their own."""
    return Server


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture
def user(api) -> Iterator[httpx.Client]:
    with api.client(USER_KEY) as client:
        yield client
