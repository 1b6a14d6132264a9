"""`MockAnthropic`: the test-side handle of the mock Anthropic upstream (`anthropic_server.py`).

It runs the server in a child process, like `MockOpenAI`, and has the same `start()`, `stop()`,
`requests()`, `clear()` and `configure()`; its `url` is the server root, which is what an
Anthropic `api_base` is (the adapter adds `/v1/messages`).
"""

from __future__ import annotations

import select
import subprocess
import sys
from pathlib import Path
from typing import Self

from . import MockOpenAI

__all__ = ["MockAnthropic"]

SERVER = Path(__file__).resolve().with_name("anthropic_server.py")


class MockAnthropic(MockOpenAI):
    """Start, stop and inspect one mock Anthropic server process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None,
                 fail_status: int | None = None, delay: float = 0.0, chunk_delay: float = 0.0,
                 record: bool = True, startup_timeout: float = 10.0) -> None:
        super().__init__(host, port, api_key=api_key, fail_status=fail_status, delay=delay,
                         chunk_delay=chunk_delay, record=record, startup_timeout=startup_timeout)
        self._args = ["--host", host, "--delay", str(delay), "--chunk-delay", str(chunk_delay),
                      "--exit-with-parent"]
        self._args += ["--api-key", api_key] if api_key is not None else []
        self._args += ["--fail-status", str(fail_status)] if fail_status else []
        self._args += [] if record else ["--no-record"]

    @property
    def url(self) -> str:
        """The Anthropic `api_base`: the server root (requests go to `/v1/messages`)."""
        return self.base_url

    def start(self) -> Self:
        """Start the server process; return once it listens (port 0 picks a free port)."""
        cmd = [sys.executable, str(SERVER), *self._args, "--port", str(self.port)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], self.startup_timeout)
        line = self._proc.stdout.readline() if ready else b""
        self._proc.stdout.close()
        if not line.startswith(b"listening"):
            self.stop()
            raise RuntimeError(f"mock anthropic upstream did not start: {line!r}")
        self.port = int(line.rsplit(b":", 1)[1])
        return self
