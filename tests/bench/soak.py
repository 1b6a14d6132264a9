"""Memory soak: llmrelay's worker RSS after 10k requests and after 200k, which must stay flat.

    python -m tests.bench.soak                    # 10k warm-up, then up to 200k requests
    python -m tests.bench.soak --total 50000      # a shorter look
    python -m tests.bench.soak --exporters        # with langfuse + prometheus + otel on

One gevent worker with the benchmark config (full default pipeline) in front of the benchmark's
mock upstream; wrk drives it at 16 connections in slices and the worker's RSS is read from
/proc after each slice. The budget: RSS at the end within 10% of RSS after the first 10k.

With ``--exporters`` the worker runs the benchmark's exporters config and posts every call's
Langfuse events and OTLP spans to the mock upstream: their queues are bounded, so memory must
stay as flat.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.loadgen import ensure_wrk, run_wrk
from tests.bench.procs import free_port, port_open
from tests.install import llmrelay_command

ROOT = Path(__file__).resolve().parents[2]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"expected one worker under {master}, found {children}")
    return int(children[0])


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not port_open("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {port}")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=10_000, help="requests before the first reading")
    parser.add_argument("--total", type=int, default=200_000, help="requests in all")
    parser.add_argument("--slice", type=float, default=10.0, help="seconds of wrk between readings")
    parser.add_argument("--exporters", action="store_true", help="langfuse + prometheus + otel on")
    args = parser.parse_args(argv)
    wrk = ensure_wrk()
    upstream_port, proxy_port = free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="llmrelay-soak-"))
    env = dict(os.environ, BENCH_UPSTREAM_BASE=f"http://127.0.0.1:{upstream_port}/v1",
               BENCH_DATABASE_PATH=str(tmp / "soak.db"), LLMRELAY_ACCESS_LOG="off")
    upstream = subprocess.Popen([sys.executable, "-m", "tests.bench.upstream", "--port", str(upstream_port)],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # the installed package, as users run it (tests/install.py), from a folder outside the checkout
    proxy_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    proxy_env["LLMRELAY_STATE_DIR"] = str(tmp / "state")
    config = "bench_config_observe.yaml" if args.exporters else "bench_config.yaml"
    if args.exporters:  # the mock upstream takes the batches in (upstream.py SINK_PATHS)
        sink = f"http://127.0.0.1:{upstream_port}"
        proxy_env.update(LANGFUSE_HOST=sink, LANGFUSE_PUBLIC_KEY="pk-soak", LANGFUSE_SECRET_KEY="sk-soak",
                         OTEL_EXPORTER_OTLP_ENDPOINT=sink)
    proxy = subprocess.Popen([*llmrelay_command(), "--config", str(ROOT / "tests/bench" / config),
                              "--host", "127.0.0.1", "--port", str(proxy_port), "--num_workers", "1"],
                             cwd=tmp, env=proxy_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(upstream_port)
        wait_port(proxy_port)
        time.sleep(1.0)
        pid = worker_pid(proxy.pid)
        done = 0
        baseline = None
        print(f"{'requests':>10} {'rss MiB':>9} {'vs 10k':>8}")
        while done < args.total:
            result = run_wrk(wrk, proxy_port, 16, args.slice, None)
            if result.errors:
                raise RuntimeError(f"errors under load: {result.errors}")
            done += result.requests
            rss = rss_kib(pid)
            if baseline is None and done >= args.warmup:
                baseline = rss
            ratio = f"{(rss / baseline - 1) * 100:+.1f}%" if baseline else "warm-up"
            print(f"{done:>10,} {rss / 1024:>9.1f} {ratio:>8}", flush=True)
        growth = rss / baseline - 1 if baseline else 0.0
        verdict = "flat" if growth <= 0.10 else "GROWING"
        print(f"RSS after {done:,} requests is {growth * 100:+.1f}% against the first {args.warmup:,}: {verdict}")
        return 0 if growth <= 0.10 else 1
    finally:
        for proc in (proxy, upstream):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    raise SystemExit(main())
