"""Cost per call of the state backends: ``python -m tests.state.bench_state [REDIS_URL]``.

Not a test. Prints microseconds per call for the request-path operations: a limited ``reserve``
(one Redis round trip), the batched path (unlimited ``reserve`` + ``add_tokens`` + ``usage`` of a
5-deployment group) and the background ``flush``/``refresh`` that carry it, next to a bare PING.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable

import redis

from proxy.state import MemoryState, RedisState, State

GROUP = [f"dep-{i}" for i in range(5)]


def per_call_us(fn: Callable[[], object], n: int) -> float:
    for _ in range(min(n, 1000)):  # warm up: connections, script cache
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def batched_path(state: State) -> Callable[[], object]:
    def call() -> object:
        state.usage(GROUP)
        state.reserve("dep-1", None)
        state.inflight_incr("dep-1")
        state.inflight_decr("dep-1")
        state.record_latency("dep-1", 0.01)
        return state.add_tokens("dep-1", 42)
    return call


def main(url: str) -> None:
    prefix = f"llmrelay-bench:{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(url, protocol=2)
    mem = MemoryState()
    state = RedisState(url, key_prefix=prefix, background=False)
    try:
        rows = [
            ("redis PING (bare round trip)", per_call_us(client.ping, 20_000)),
            ("redis reserve(dep, rpm_limit=10**9)", per_call_us(lambda: state.reserve("lim", 10**9), 20_000)),
            ("memory reserve(dep, rpm_limit=10**9)", per_call_us(lambda: mem.reserve("lim", 10**9), 200_000)),
            ("redis batched path (see docstring)", per_call_us(batched_path(state), 200_000)),
            ("memory batched path", per_call_us(batched_path(mem), 200_000)),
            ("redis usage(5 deps) alone", per_call_us(lambda: state.usage(GROUP), 200_000)),
        ]

        def flush_after_100_calls() -> None:
            call = batched_path(state)
            for _ in range(100):
                call()
            state.flush()

        rows.append(("redis 100 batched calls + flush()", per_call_us(flush_after_100_calls, 2_000)))
        rows.append(("redis refresh() (background, per tick)", per_call_us(state.refresh, 5_000)))
        for name, us in rows:
            print(f"{name:45s} {us:9.2f} µs")
    finally:
        state.close()
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0")
