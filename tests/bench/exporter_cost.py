"""CPU cost per call of each observability part, measured in-process (no server, no network).

    python -m tests.bench.exporter_cost [--calls 20000]

What the benchmark's ``llmrelay-observe`` row loses against the plain row is this work, done in
the worker for every call: building the standard log record, counting it for Prometheus, and
turning it into what Langfuse and an OTLP collector are sent. Each part is timed alone on the
same synthetic call (the benchmark's request and answer), so a change to one shows here in
microseconds before it shows in req/s. Exporters are timed as they run, on whole batches (of
BATCH distinct records), and given per record; posting is not timed.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any


def make_ctx() -> Any:
    from proxy.context import RequestContext

    class Dep:
        id = "0123456789abcdef"
        model_name = "bench-model"
        upstream_model = "bench-model"
        provider = "openai"
        api_base = "http://127.0.0.1:9000/v1"

    ctx = RequestContext("chat", {"model": "bench-model", "max_tokens": 16,
                                  "messages": [{"role": "user", "content": "Say hello."}]})
    ctx.deployment = Dep()  # type: ignore[assignment]
    ctx.usage = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
    ctx.response = {"id": "chatcmpl-bench", "object": "chat.completion", "model": "bench-model",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "Hello! How can I help?"}}],
                    "usage": ctx.usage}
    ctx.caller = {"token": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
                  "key_alias": None, "team_id": None, "user_id": None}
    ctx.timings = {"auth": 0.00002, "environment": 0.000003, "drop_params": 0.000004,
                   "prompt_template": 0.000002, "route": 0.00001, "retry": 0.000003,
                   "callbacks": 0.00001, "upstream": 0.0004}
    ctx.started -= 0.0006  # the call outlasts its stages, as a served one does
    return ctx


#: records in a batch, as the exporters' queues hand them over under load
BATCH = 200


def per_call(fn: Callable[[], Any], calls: int, per: int = 1) -> float:
    """Microseconds per record of ``fn``, which handles ``per`` records (best of three runs)."""
    best = float("inf")
    runs = max(1, calls // per)
    for _ in range(3):
        started = time.process_time()  # CPU time: the batch loop's pauses wait on the hub
        for _ in range(runs):
            fn()
        best = min(best, time.process_time() - started)
    return best / (runs * per) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="llmrelay-prom-"))
    environ = {"LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk", "LANGFUSE_HOST": "http://127.0.0.1:9",
               "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}

    from proxy.observe import Telemetry
    from proxy.observe.exporters import Langfuse
    from proxy.observe.hub import Observer, Wanted
    from proxy.observe.otel import OTel
    from proxy.observe.prometheus import Metrics
    from proxy.observe.record import build_record, capture

    ctx = make_ctx()
    record = build_record(ctx, cost=0.0001)
    batch = [copy.deepcopy(record) | {"id": f"req-{i}"} for i in range(BATCH)]  # distinct objects, as queued
    metrics = Metrics()
    langfuse = Langfuse(environ)
    otel = OTel(environ)
    observer = Observer({name: Wanted(name, "callbacks", success=True, failure=True)
                         for name in ("langfuse", "prometheus", "otel")}, {}, Telemetry(), environ=environ)
    calls = []
    for i in range(BATCH):
        one = make_ctx()
        one.request_id = f"req-{i}"
        calls.append((capture(one), 0.0001))

    for exporter in observer.exporters:
        exporter.queue.put_many = len  # type: ignore[method-assign]  # encoded, then dropped: nothing is posted

    rows = [
        ("standard log record", lambda: build_record(ctx, cost=0.0001), 1),
        ("prometheus (per call)", lambda: metrics.observe(record), 1),
        ("langfuse ingestion batch (JSON)", lambda: langfuse.payload(batch), BATCH),
        ("otel spans (OTLP protobuf)", lambda: otel.payload(batch), BATCH),
    ]
    total = 0.0
    print("| part | µs per call |\n|---|---:|")
    for name, fn, per in rows:
        cost = per_call(fn, args.calls, per)
        total += cost
        print(f"| {name} | {cost:.1f} |")
    print(f"| **all** | **{total:.1f}** |")
    print(f"| the observer's batch loop: record, count, encode ({BATCH} calls a batch) "
          f"| {per_call(lambda: observer.publish(calls), args.calls, BATCH):.1f} |")
    langfuse.close(0)
    otel.close(0)
    observer.close(0)


if __name__ == "__main__":
    main()
