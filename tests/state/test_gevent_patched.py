"""RedisState in a monkey-patched process, as in a gunicorn gevent worker: many greenlets at once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
from gevent import monkey
monkey.patch_all()

import json, sys, time
import gevent
from gevent.pool import Pool
from proxy.state import RedisState

url, prefix = sys.argv[1], sys.argv[2]
opts = dict(key_prefix=prefix, flush_interval=0.01, refresh_interval=0.01)
a, b = RedisState(url, **opts), RedisState(url, **opts)
got = []
a.subscribe("registry", got.append)

allowed = Pool(50).map(lambda i: (a if i % 2 else b).reserve("limited", 20), range(200))

def call(i):
    s = a if i % 2 else b
    s.reserve("open", None)
    s.inflight_incr("open")
    gevent.sleep(0.05)
    s.add_tokens("open", 3)
    s.inflight_decr("open")

pool = Pool(100)
for i in range(300):
    pool.spawn(call, i)
busy = 0
while pool.free_count() < pool.size:  # sample while the calls run
    busy = max(busy, a.inflight(["open"])["open"], b.inflight(["open"])["open"])
    gevent.sleep(0.005)
pool.join()
b.publish("registry", {"n": 1})
deadline = time.monotonic() + 5
while time.monotonic() < deadline:
    done = a.usage(["open"])["open"] == b.usage(["open"])["open"] == (300, 900)
    if done and got and a.inflight(["open"])["open"] == 0:
        break
    gevent.sleep(0.01)
result = {"allowed": allowed.count(True), "busy": busy,
          "usage": [a.usage(["open"])["open"], b.usage(["open"])["open"]],
          "inflight": a.inflight(["open"])["open"], "got": got}
a.close()
b.close()
print(json.dumps(result))
"""


def test_many_greenlets_in_a_patched_process(redis_url: str, key_prefix: str) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, redis_url, key_prefix], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["allowed"] == 20
    assert result["usage"] == [[300, 900], [300, 900]]  # each call counted once, seen by both
    assert result["busy"] > 50  # each instance runs 50 at a time: it saw the other's too
    assert result["inflight"] == 0
    assert result["got"] == [{"n": 1}]
