"""A local HTTP receiver the observability tests run: it keeps every POST it gets.

Stands in for Langfuse's ingestion API, a generic webhook, an OTLP/HTTP collector and a Slack
incoming webhook. ``delay`` makes it slow (a receiver that takes 5 s to answer).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


class Receiver:
    def __init__(self, delay: float = 0.0, status: int = 200, reply: bytes = b"{}") -> None:
        self.delay = delay
        self.status = status
        self.reply = reply
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with outer._lock:
                    outer.received.append({"path": self.path, "headers": headers, "body": body, "time": time.time()})
                if outer.delay:
                    time.sleep(outer.delay)
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.reply)))
                self.end_headers()
                self.wfile.write(outer.reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def posts(self, path: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.received if path is None or r["path"] == path]

    def json(self, path: str | None = None) -> list[Any]:
        return [orjson.loads(r["body"]) for r in self.posts(path)]

    def wait(self, predicate: Any, timeout: float = 15.0) -> Any:
        """Poll until ``predicate(self)`` is truthy; return its value (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate(self)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"receiver did not get what was expected within {timeout}s: {self.received!r}")
