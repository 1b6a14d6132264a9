"""A local OpenAI-compatible upstream that fails on demand, for end-to-end and load tests.

`MockOpenAI` is the test-side handle: it runs `openai_server.py` in a child process (so the
test process needs no gevent monkey-patching), and reads the requests the server recorded.
"""

from __future__ import annotations

import http.client
import select
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, Self

import orjson

from .openai_server import DEFAULT_MODELS, MockApp

__all__ = ["MockApp", "MockOpenAI"]

SERVER = Path(__file__).resolve().with_name("openai_server.py")


class MockOpenAI:
    """Start, stop and inspect one mock upstream server process.

    Subclasses for other wire formats set ``server`` (their script, which takes the same
    command-line options) and pass ``models=None`` when it has no model list.
    """

    server: ClassVar[Path] = SERVER

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None,
                 fail_status: int | None = None, delay: float = 0.0, chunk_delay: float = 0.0,
                 record: bool = True, models: Iterable[str] | None = DEFAULT_MODELS,
                 startup_timeout: float = 10.0) -> None:
        self.host, self.port, self.startup_timeout = host, port, startup_timeout
        self._args = ["--host", host, "--delay", str(delay), "--chunk-delay", str(chunk_delay),
                      "--exit-with-parent"]
        self._args += ["--models", ",".join(models)] if models is not None else []
        self._args += ["--api-key", api_key] if api_key is not None else []
        self._args += ["--fail-status", str(fail_status)] if fail_status else []
        self._args += [] if record else ["--no-record"]
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """Server root, for paths without the `/v1` prefix (e.g. Azure-style deployment paths)."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """OpenAI base URL, as a client's or proxy's `api_base` expects it."""
        return self.base_url + "/v1"

    def start(self) -> Self:
        """Start the server process; return once it listens (port 0 picks a free port)."""
        cmd = [sys.executable, str(self.server), *self._args, "--port", str(self.port)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert self._proc.stdout is not None
        # The child prints its bound address only after listen(), so no connect-polling is needed.
        ready, _, _ = select.select([self._proc.stdout], [], [], self.startup_timeout)
        line = self._proc.stdout.readline() if ready else b""
        self._proc.stdout.close()
        if not line.startswith(b"listening"):
            self.stop()
            raise RuntimeError(f"mock upstream {self.server.name} did not start: {line!r}")
        self.port = int(line.rsplit(b":", 1)[1])
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def requests(self) -> list[dict[str, Any]]:
        """Requests received so far, oldest first: method, path, query, headers, body, time."""
        return orjson.loads(self._call("GET", "/__mock__/requests"))

    def clear(self) -> None:
        """Forget received requests and `fail_times` counters."""
        self._call("DELETE", "/__mock__/requests")

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change `fail_status`, `delay` or `chunk_delay` while running (e.g. take it down)."""
        return orjson.loads(self._call("POST", "/__mock__/config", orjson.dumps(settings)))

    def _call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path, body=body)
            return conn.getresponse().read()
        finally:
            conn.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
