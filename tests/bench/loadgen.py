"""Load generation: wrk for throughput and 1-connection latency, a small client for streams.

wrk does the non-streaming work because a Python client would cost more CPU per request
than the targets it measures. Streams need the time to the first chunk, which wrk cannot
report, so a persistent ``http.client`` connection times those; its own overhead is the
same for the baseline and every target and cancels out of the "added" figures.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

WRK_SCRIPT = Path(__file__).with_name("wrk_post.lua")
CHAT_PATH = "/v1/chat/completions"
API_KEY = "sk-bench-master"
CHAT_BODY = {
    "model": "bench-model",
    "messages": [{"role": "user", "content": "Say hello."}],
    "max_tokens": 16,
}
INSTALL_WRK = "apt-get update && apt-get install -y wrk"


class LoadError(RuntimeError):
    """The load generator could not run or produced no usable numbers."""


@dataclass
class WrkResult:
    """One wrk run; latencies in milliseconds."""

    connections: int
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class StreamResult:
    """Sequential streamed calls; ``ttfc`` is request sent to first body chunk received."""

    requests: int
    ttfc_p50_ms: float
    ttfc_p99_ms: float
    total_p50_ms: float
    errors: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def ensure_wrk() -> str:
    """Path of wrk; installs it with apt-get when running as root, else says how."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"wrk not found; running: {INSTALL_WRK}", file=sys.stderr, flush=True)
        done = subprocess.run(["sh", "-c", INSTALL_WRK], stdout=subprocess.DEVNULL, check=False)
        found = shutil.which("wrk")
        if done.returncode == 0 and found:
            return found
    raise LoadError(f"wrk is required; install it with: sudo sh -c '{INSTALL_WRK}'")


def body_bytes(stream: bool = False) -> bytes:
    body = dict(CHAT_BODY, stream=True) if stream else CHAT_BODY
    return json.dumps(body, separators=(",", ":")).encode()


def run_wrk(
    wrk: str,
    port: int,
    connections: int,
    duration_s: float,
    cpus: str | None,
    path: str = CHAT_PATH,
    api_key: str = API_KEY,
) -> WrkResult:
    """One wrk run (one thread) against 127.0.0.1:port, optionally pinned to ``cpus``."""
    cmd = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        f"http://127.0.0.1:{port}{path}",
    ]
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    env = dict(os.environ, BENCH_BODY=body_bytes().decode(), BENCH_API_KEY=api_key)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=duration_s + 60, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise LoadError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}")
    raw = json.loads(line.split(" ", 1)[1])
    duration = raw["duration_us"] / 1e6
    names = ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    return WrkResult(
        connections=connections,
        requests=raw["requests"],
        duration_s=round(duration, 3),
        rps=round(raw["requests"] / duration, 1) if duration else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        mean_ms=round(raw["mean_us"] / 1000, 4),
        max_ms=raw["max_us"] / 1000,
        errors={name: int(raw[name]) for name in names if raw[name]},
    )


def generate_key(port: int, body: dict, master: str = API_KEY) -> str:
    """A virtual key from the target's ``/key/generate`` (LiteLLM's route), made with the master key."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/key/generate", body=json.dumps(body),
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {master}"})
        resp = conn.getresponse()
        data = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise LoadError(f"/key/generate on port {port} failed: {exc}") from None
    finally:
        conn.close()
    if resp.status != 200:
        raise LoadError(f"/key/generate on port {port} answered {resp.status}: {data[:200]!r}")
    return json.loads(data)["key"]


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile, the definition wrk uses too."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def run_stream(port: int, requests: int, warmup: int, path: str = CHAT_PATH, api_key: str = API_KEY) -> StreamResult:
    """Sequential streamed chat calls over one keep-alive connection."""
    body = body_bytes(stream=True)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    ttfc: list[float] = []
    totals: list[float] = []
    errors = 0
    try:
        for i in range(warmup + requests):
            start = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                first = resp.read1(65536)
                first_at = time.perf_counter()
                rest = resp.read()
                end = time.perf_counter()
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            ok = resp.status == 200 and first.startswith(b"data:") and b"[DONE]" in first + rest
            if not ok:
                errors += 1
            elif i >= warmup:
                ttfc.append(first_at - start)
                totals.append(end - start)
    finally:
        conn.close()
    if not ttfc:
        raise LoadError(f"no successful streamed call on port {port} ({errors} errors)")
    return StreamResult(
        requests=len(ttfc),
        ttfc_p50_ms=round(percentile(ttfc, 50) * 1000, 3),
        ttfc_p99_ms=round(percentile(ttfc, 99) * 1000, 3),
        total_p50_ms=round(percentile(totals, 50) * 1000, 3),
        errors=errors,
    )
