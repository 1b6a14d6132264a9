"""`MockAnthropic`: the test-side handle of the mock Anthropic upstream (`anthropic_server.py`).

It runs the server in a child process, like `MockOpenAI`, and has the same `start()`, `stop()`,
`requests()`, `clear()` and `configure()`; its `url` is the server root, which is what an
Anthropic `api_base` is (the adapter adds `/v1/messages`).
"""

from __future__ import annotations

from pathlib import Path

from . import MockOpenAI

__all__ = ["MockAnthropic"]

SERVER = Path(__file__).resolve().with_name("anthropic_server.py")


class MockAnthropic(MockOpenAI):
    """Start, stop and inspect one mock Anthropic server process."""

    server = SERVER

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None,
                 fail_status: int | None = None, delay: float = 0.0, chunk_delay: float = 0.0,
                 record: bool = True, startup_timeout: float = 10.0) -> None:
        super().__init__(host, port, api_key=api_key, fail_status=fail_status, delay=delay,
                         chunk_delay=chunk_delay, record=record, models=None, startup_timeout=startup_timeout)

    @property
    def url(self) -> str:
        """The Anthropic `api_base`: the server root (requests go to `/v1/messages`)."""
        return self.base_url
