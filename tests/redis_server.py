"""Redis for tests: the local server on 127.0.0.1:6379 when it answers PING, else a private one.

No test is skipped for want of Redis: a ``redis-server`` binary on PATH is enough. A private
server keeps nothing on disk and lives in a temporary directory. Tests share one Redis safely by
giving each test its own key prefix (see ``tests/state/conftest.py``).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

LOCAL_HOST, LOCAL_PORT = "127.0.0.1", 6379
INSTALL_HINT = "redis-server not found on PATH: install it (apt-get install redis-server)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a Redis that needs no password answers on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A private ``redis-server`` on a fixed port; ``kill()`` and ``start()`` again simulate an outage."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        self.binary = binary
        self.port = port or free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="llmrelay-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        log = open(Path(self._tmp.name) / "redis.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._tmp.name, "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{self.log()}")
            if answers_ping("127.0.0.1", self.port, timeout=0.2):
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer within {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        """Stop at once, as a crash would (connections drop, nothing is saved)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        self.kill()
        self._tmp.cleanup()

    def log(self) -> str:
        path = Path(self._tmp.name) / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_private() -> RedisServer:
    try:
        return RedisServer().start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis for the whole session: the local one if it answers, else a private one."""
    if answers_ping(LOCAL_HOST, LOCAL_PORT):
        yield f"redis://{LOCAL_HOST}:{LOCAL_PORT}/0"
        return
    server = start_private()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, which the test may kill and restart."""
    server = start_private()
    try:
        yield server
    finally:
        server.stop()
