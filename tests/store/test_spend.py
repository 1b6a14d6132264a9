"""SpendWriter: batching, flush on close and on SIGTERM, a full queue, the query helpers."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.store import SpendWriter, StoreAPI, StoreBusy
from tests.store.conftest import Backend

REPO = Path(__file__).resolve().parents[2]


def spend_row(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "request_id": f"req-{i}",
        "model": "gpt-4o",
        "deployment_id": "dep-1",
        "provider": "openai",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "spend": 0.25,
        "status": 200,
        "latency_ms": 12.5,
        "metadata": {"tags": ["a"], "i": i},
        **extra,
    }


def count(store: StoreAPI) -> int:
    return int(store.query_value("SELECT COUNT(*) FROM spend_logs"))


def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


class WriteSpy:
    """Wraps ``store.write`` to count transactions, or to fail them on demand."""

    def __init__(self, store: StoreAPI, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.failing = False
        self.rows_written: list[int] = []
        self._store = store
        self._write = store.write
        monkeypatch.setattr(store, "write", self)

    def __call__(self, fn: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.failing:
            raise StoreBusy("database is locked (test)")
        before = count(self._store)
        result = self._write(fn, **kwargs)
        self.rows_written.append(count(self._store) - before)
        return result


def test_rows_are_written_in_batches(store: StoreAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = WriteSpy(store, monkeypatch)
    writer = SpendWriter(store, flush_interval=60, max_batch=10)
    for i in range(9):
        writer.record(spend_row(i))
    assert len(writer) == 9 and count(store) == 0  # record() does no I/O
    for i in range(9, 25):
        writer.record(spend_row(i))
    # Reaching max_batch wakes the background worker without waiting for flush_interval.
    assert wait_for(lambda: count(store) >= 20)
    writer.close()
    assert count(store) == 25 and writer.written == 25
    assert len(spy.rows_written) >= 3 and max(spy.rows_written) == 10  # one transaction per batch


def test_background_flush_after_the_interval(store: StoreAPI) -> None:
    writer = SpendWriter(store, flush_interval=0.05)
    writer.record(spend_row(1))
    assert wait_for(lambda: count(store) == 1, timeout=2)
    writer.close()


def test_close_writes_everything_and_stops(store: StoreAPI) -> None:
    writer = SpendWriter(store, flush_interval=60, max_batch=100)
    for i in range(1234):
        writer.record(spend_row(i))
    writer.close()
    assert count(store) == 1234
    assert not writer._worker.is_alive()
    writer.close()  # idempotent
    writer.record(spend_row(5000))  # late row after close: written directly
    assert count(store) == 1235


def test_full_queue_flushes_synchronously_instead_of_dropping(store: StoreAPI) -> None:
    writer = SpendWriter(store, flush_interval=60, max_batch=100, max_queue=5)
    for i in range(7):
        writer.record(spend_row(i))
    assert writer.dropped == 0
    assert count(store) == 5 and len(writer) == 2
    writer.close()
    assert count(store) == 7


def test_full_queue_with_a_failing_database_counts_and_logs_drops(
    store: StoreAPI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spy = WriteSpy(store, monkeypatch)
    writer = SpendWriter(store, flush_interval=60, max_batch=100, max_queue=5)
    spy.failing = True
    with caplog.at_level(logging.ERROR, logger="proxy.store.spend"):
        for i in range(8):
            writer.record(spend_row(i))
    assert writer.dropped == 3
    assert spy.calls == 1  # one synchronous attempt, not one per refused row
    assert "dropped 1 rows" in caplog.text
    spy.failing = False
    writer.close()
    # The oldest rows were kept; the refused newest ones are the ones missing.
    assert sorted(r["request_id"] for r in writer.spend_logs()) == [f"req-{i}" for i in range(5)]


def test_failed_flush_puts_rows_back(store: StoreAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = WriteSpy(store, monkeypatch)
    writer = SpendWriter(store, flush_interval=60, max_batch=2)
    for i in range(5):
        writer.record(spend_row(i))
    spy.failing = True
    with pytest.raises(StoreBusy):
        writer.flush()
    assert len(writer) == 5
    spy.failing = False
    assert writer.flush() == 5
    writer.close()


def test_row_checks_and_defaults(store: StoreAPI) -> None:
    writer = SpendWriter(store, flush_interval=60)
    with pytest.raises(ValueError, match="unknown"):
        writer.record({"request_id": "x", "cost": 1})
    with pytest.raises(ValueError, match="request_id"):
        writer.record({"model": "m"})
    writer.record({"request_id": "minimal"})
    writer.record(spend_row(1, api_key_hash="abc", user="u1"))
    writer.record(spend_row(1, spend=99.0))  # same request_id again: ignored
    writer.close()
    minimal = writer.spend_logs(request_id="minimal")[0]
    assert minimal["total_tokens"] == 0 and minimal["metadata"] == {} and minimal["created_at"] > 0
    full = writer.spend_logs(request_id="req-1")[0]
    assert full["total_tokens"] == 15 and full["spend"] == 0.25
    assert (full["api_key_hash"], full["user"], full["status"]) == ("abc", "u1", 200)
    assert full["metadata"] == {"tags": ["a"], "i": 1}


def test_query_helpers(store: StoreAPI) -> None:
    writer = SpendWriter(store, flush_interval=60)
    for i in range(5):
        writer.record(spend_row(i, created_at=1000.0 + i))
    writer.record(spend_row(9, model="claude", spend=1.5, created_at=2000.0))
    assert writer.total_spend() == 0.0  # only flushed rows count
    writer.flush()
    assert writer.total_spend() == pytest.approx(5 * 0.25 + 1.5)
    assert writer.total_spend("gpt-4o") == pytest.approx(1.25)
    assert writer.total_spend("nothing") == 0.0
    assert [r["request_id"] for r in writer.spend_logs(limit=3)] == ["req-9", "req-4", "req-3"]
    assert writer.spend_logs(request_id="absent") == []
    writer.close()


def test_sigterm_loses_nothing(backend: Backend) -> None:
    """gunicorn turns SIGTERM into SystemExit in the worker; the atexit hook writes the queue."""
    script = textwrap.dedent(
        f"""
        import signal, sys, time
        from proxy.store import SpendWriter, connect
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        writer = SpendWriter(connect({backend.target!r}), flush_interval=60)
        for i in range(300):
            writer.record({{"request_id": f"r{{i}}", "model": "m", "spend": 0.01}})
        print("ready", flush=True)
        time.sleep(30)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGTERM)
    assert child.wait(10) == 0
    assert count(backend.open()) == 300


def test_request_ids_are_unique_and_follow_time() -> None:
    """Request ids (the spend log's primary key) sort in the order calls start, so its index grows
    at the end like a log; ids made in the same millisecond still differ."""
    from proxy.context import RequestContext, new_request_id

    now = time.time()
    same_instant = {new_request_id(now) for _ in range(10_000)}
    later = new_request_id(now + 0.002)
    assert len(same_instant) == 10_000
    assert all(len(i) == 28 and i.startswith("req-") and int(i[4:], 16) >= 0 for i in same_instant)
    assert max(same_instant) < later
    first, second = RequestContext("chat", {}), RequestContext("chat", {})
    assert first.request_id[:15] <= second.request_id[:15]  # the millisecond part never goes back
    assert RequestContext("chat", {}, request_id="call-1").request_id == "call-1"  # a client's id is kept
