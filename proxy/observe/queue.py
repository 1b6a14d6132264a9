"""A bounded queue drained in batches by one background greenlet.

A request only appends to a deque; the greenlet sends what has piled up every ``interval`` (or
as soon as a batch is full). When the receiver is slow or gone the queue fills and further
records are dropped, never waited for: drops are counted, reported through ``on_drop`` (the
Prometheus counter) and logged at most once a minute. ``close`` sends what is left within a
deadline, so SIGTERM loses nothing a live receiver could take in time.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event

log = logging.getLogger(__name__)

DROP_LOG_INTERVAL = 60.0


class BatchQueue:
    """``put`` never blocks; ``send(batch)`` runs in the queue's own greenlet."""

    def __init__(
        self,
        name: str,
        send: Callable[[list[Any]], None],
        *,
        max_size: int = 10_000,
        batch_size: int = 100,
        interval: float = 1.0,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        self.name = name
        self.send = send
        self.max_size = max_size
        self.batch_size = batch_size
        self.interval = interval
        self.on_drop = on_drop
        self.dropped = 0  # records refused because the queue was full (or left at close)
        self.failed = 0  # records whose batch the receiver did not take
        self.sent = 0
        self._items: deque[Any] = deque()
        self._wake = Event()
        self._closing = False
        self._unlogged = 0
        self._last_drop_log = 0.0
        self._last_error_log = 0.0
        self._greenlet: gevent.Greenlet | None = gevent.spawn(self._run)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Any) -> bool:
        if len(self._items) >= self.max_size or self._greenlet is None:
            self._drop(1)
            return False
        self._items.append(item)
        if len(self._items) >= self.batch_size:
            self._wake.set()
        return True

    def put_many(self, items: list[Any]) -> None:
        """``put`` for each of ``items``, at once."""
        room = self.max_size - len(self._items) if self._greenlet is not None else 0
        if len(items) > room:
            self._drop(len(items) - max(room, 0))
            items = items[:max(room, 0)]
        self._items.extend(items)
        if len(self._items) >= self.batch_size:
            self._wake.set()

    def _drop(self, count: int) -> None:
        self.dropped += count
        self._unlogged += count
        if self.on_drop is not None:
            try:
                self.on_drop(self.name, count)
            except Exception:  # metrics must never break a request
                log.debug("drop counter failed", exc_info=True)
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL:
            log.warning("%s: %d record(s) dropped since the last report (queue full at %d; %d dropped in all)",
                        self.name, self._unlogged, self.max_size, self.dropped)
            self._unlogged = 0
            self._last_drop_log = now

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self._drain()
            if self._closing:
                self._drain()  # all that is left, what came in during the last drain included
                return

    def _drain(self) -> None:
        """Send what was queued when the drain began. Records that arrive meanwhile wait for the
        next wake-up (a full batch or the interval): chasing them would send a batch per record
        under steady load, each paying for a whole HTTP request."""
        items = self._items
        left = len(items) if not self._closing else sys.maxsize
        while items and left > 0:
            n = min(self.batch_size, len(items), left)
            left -= n
            batch = [items.popleft() for _ in range(n)]
            try:
                self.send(batch)
                self.sent += n
            except Exception as exc:
                self.failed += n
                now = time.monotonic()
                if now - self._last_error_log >= DROP_LOG_INTERVAL:
                    log.warning("%s: sending %d record(s) failed: %s", self.name, n, exc)
                    self._last_error_log = now

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (waiting at most ``timeout`` s), then stop; what is left is dropped."""
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is None:
            return
        self._closing = True
        self._wake.set()
        greenlet.join(timeout)
        if not greenlet.dead:
            greenlet.kill(block=False)
        if self._items:
            left = len(self._items)
            self._items.clear()
            self._drop(left)
            log.warning("%s: %d record(s) not sent within %gs of shutdown", self.name, left, timeout)
