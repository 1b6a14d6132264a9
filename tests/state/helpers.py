"""Helpers shared by the state tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent

from proxy.state import State

#: Fast background cycles, so tests wait milliseconds, not seconds.
FAST = {"flush_interval": 0.01, "refresh_interval": 0.01, "latency_refresh_interval": 0.01,
        "probe_interval": 0.02, "listen_poll": 0.005}

START = 1_699_999_990.0  # 10 s into a minute: no window ends during a test unless it moves the clock


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sync(*states: State) -> None:
    """Make every write visible to every reader: flush all, then refresh all."""
    for s in states:
        s.flush()
    for s in states:
        s.refresh()


def wait_for(predicate: Callable[[], object], timeout: float = 3.0) -> bool:
    """Yield to the background greenlets until ``predicate()`` holds (tests run unpatched)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        gevent.sleep(0.005)
    return bool(predicate())
