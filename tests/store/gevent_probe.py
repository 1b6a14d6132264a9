"""Run by test_db in a child process: the store inside a gevent-patched process, as in gunicorn.

Holds the write lock from a second connection for 300 ms while a greenlet writes, and records the
longest the hub went without running a ticker greenlet. Prints one JSON line.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sqlite3  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from proxy.store import ModelStore, SpendWriter, Store  # noqa: E402


def main(path: str) -> None:
    store = Store(path, timeout=5.0)
    models = ModelStore(store)
    gaps: list[float] = []
    running = True

    def ticker() -> None:
        last = time.perf_counter()
        while running:
            gevent.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = gevent.spawn(ticker)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    gevent.spawn_later(0.3, holder.execute, "COMMIT")
    gevent.sleep(0.01)
    started = time.perf_counter()
    models.add("probe", {"model": "openai/probe"})
    waited = time.perf_counter() - started

    writer = SpendWriter(store, flush_interval=0.05, max_batch=100)
    for i in range(300):
        writer.record({"request_id": f"probe-{i}", "model": "probe", "spend": 0.01})
    gevent.sleep(0.3)  # the background greenlet flushes on its own
    spend_rows = store.query_value("SELECT COUNT(*) FROM spend_logs")
    writer.close()
    running = False
    tick.join()
    print(
        json.dumps(
            {
                "offload": store.offload,
                "waited_ms": waited * 1000,
                "max_hub_gap_ms": max(gaps) * 1000,
                "spend_rows": spend_rows,
            }
        )
    )
    store.close()


if __name__ == "__main__":
    main(sys.argv[1])
