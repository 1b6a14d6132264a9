"""RequestContext: the one object that flows through the pipeline stages.

Stages never import each other; everything one stage tells the next travels here. Fields are
slots so a typo is an error, not a silent new attribute.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.deployment import Deployment
    from proxy.errors import ProxyError

log = logging.getLogger(__name__)



def new_request_id(now: float) -> str:
    """``req-`` and 24 hex digits: the time in milliseconds, then 52 random bits.

    Time first, so ids made one after another sort one after another: the spend log's primary
    key index then grows at its end, as a log does. With random ids every insert landed on a
    random page of an index larger than SQLite's cache; a 500-row batch took 17-23 ms instead
    of 1 ms on a table of a few hundred thousand calls, and under sustained load the writer fell
    behind and its queue, and the worker's memory, grew.
    """
    return f"req-{int(now * 1000):011x}{random.getrandbits(52):013x}"

class RequestContext:
    """State of one client request, from the view to the rendered response."""

    __slots__ = (
        "_finishers",
        "api_key",
        "attempts",
        "body",
        "caller",
        "candidates",
        "child_time",
        "deployment",
        "end_user",
        "error",
        "excluded",
        "extra",
        "fallbacks",
        "headers",
        "kind",
        "max_retries",
        "metadata",
        "mock_response",
        "model",
        "redact_messages",
        "request_id",
        "response",
        "response_headers",
        "retries",
        "started",
        "status",
        "stream",
        "tags",
        "timings",
        "usage",
        "wall_started",
    )

    def __init__(
        self,
        kind: str,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
        *,
        request_id: str | None = None,
    ) -> None:
        self.kind = kind  # chat | completion | embedding | moderation
        self.body = body  # OpenAI-format request, proxy-only fields removed
        self.headers = headers or {}
        self.model: str = body.get("model") or ""
        self.stream: bool = bool(body.get("stream"))
        self.metadata: dict[str, Any] = {}
        self.started = time.perf_counter()
        self.wall_started = time.time()
        self.request_id = request_id or new_request_id(self.wall_started)
        self.caller: dict[str, Any] = {}  # who is calling (master key, virtual key, ...)
        self.api_key: str | None = None
        self.deployment: Deployment | None = None
        self.candidates: list[Deployment] | None = None  # narrowed by filters before route
        self.excluded: dict[str, str] = {}  # deployment id -> why it may not be picked
        self.attempts: list[dict[str, Any]] = []
        self.response: dict[str, Any] | Iterator[dict[str, Any]] | None = None
        self.status = 200
        self.error: ProxyError | None = None
        self.usage: dict[str, int] | None = None
        self.timings: dict[str, float] = {}
        self.child_time = 0.0
        self.response_headers: dict[str, str] = {}
        self.mock_response: Any = None
        user = body.get("user")
        #: the end user: the body's ``user``, or x-litellm-customer-id / x-litellm-end-user-id
        self.end_user: str | None = user if isinstance(user, str) and user else None
        self.tags: list[str] | None = None  # metadata tags and x-litellm-tags, for routing and spend
        #: log this call without its messages (x-litellm-enable-message-redaction): exporters and
        #: logs that would carry request or response content must leave it out when this is set
        self.redact_messages = False
        self.retries = 0  # retries made for the model group that answered (retry_fallback)
        self.fallbacks = 0  # fallback model groups tried (retry_fallback)
        self.max_retries: int | None = None  # retries allowed; None when no retry stage ran
        self._finishers: list[Callable[[RequestContext], None]] = []
        self.extra: dict[str, Any] = {}

    def on_finish(self, fn: Callable[[RequestContext], None]) -> None:
        """Run ``fn(ctx)`` once the response has been fully sent (or failed), streams included."""
        self._finishers.append(fn)

    def finish(self) -> None:
        """Called exactly once by the view's close hook; later stages' hooks run first."""
        finishers, self._finishers = self._finishers, []
        for fn in reversed(finishers):
            try:
                fn(self)
            except Exception:  # a broken hook must not hide the others
                log.exception("finish hook failed for %s", self.request_id)

    def add_timing(self, name: str, seconds: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + seconds

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def server_timing(self, total: float | None = None) -> str:
        """The ``Server-Timing`` header value: each stage's own time, upstream, total (ms)."""
        parts = [f"{name};dur={secs * 1000:.3f}" for name, secs in self.timings.items()]
        parts.append(f"total;dur={(self.elapsed if total is None else total) * 1000:.3f}")
        return ", ".join(parts)
