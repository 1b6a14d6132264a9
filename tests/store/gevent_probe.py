"""Run by test_db in a child process: the store inside a gevent-patched process, as in gunicorn.

``python -m tests.store.gevent_probe TARGET [--early-import] [--interrupt]``; TARGET is a SQLite
path or a ``postgresql://`` URL. A ticker greenlet records the longest the hub went without
running it while:

- another connection holds the write lock for 300 ms while a greenlet writes;
- (PostgreSQL) one greenlet runs ``SELECT pg_sleep(0.5)``, then two run ``pg_sleep(0.3)`` at once;
- a SpendWriter flushes 300 rows in the background.

``--early-import`` imports psycopg before patching (the store must still wait cooperatively);
``--interrupt`` instead times a write out with ``gevent.Timeout`` while it waits for a lock, then
checks the store still works. Prints one JSON line.
"""

import sys

if "--early-import" in sys.argv:
    import psycopg  # noqa: F401 - on purpose, before patching

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sqlite3  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402

from proxy.store import ModelStore, SpendWriter, connect, is_database_url  # noqa: E402

TICK = 0.01


class Ticker:
    """A greenlet that wants to run every ``TICK``; the longest gap is how long the hub stalled."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self.running = True
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        last = time.perf_counter()
        while self.running:
            gevent.sleep(TICK)
            now = time.perf_counter()
            self.gaps.append(now - last)
            last = now

    def stop(self) -> float:
        self.running = False
        self.greenlet.join()
        return max(self.gaps) * 1000


def lock_holder(target: str) -> Any:
    """A second connection holding what a write needs; ``.execute("COMMIT")`` lets go."""
    if is_database_url(target):
        import psycopg

        conn = psycopg.connect(target, autocommit=True)
        conn.execute("BEGIN")
        conn.execute("LOCK TABLE models, store_meta, spend_logs IN EXCLUSIVE MODE")
        return conn
    conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def timed(fn: Any, *args: Any) -> float:
    started = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - started) * 1000


def probe(target: str) -> dict[str, Any]:
    pg = is_database_url(target)
    store = connect(target, timeout=5.0)
    models = ModelStore(store)
    out: dict[str, Any] = {"dialect": store.dialect, "offload": getattr(store, "offload", None)}
    if pg:
        import psycopg.waiting

        out["wait_func"] = psycopg.waiting.wait.__name__
        store.query_value("SELECT 1")  # connected before the ticker starts
    ticker = Ticker()

    holder = lock_holder(target)
    gevent.spawn_later(0.3, holder.execute, "COMMIT")
    gevent.sleep(0.01)
    out["waited_ms"] = timed(models.add, "probe", {"model": "openai/probe"})

    if pg:
        out["sleep_ms"] = timed(store.query_value, "SELECT pg_sleep(0.5)")
        pair = [gevent.spawn(store.query_value, "SELECT pg_sleep(0.3)") for _ in range(2)]
        out["two_sleeps_ms"] = timed(gevent.joinall, pair, None, True)

    writer = SpendWriter(store, flush_interval=0.05, max_batch=100)
    for i in range(300):
        writer.record({"request_id": f"probe-{i}", "model": "probe", "spend": 0.01})
    gevent.sleep(0.3)  # the background greenlet flushes on its own
    out["spend_rows"] = store.query_value("SELECT COUNT(*) FROM spend_logs")
    writer.close()
    out["max_hub_gap_ms"] = ticker.stop()
    holder.close()
    store.close()
    return out


def interrupt(target: str) -> dict[str, Any]:
    """A write killed by a gevent.Timeout while it waits for a lock, on a one-connection pool."""
    store = connect(target, pool_limit=1, timeout=2.0)
    models = ModelStore(store)
    holder = lock_holder(target)
    out: dict[str, Any] = {"dialect": store.dialect, "timed_out": False}
    try:
        with gevent.Timeout(0.1):
            models.add("late", {"model": "openai/late"}, model_id="late")
    except gevent.Timeout:
        out["timed_out"] = True
    holder.execute("COMMIT")
    holder.close()
    # The pool is not left short: the only connection comes back or is replaced.
    models.add("after", {"model": "openai/after"}, model_id="after")
    gevent.sleep(0.2)
    out["models"] = sorted(m["id"] for m in models.list())
    out["connections_open"] = store.connections_open
    store.close()
    return out


if __name__ == "__main__":
    target = sys.argv[1]
    result = interrupt(target) if "--interrupt" in sys.argv else probe(target)
    print(json.dumps(result))
