"""Measure the store inside a gevent-patched process, as gunicorn's worker runs it.

    python -m tests.store.bench_store

Prints per-call costs (models_version poll, get, add, update, SpendWriter.record, flush per row)
with writes inline and offloaded to gevent's threadpool, and the longest the hub went without
running another greenlet while a write waits for a lock held by another process. Not collected
by pytest; the numbers quoted in ``proxy/store/db.py`` come from here.
"""

from gevent import monkey

monkey.patch_all()

import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402

from proxy.store import ModelStore, SpendWriter, Store  # noqa: E402

HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def per_call_us(fn: Callable[[], Any], n: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - started) / n)
    return best * 1e6


def max_hub_gap_ms(action: Callable[[], Any]) -> tuple[float, float]:
    """(duration of ``action`` in ms, longest gap between ticks of a 1 ms ticker greenlet)."""
    gaps: list[float] = []
    running = True

    def ticker() -> None:
        last = time.perf_counter()
        while running:
            gevent.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = gevent.spawn(ticker)
    gevent.sleep(0.01)
    gaps.clear()
    started = time.perf_counter()
    action()
    took = time.perf_counter() - started
    gevent.sleep(0.01)
    running = False
    tick.join()
    return took * 1e3, max(gaps) * 1e3


def spend_row(i: int, tag: str) -> dict[str, Any]:
    return {
        "request_id": f"{tag}-{i}", "model": "gpt-4o", "deployment_id": "d1", "provider": "openai",
        "prompt_tokens": 10, "completion_tokens": 20, "spend": 0.0001, "status": 200,
        "latency_ms": 12.5, "metadata": {"user_api_key_alias": "team-a", "tags": ["x"]},
    }


def measure(path: Path, offload: bool) -> None:
    """One round of every measurement, with writes inline or offloaded."""
    params = {"model": "openai/gpt-4o", "api_key": "os.environ/OPENAI_API_KEY"}
    store = Store(path, offload=offload)
    models = ModelStore(store)
    ids = [models.add(f"m{i}", params)["id"] for i in range(20)]
    tag = f"writes {'offloaded' if offload else 'inline'}"
    rpm = iter(range(10**9))
    seq = iter(range(10**9))
    writer = SpendWriter(store, flush_interval=3600, max_batch=10**6)

    def report(what: str, value: float, unit: str) -> None:
        print(f"{tag:16s} {what:18s} {value:8.1f} {unit}")

    report("models_version()", per_call_us(models.models_version, 20000), "us")
    report("get()", per_call_us(lambda: models.get(ids[0]), 5000), "us")
    report("add()", per_call_us(lambda: models.add("x", params), 500), "us")
    def update() -> None:
        models.update(ids[0], litellm_params={"rpm": next(rpm)})

    report("update()", per_call_us(update, 500), "us")
    report("record()", per_call_us(lambda: writer.record(spend_row(next(seq), tag)), 5000), "us")
    queued = len(writer)
    started = time.perf_counter()
    writer.flush()
    report("flush", (time.perf_counter() - started) / queued * 1e6, "us/row")
    for i in range(500):
        writer.record(spend_row(i, f"gap-{tag}"))
    took, gap = max_hub_gap_ms(writer.flush)
    report("flush 500 rows", took, f"ms, longest hub stall {gap:.1f} ms")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path), "0.3"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    holder.stdout.readline()
    took, gap = max_hub_gap_ms(lambda: models.add("contended", params))
    holder.wait()
    report("add() vs 300ms lock", took, f"ms, longest hub stall {gap:.1f} ms")
    writer.close()
    store.close()


def main() -> None:
    path = Path(tempfile.mkdtemp()) / "bench.db"
    for offload in (False, True):
        measure(path, offload)
    pool = gevent.get_hub().threadpool
    print(f"threadpool hand-off (apply of a no-op): {per_call_us(lambda: pool.apply(int), 2000):.1f} us")


if __name__ == "__main__":
    main()
