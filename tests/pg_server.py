"""PostgreSQL for tests: the local server on 127.0.0.1:5432 when it answers, else a private one.

No test is skipped for want of PostgreSQL: the server binaries (``initdb``, ``pg_ctl``, from the
``postgresql`` package) are enough. A private server lives in a temporary directory, on a free
port, with trust authentication and fsync off, and is stopped after the session. PostgreSQL
refuses to run as root, so under root it runs as the ``postgres`` user (``runuser``).

Each test session works in a database of its own (``llmrelay_test_<random>``), created at the
start and dropped at the end, so a shared server is left as it was found.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

LOCAL_HOST, LOCAL_PORT = "127.0.0.1", 5432
USER = "postgres"
INSTALL_HINT = "PostgreSQL server binaries (initdb, pg_ctl) not found: install them (apt-get install postgresql)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_url(host: str, port: int, dbname: str = "postgres") -> str:
    return f"postgresql://{USER}@{host}:{port}/{dbname}"


def answers(url: str, timeout: float = 1.0) -> bool:
    """True when a server takes a password-less connection as ``postgres`` at ``url``."""
    try:
        with psycopg.connect(url, connect_timeout=max(1, int(timeout))) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def find_binary(name: str) -> str | None:
    """``name`` on PATH, else in the newest /usr/lib/postgresql/<version>/bin (Debian's layout)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return candidates[-1] if candidates else None


class PostgresServer:
    """A private PostgreSQL cluster in a temporary directory."""

    def __init__(self, port: int | None = None) -> None:
        initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError(INSTALL_HINT)
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self.port = port or free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="llmrelay-pg-")
        self.dir = Path(self._tmp.name)
        self.data = self.dir / "data"
        self.log_path = self.dir / "server.log"
        self.run_as = self._unprivileged_user() if os.geteuid() == 0 else None
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    @staticmethod
    def _unprivileged_user() -> str:
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                pwd.getpwnam(name)
                return name
        raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")

    @property
    def url(self) -> str:
        return server_url("127.0.0.1", self.port)

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.run_as is not None:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)

    def start(self, timeout: float = 60.0) -> PostgresServer:
        done = self._run(self.initdb, "-D", str(self.data), "-U", USER, "-A", "trust", "--no-sync",
                         "-E", "UTF8", timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir}"
                   " -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        done = self._run(self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.log_path),
                         "-w", "-t", str(int(timeout)), "start", timeout=timeout + 5)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed ({done.returncode}):\n{done.stderr}\n{self.log()}")
        deadline = time.monotonic() + timeout
        while not answers(self.url):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"PostgreSQL did not answer within {timeout}s:\n{self.log()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.data.exists():
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self._tmp.cleanup()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def create_database(server: str, prefix: str = "llmrelay_test_") -> str:
    """A new empty database on ``server`` (a URL to any database there); returns its URL."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.rsplit("/", 1)[0] + f"/{name}"


def drop_database(url: str) -> None:
    server, name = url.rsplit("/", 1)
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def running_server() -> Iterator[str]:
    """URL (``postgres`` database) of the local server if it answers, else of a private one."""
    local = server_url(LOCAL_HOST, LOCAL_PORT)
    if answers(local):
        yield local
        return
    try:
        server = PostgresServer().start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a database of this session's own, dropped at the end."""
    with running_server() as server:
        url = create_database(server)
        try:
            yield url
        finally:
            drop_database(url)
