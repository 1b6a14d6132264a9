"""RedisState's local copy of the shared counters, and the two pipelines that keep it in step.

Writes on the request path land here, not in Redis: request and token counts per window, latency
samples and this process's in-flight counts wait in buffers until ``flush()`` sends them in one
MULTI. Reads are answered from views: the last value read from Redis plus every write this
process made since, flushed or not, updated in place on each write, so a read costs what
MemoryState's does. ``fetch()`` re-reads Redis in one pipeline and rebuilds a view as "value read
+ still unsent". Flushes and fetches never overlap, so a batch is either in the value read or
still unsent when a view is rebuilt: never in both, never in neither.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from gevent.lock import Semaphore
from redis.exceptions import NoScriptError

from proxy.state.redis_keys import INFLIGHT_LUA, RedisKeys
from proxy.state.redis_link import RedisLink


class RedisMirror:
    """What this process knows of the shared counters: unsent writes and the views reads return.

    RedisState reads the views directly and writes through the ``add_*`` methods (a count decided
    by Redis updates a view itself); only ``flush`` and ``fetch`` talk to Redis. ``INFLIGHT_LUA``
    must be among the link's ``pipeline_scripts``.
    """

    def __init__(self, link: RedisLink, keys: RedisKeys, *, samples: int, window_ttl_ms: int,
                 inflight_ttl: float, latency_ttl_ms: int) -> None:
        self._link, self._keys = link, keys
        self._client = link.client
        self._inflight_lua = self._client.register_script(INFLIGHT_LUA)
        self.samples = samples
        self._window_ttl_ms = window_ttl_ms
        self._inflight_ttl = inflight_ttl
        self._latency_ttl_ms = latency_ttl_ms

        # Writes not yet in Redis: (window, dep) -> count, dep -> samples (oldest first).
        self.pend_req: dict[tuple[int, str], int] = {}
        self.pend_tok: dict[tuple[int, str], int] = {}
        self.pend_lat: dict[str, list[float]] = {}
        self.own_inflight: dict[str, int] = {}
        self.inflight_dirty = False
        self._inflight_due = 0.0
        # What reads return (see the module docstring).
        self.usage_view: dict[str, list[int]] = {}  # dep -> [window, requests, tokens]
        self.latency_view: dict[str, deque[float]] = {}  # dep -> newest samples, oldest first
        self.remote_cool: dict[str, float] = {}
        self.others_inflight: dict[str, int] = {}
        self.usage_watch: dict[str, None] = {}  # ordered sets of ids read so far
        self.latency_watch: dict[str, None] = {}
        self._io_lock = Semaphore()

    def count(self, dep: str, bucket: int, requests: int, tokens: int) -> list[int] | None:
        """Add to the view of ``bucket``; None when the view has already moved to a later window."""
        view = self.usage_view.get(dep)
        if view is None or view[0] != bucket:
            if view is not None and view[0] > bucket:
                return None
            view = self.usage_view[dep] = [bucket, 0, 0]
        view[1] += requests
        view[2] += tokens
        return view

    def add_request(self, dep: str, bucket: int) -> None:
        key = (bucket, dep)
        self.pend_req[key] = self.pend_req.get(key, 0) + 1
        self.count(dep, bucket, 1, 0)

    def add_tokens(self, dep: str, bucket: int, tokens: int) -> None:
        key = (bucket, dep)
        self.pend_tok[key] = self.pend_tok.get(key, 0) + tokens
        self.count(dep, bucket, 0, tokens)

    def add_latency(self, dep: str, sample: float) -> None:
        pending = self.pend_lat.setdefault(dep, [])
        pending.append(sample)
        if len(pending) > self.samples:
            del pending[0]
        view = self.latency_view.get(dep)
        if view is None:
            view = self.latency_view[dep] = deque(maxlen=self.samples)
        view.append(sample)

    def add_inflight(self, dep: str, n: int) -> None:
        """Change this process's in-flight count (never below zero); sent on the next flush."""
        self.own_inflight[dep] = max(self.own_inflight.get(dep, 0) + n, 0)
        self.inflight_dirty = True

    def leave(self) -> None:
        """Set this process's in-flight counts to zero, so the next flush deletes its hash."""
        self.own_inflight = dict.fromkeys(self.own_inflight, 0)
        self.inflight_dirty = True

    def unsent(self) -> tuple[int, int]:
        """Requests and tokens counted here and not (yet) in Redis."""
        return sum(self.pend_req.values()), sum(self.pend_tok.values())

    # -- writes: buffers -> Redis ------------------------------------------------------------

    def flush(self, oldest: int) -> None:
        """Send buffered counters, latency samples and in-flight counts (one MULTI).

        Counts of windows before ``oldest`` have expired in Redis: they are dropped, never resent.
        """
        for pending in (self.pend_req, self.pend_tok):
            for key in [k for k in pending if k[0] < oldest]:
                del pending[key]
        if not self._link.up:
            return
        with self._io_lock:
            self._flush_now()

    def _flush_now(self) -> None:
        now = time.monotonic()
        own = self.own_inflight
        write_inflight = self.inflight_dirty or (now >= self._inflight_due and any(own.values()))
        req, tok, lat = self.pend_req, self.pend_tok, self.pend_lat
        if not (req or tok or lat or write_inflight):
            return
        self.pend_req, self.pend_tok, self.pend_lat = {}, {}, {}
        snapshot = dict(own)
        self.inflight_dirty = False
        pipe = self._client.pipeline(transaction=True)
        window_keys = set()
        for key_of, counts in ((self._keys.rpm, req), (self._keys.tpm, tok)):
            for (bucket, dep), n in counts.items():
                key = key_of(bucket)
                pipe.hincrby(key, dep, n)
                window_keys.add(key)
        for key in window_keys:
            pipe.pexpire(key, self._window_ttl_ms)
        for dep, samples in lat.items():
            key = self._keys.latency(dep)
            pipe.lpush(key, *samples)
            pipe.ltrim(key, 0, self.samples - 1)
            pipe.pexpire(key, self._latency_ttl_ms)
        if write_inflight:
            if any(snapshot.values()):
                pipe.hset(self._keys.own_inflight, mapping=snapshot)
                pipe.pexpire(self._keys.own_inflight, int(self._inflight_ttl * 1000))
                pipe.sadd(self._keys.inflight_procs, self._keys.proc)
            else:
                pipe.delete(self._keys.own_inflight)
                pipe.srem(self._keys.inflight_procs, self._keys.proc)
        try:
            pipe.execute()
        except Exception as exc:
            self._unflush(req, tok, lat)
            self.inflight_dirty = self.inflight_dirty or write_inflight
            self._link.failed(exc)
            return
        if write_inflight:
            self._inflight_due = now + self._inflight_ttl / 3
            if not any(snapshot.values()):  # the hash is gone: stop carrying zeros
                for dep in [d for d, n in own.items() if n == 0]:
                    del own[dep]

    def _unflush(self, req: dict[tuple[int, str], int], tok: dict[tuple[int, str], int],
                 lat: dict[str, list[float]]) -> None:
        """Put a batch that did not reach Redis back in front of what was buffered meanwhile."""
        for pending, batch in ((self.pend_req, req), (self.pend_tok, tok)):
            for key, n in batch.items():
                pending[key] = pending.get(key, 0) + n
        for dep, samples in lat.items():
            self.pend_lat[dep] = [*samples, *self.pend_lat.get(dep, ())][-self.samples:]

    # -- reads: Redis -> views ---------------------------------------------------------------

    def fetch(self, bucket: int, now: float, usage_deps: list[str], latency_deps: list[str],
              everything: bool = False) -> None:
        """Rebuild the views of ``usage_deps`` and ``latency_deps`` (one pipeline); with
        ``everything``, also other processes' in-flight counts and the running cooldowns."""
        pipe = self._client.pipeline(transaction=False)
        if usage_deps:
            pipe.hmget(self._keys.rpm(bucket), usage_deps)
            pipe.hmget(self._keys.tpm(bucket), usage_deps)
        for dep in latency_deps:
            pipe.lrange(self._keys.latency(dep), 0, self.samples - 1)
        if everything:
            keys = self._keys
            pipe.evalsha(self._inflight_lua.sha, 1, keys.inflight_procs, keys.inflight_prefix, keys.proc)
            pipe.zrangebyscore(keys.cooldowns, f"({now!r}", "+inf", withscores=True)
            pipe.zremrangebyscore(keys.cooldowns, "-inf", repr(now))
        with self._io_lock:
            results = self._link.call(lambda: pipe.execute(raise_on_error=False), [])
            self._apply(results, bucket, usage_deps, latency_deps, everything)

    def _apply(self, results: list[Any], bucket: int, usage_deps: list[str], latency_deps: list[str],
               everything: bool) -> None:
        errors = [r for r in results if isinstance(r, Exception) and not isinstance(r, NoScriptError)]
        if not results or errors:
            if errors:
                self._link.failed(errors[0])
            return
        it = iter(results)
        if usage_deps:
            requests, tokens = next(it), next(it)
            for dep, r, t in zip(usage_deps, requests, tokens, strict=True):
                view = self.usage_view.get(dep)
                if view is None or view[0] <= bucket:
                    key = (bucket, dep)
                    self.usage_view[dep] = [bucket, int(r or 0) + self.pend_req.get(key, 0),
                                            int(t or 0) + self.pend_tok.get(key, 0)]
        for dep in latency_deps:
            view = self.latency_view[dep] = deque(map(float, reversed(next(it))), maxlen=self.samples)
            view.extend(self.pend_lat.get(dep, ()))
        if everything:
            flat = next(it)
            if isinstance(flat, NoScriptError):  # SCRIPT FLUSH or a new server: load it for next time
                self._link.call(self._link.load_scripts)
            else:
                self.others_inflight = {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}
            self.remote_cool = {dep: float(until) for dep, until in next(it)}
