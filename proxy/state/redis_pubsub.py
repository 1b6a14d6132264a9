"""Redis pub/sub for RedisState: one subscriber connection and the greenlet that reads it.

Messages are JSON objects; each one is handed to the callbacks registered on a MemoryState, so a
subscription made while Redis is down still gets local publishes and is made in Redis once it is
back. Callbacks run in the listener greenlet, one message after another: they must be quick.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import gevent
import orjson
import redis
from gevent.event import Event
from gevent.lock import Semaphore

from proxy.state.base import Message
from proxy.state.memory import MemoryState

log = logging.getLogger(__name__)

Received = list[tuple[str, Message]]


class RedisListener:
    """Keeps one pub/sub connection subscribed to every channel that has a local callback.

    ``block`` > 0 reads with a timeout (cooperative under gevent monkey-patching); 0 polls every
    ``poll`` seconds instead, because an unpatched socket read would block the whole process.
    One greenlet at a time uses the connection (``_lock``): the listener while it reads,
    ``subscribe`` between reads, so a subscription made at runtime is live when the call returns.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        local: MemoryState,
        *,
        is_up: Callable[[], bool],
        on_error: Callable[[Exception], None],
        poll: float,
        block: float,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._local = local
        self._is_up = is_up
        self._on_error = on_error
        self._poll = poll
        self._block = block
        self._pubsub: Any = None
        self._stale = False
        self._lock = Semaphore()
        self._stop = Event()

    def run(self) -> None:
        """The listener greenlet's body, until ``close()``."""
        while not self._stop.is_set():
            if not self._is_up() or not self._local.channels:
                self._stop.wait(self._poll)
                continue
            received: Received = []
            with self._lock:
                ok = self._read(received)
            self._deliver(received)
            if ok and self._block:
                gevent.sleep(0)  # let a subscribe() waiting for the connection in
            elif not received:
                self._stop.wait(self._poll)

    def _read(self, received: Received) -> bool:
        try:
            self._ensure_open()
            msg = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=self._block)
            while msg is not None and len(received) < 100:
                self._collect(msg, received)
                msg = self._pubsub.get_message(ignore_subscribe_messages=True)
        except Exception as exc:
            self._close_connection()
            self._on_error(exc)
            return False
        return True

    def subscribe(self, channel: str) -> None:
        """Subscribe (the callback is already registered locally) and wait for Redis to confirm,
        so a publish made right after this returns is not missed."""
        self._subscribe_and_confirm(self._prefix + channel)

    def resubscribe(self) -> None:
        """Redis came back: the old connection is dead. Subscribe again now, not at the
        listener's next turn, so messages published from here on are not missed."""
        self._stale = True
        if self._local.channels:
            self._subscribe_and_confirm(self._prefix + self._local.channels[-1])

    def _subscribe_and_confirm(self, name: str) -> None:
        received: Received = []
        with self._lock:
            try:
                if not self._ensure_open():
                    self._pubsub.subscribe(name)
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    msg = self._pubsub.get_message(timeout=max(deadline - time.monotonic(), 0.0))
                    if msg and msg["type"] == "subscribe" and msg["channel"] == name:
                        break
                    self._collect(msg, received)
            except Exception as exc:
                self._close_connection()
                self._on_error(exc)
        self._deliver(received)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._close_connection()

    def _ensure_open(self) -> bool:
        """Open the connection subscribed to every channel, unless open; True when it was (re)opened."""
        if self._pubsub is not None and not self._stale:
            return False
        self._close_connection()
        self._stale = False
        self._pubsub = self._client.pubsub()
        self._pubsub.subscribe(*[self._prefix + c for c in self._local.channels])
        return True

    def _close_connection(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):  # already broken: nothing left to release
                self._pubsub.close()
            self._pubsub = None

    def _collect(self, msg: dict[str, Any] | None, out: Received) -> None:
        if not msg or msg.get("type") != "message":
            return
        channel = msg["channel"][len(self._prefix):]
        try:
            message = orjson.loads(msg["data"])
        except orjson.JSONDecodeError:
            log.warning("state: ignored a message on %r that is not JSON", channel)
            return
        out.append((channel, message))

    def _deliver(self, received: Received) -> None:
        for channel, message in received:
            self._local.deliver(channel, message)
