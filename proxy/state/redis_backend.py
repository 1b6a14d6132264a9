"""Redis-backed state: limits, cooldowns and counters shared by every worker and instance.

Cost on the request path, by design:

- ``reserve()`` for a deployment with an rpm limit: one round trip (a Lua check-and-increment),
  so the limit holds exactly across the fleet. Everything else on the request path is local:
  unlimited ``reserve()``, ``add_tokens()``, ``inflight_incr/decr()`` and ``record_latency()``
  are buffered and sent by a background greenlet every ``flush_interval`` (one MULTI pipeline).
- Reads (``usage``, ``inflight``, ``latencies``, ``cooldowns``) come from a local cache that a
  background greenlet re-reads every ``refresh_interval`` (latencies every
  ``latency_refresh_interval``). A value written by another process is seen here after at most
  its flush delay plus our refresh delay (~0.2 s with the defaults); this process's own writes,
  flushed or not, are always included. The first read of a deployment fetches it at once.
- ``record_failure()``, ``clear_cooldown()``, ``publish()`` and the hash/version calls are rare
  and go straight to Redis (one round trip each).

In-flight counts: each process owns one hash ``inflight:<process id>`` holding its own counts,
rewritten when they change (batched) and at least every third of ``inflight_ttl``, which is its
TTL. A crashed worker's counts therefore vanish within ``inflight_ttl``; readers sum the live
hashes in one Lua call.

Outage: any connection error marks Redis down, with one warning. While down nothing waits on the
network: request and token counts keep accumulating locally on top of the last values read (so an
rpm limit keeps holding per process, and the counts are sent when Redis is back), latencies use
the last shared samples plus local ones, known cooldowns keep running and new ones are decided on
a MemoryState, pub/sub delivers to this process's callbacks only, other processes' in-flight counts
count as 0, and the hash/version calls answer from the last values seen (writes made meanwhile
stay local). A background probe PINGs every ``probe_interval``; when Redis answers it logs one
info line, resubscribes and resumes. Messages others published during the outage are not replayed:
a subscriber that must not miss a change should also compare ``get_version()``.

Windows are computed from each host's wall clock; keep hosts NTP-synced. Key layout (all under
``key_prefix``): ``rpm:<window>``/``tpm:<window>``/``fails:<window>`` hashes of deployment id ->
count, ``cooldowns`` sorted set (score = end time), ``inflight:procs`` set and
``inflight:<process>`` hashes, ``latency:<dep>`` lists (newest first), ``hash:<name>``,
``version:<name>``; pub/sub channels are ``<key_prefix><channel>``. The Lua scripts read keys
they compute, so this backend expects a single Redis, not a cluster.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import orjson
import redis
from gevent import monkey
from gevent.event import Event
from gevent.lock import Semaphore
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from proxy.state.base import LATENCY_SAMPLES, WINDOW_SECONDS, Callback, Clock, Message, State
from proxy.state.memory import MemoryState
from proxy.state.redis_pubsub import RedisListener

log = logging.getLogger(__name__)

#: Errors that mean "Redis is not there": switch to local state until the probe succeeds.
OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)

# Count one request unless the window's count has reached the limit. -> {allowed, count}
RESERVE_LUA = """
local n = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if n >= tonumber(ARGV[2]) then return {0, n} end
n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, n}
"""

# Count one failure; start a cooldown once failures exceed the allowance and none is running.
# ARGV: dep, allowed_fails, cooldown end, now, window ttl ms. -> {started, end time or ''}
FAILURE_LUA = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if n <= tonumber(ARGV[2]) then return {0, ''} end
local current = redis.call('ZSCORE', KEYS[2], ARGV[1])
if current and tonumber(current) > tonumber(ARGV[4]) then return {0, current} end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return {1, ARGV[3]}
"""

# Sum the in-flight hashes of the other live processes; forget processes whose hash expired.
# KEYS[1]: the process set. ARGV: hash key prefix, own process id. -> {dep, count, ...}
INFLIGHT_LUA = """
local totals = {}
for _, proc in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if proc ~= ARGV[2] then
    local kv = redis.call('HGETALL', ARGV[1] .. proc)
    if #kv == 0 then redis.call('SREM', KEYS[1], proc) end
    for i = 1, #kv, 2 do totals[kv[i]] = (totals[kv[i]] or 0) + tonumber(kv[i + 1]) end
  end
end
local out = {}
for dep, n in pairs(totals) do
  if n > 0 then out[#out + 1] = dep; out[#out + 1] = n end
end
return out
"""


def safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    return re.sub(r"//([^/@]*?):[^/@]*@", r"//\1:***@", url)


class RedisState(State):
    """State shared through one Redis; see the module docstring for costs and staleness."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "llmrelay:",
        window: float = WINDOW_SECONDS,
        clock: Clock = time.time,
        latency_samples: int = LATENCY_SAMPLES,
        flush_interval: float = 0.1,
        refresh_interval: float = 0.1,
        latency_refresh_interval: float = 1.0,
        probe_interval: float = 1.0,
        inflight_ttl: float = 10.0,
        latency_ttl: float = 3600.0,
        socket_timeout: float = 0.25,
        listen_poll: float = 0.05,
        background: bool = True,
    ) -> None:
        """``background=False`` starts no greenlets: the caller drives ``flush``/``refresh``/``probe``."""
        super().__init__(window=window, clock=clock)
        self.url = safe_url(url)
        self._local = MemoryState(window=window, clock=clock, latency_samples=latency_samples)
        self._client = redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0), decode_responses=True,
            protocol=2,  # RESP2: no HELLO or push-notification handshake on each new connection
        )
        self._reserve_lua = self._client.register_script(RESERVE_LUA)
        self._failure_lua = self._client.register_script(FAILURE_LUA)
        self._inflight_lua = self._client.register_script(INFLIGHT_LUA)
        p = self._prefix = key_prefix
        self._proc = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._k_procs, self._k_own = f"{p}inflight:procs", f"{p}inflight:{self._proc}"
        self._k_cool = f"{p}cooldowns"
        self._samples = latency_samples
        self._window_ttl_ms = int(self.window * 2000)  # the current window and the one before
        self._inflight_ttl = inflight_ttl
        self._latency_ttl_ms = int(latency_ttl * 1000)
        self._flush_interval, self._refresh_interval = flush_interval, refresh_interval
        self._latency_refresh_interval, self._probe_interval = latency_refresh_interval, probe_interval

        # Writes not yet in Redis: (window, dep) -> count, dep -> samples (oldest first).
        self._pend_req: dict[tuple[int, str], int] = {}
        self._pend_tok: dict[tuple[int, str], int] = {}
        self._pend_lat: dict[str, list[float]] = {}
        self._own_inflight: dict[str, int] = {}
        self._inflight_dirty = False
        self._inflight_due = 0.0
        # What reads return. A view is the last value read from Redis plus every write this
        # process made since, flushed or not, updated in place on each write, so a read costs what
        # MemoryState's does. A read from Redis rebuilds it as "value read + still unsent".
        self._usage_view: dict[str, list[int]] = {}  # dep -> [window, requests, tokens]
        self._latency_view: dict[str, deque[float]] = {}  # dep -> newest samples, oldest first
        self._remote_cool: dict[str, float] = {}
        self._others_inflight: dict[str, int] = {}
        self._usage_watch: dict[str, None] = {}  # ordered sets of ids read so far
        self._latency_watch: dict[str, None] = {}

        self._up = False
        self._closed = False
        self._next_probe = self._next_refresh = self._next_latency_refresh = 0.0
        self._last_error_log = 0.0
        # Flushes and reads from Redis never overlap, so a batch is either in the value read or
        # still unsent when the view is rebuilt: never in both, never in neither.
        self._io_lock = Semaphore()
        # Under monkey-patching a pub/sub read can block its greenlet cooperatively; unpatched
        # (tests, scripts) it would block the whole process, so the listener polls instead.
        self._listener = RedisListener(
            self._client, key_prefix, self._local, is_up=lambda: self._up, on_error=self._failed,
            poll=listen_poll, block=0.5 if monkey.is_module_patched("socket") else 0.0)
        self._stop = Event()
        try:
            self._client.ping()
            self._client.script_load(INFLIGHT_LUA)  # run inside pipelines, which cannot load it
        except Exception as exc:
            log.warning("state: Redis at %s unreachable (%s); rate limits, cooldowns and counters are "
                        "kept per process until it answers", self.url, exc)
        else:
            self._up = True
            log.info("state: shared through Redis at %s (prefix %r)", self.url, key_prefix)
            self.refresh()
        self._greenlets: list[gevent.Greenlet] = []
        if background:
            self._greenlets = [gevent.spawn(self._sync_loop), gevent.spawn(self._listener.run)]

    @property
    def shared(self) -> bool:
        return self._up

    # -- Redis availability -----------------------------------------------------------------

    def _failed(self, exc: Exception) -> None:
        """Every Redis error lands here: an outage switches to local state, anything else is logged."""
        if isinstance(exc, OUTAGE_ERRORS):
            if self._up:
                self._up = False
                self._others_inflight = {}
                self._next_probe = time.monotonic() + self._probe_interval
                log.warning("state: lost Redis at %s (%s); serving from local state until it is back",
                            self.url, exc)
            return
        now = time.monotonic()
        if now - self._last_error_log > 60:  # at most one per minute: this may repeat per request
            self._last_error_log = now
            log.error("state: Redis call failed, answered from local state: %r", exc)

    def _call(self, fn: Callable[[], Any], default: Any = None) -> Any:
        """Run one Redis call; ``default`` when Redis is down or the call fails."""
        if not self._up:
            return default
        try:
            return fn()
        except Exception as exc:
            self._failed(exc)
            return default

    def probe(self) -> bool:
        """PING Redis if it is down; on success resume shared state. True when Redis is up."""
        if self._up:
            return True
        self._next_probe = time.monotonic() + self._probe_interval
        try:
            self._client.ping()
            self._client.script_load(INFLIGHT_LUA)  # a restarted server has lost its scripts
        except Exception as exc:
            log.debug("state: Redis at %s still unreachable: %s", self.url, exc)
            return False
        # Idle connections from before the outage are dead; one still in use fails on its own.
        self._client.connection_pool.disconnect(inuse_connections=False)
        self._up = True
        self._listener.resubscribe()
        self._next_refresh = self._next_latency_refresh = 0.0
        log.info("state: Redis at %s is back; shared state resumes", self.url)
        return True

    # -- usage ------------------------------------------------------------------------------

    def _count(self, dep: str, bucket: int, requests: int, tokens: int) -> list[int] | None:
        """Add to the view of ``bucket``; None when the view has already moved to a later window."""
        view = self._usage_view.get(dep)
        if view is None or view[0] != bucket:
            if view is not None and view[0] > bucket:
                return None
            view = self._usage_view[dep] = [bucket, 0, 0]
        view[1] += requests
        view[2] += tokens
        return view

    def reserve(self, dep_id: str, rpm_limit: int | None) -> bool:
        bucket = self.bucket()
        if rpm_limit is not None:
            if self._up:
                try:
                    allowed, count = self._reserve_lua(
                        keys=[f"{self._prefix}rpm:{bucket}"], args=[dep_id, rpm_limit, self._window_ttl_ms])
                except Exception as exc:
                    self._failed(exc)
                else:
                    view = self._count(dep_id, bucket, 1 if allowed else 0, 0)
                    if view is not None:  # the script's count is fresher than the last refresh
                        view[1] = max(view[1], count + self._pend_req.get((bucket, dep_id), 0))
                    return bool(allowed)
            view = self._usage_view.get(dep_id)
            if view is not None and view[0] == bucket and view[1] >= rpm_limit:
                return False  # Redis is down: the limit holds on what this process knows
        key = (bucket, dep_id)
        self._pend_req[key] = self._pend_req.get(key, 0) + 1
        self._count(dep_id, bucket, 1, 0)
        return True

    def add_tokens(self, dep_id: str, tokens: int) -> None:
        bucket = self.bucket()
        key = (bucket, dep_id)
        self._pend_tok[key] = self._pend_tok.get(key, 0) + tokens
        self._count(dep_id, bucket, 0, tokens)

    def usage(self, dep_ids: Iterable[str]) -> dict[str, tuple[int, int]]:
        deps = list(dep_ids)
        missing = [d for d in deps if d not in self._usage_watch]
        if missing:
            self._usage_watch.update(dict.fromkeys(missing))
            if self._up:
                self._fetch(missing, [])
        bucket = self.bucket()
        result = {}
        for dep in deps:
            view = self._usage_view.get(dep)
            result[dep] = (view[1], view[2]) if view is not None and view[0] == bucket else (0, 0)
        return result

    # -- in flight --------------------------------------------------------------------------

    def inflight_incr(self, dep_id: str) -> None:
        self._own_inflight[dep_id] = self._own_inflight.get(dep_id, 0) + 1
        self._inflight_dirty = True

    def inflight_decr(self, dep_id: str) -> None:
        self._own_inflight[dep_id] = max(self._own_inflight.get(dep_id, 0) - 1, 0)
        self._inflight_dirty = True

    def inflight(self, dep_ids: Iterable[str]) -> dict[str, int]:
        others = self._others_inflight if self._up else {}
        return {dep: others.get(dep, 0) + self._own_inflight.get(dep, 0) for dep in dep_ids}

    # -- latency ----------------------------------------------------------------------------

    def record_latency(self, dep_id: str, seconds: float, ttft: float | None = None) -> None:
        sample = float(seconds if ttft is None else ttft)
        pending = self._pend_lat.setdefault(dep_id, [])
        pending.append(sample)
        if len(pending) > self._samples:
            del pending[0]
        view = self._latency_view.get(dep_id)
        if view is None:
            view = self._latency_view[dep_id] = deque(maxlen=self._samples)
        view.append(sample)

    def latencies(self, dep_ids: Iterable[str]) -> dict[str, float]:
        deps = list(dep_ids)
        missing = [d for d in deps if d not in self._latency_watch]
        if missing:
            self._latency_watch.update(dict.fromkeys(missing))
            if self._up:
                self._fetch([], missing)
        result = {}
        for dep in deps:
            view = self._latency_view.get(dep)
            if view:
                result[dep] = sum(view) / len(view)
        return result

    # -- cooldowns --------------------------------------------------------------------------

    def record_failure(self, dep_id: str, allowed_fails: int, cooldown_time: float) -> bool:
        if cooldown_time <= 0:
            return False
        if self._up:
            now = self.clock()
            try:
                started, ends = self._failure_lua(
                    keys=[f"{self._prefix}fails:{self.bucket(now)}", self._k_cool],
                    args=[dep_id, allowed_fails, repr(now + cooldown_time), repr(now), self._window_ttl_ms])
            except Exception as exc:
                self._failed(exc)
            else:
                if ends:
                    self._remote_cool[dep_id] = float(ends)
                return bool(started)
        return self._local.record_failure(dep_id, allowed_fails, cooldown_time)

    def cooldowns(self, dep_ids: Iterable[str] | None = None) -> dict[str, float]:
        now = self.clock()
        result = {dep: until for dep, until in self._remote_cool.items() if until > now}
        for dep, until in self._local.cooldowns().items():
            result[dep] = max(until, result.get(dep, 0.0))
        if dep_ids is None:
            return result
        return {dep: result[dep] for dep in dep_ids if dep in result}

    def clear_cooldown(self, dep_id: str) -> None:
        self._local.clear_cooldown(dep_id)
        self._remote_cool.pop(dep_id, None)
        pipe = self._client.pipeline(transaction=False)
        pipe.zrem(self._k_cool, dep_id)
        pipe.hdel(f"{self._prefix}fails:{self.bucket()}", dep_id)
        self._call(pipe.execute)

    # -- background: flush, refresh, probe ---------------------------------------------------

    def _sync_loop(self) -> None:
        while not self._stop.wait(self._flush_interval):
            try:
                now = time.monotonic()
                if not self._up and (now < self._next_probe or not self.probe()):
                    continue
                self.flush()
                if now >= self._next_refresh:
                    self._next_refresh = now + self._refresh_interval
                    self.refresh(latencies=now >= self._next_latency_refresh)
            except Exception:  # never let the loop die: it is what brings Redis back
                log.exception("state: background sync failed")

    def flush(self) -> None:
        """Send buffered counters, latency samples and this process's in-flight counts (one MULTI)."""
        oldest = self.bucket() - 1  # older windows have expired in Redis: drop, never resend
        for pending in (self._pend_req, self._pend_tok):
            for key in [k for k in pending if k[0] < oldest]:
                del pending[key]
        if not self._up:
            return
        with self._io_lock:
            self._flush_now()

    def _flush_now(self) -> None:
        now = time.monotonic()
        own = self._own_inflight
        write_inflight = self._inflight_dirty or (now >= self._inflight_due and any(own.values()))
        req, tok, lat = self._pend_req, self._pend_tok, self._pend_lat
        if not (req or tok or lat or write_inflight):
            return
        self._pend_req, self._pend_tok, self._pend_lat = {}, {}, {}
        snapshot = dict(own)
        self._inflight_dirty = False
        pipe = self._client.pipeline(transaction=True)
        window_keys = set()
        for kind, counts in (("rpm", req), ("tpm", tok)):
            for (bucket, dep), n in counts.items():
                key = f"{self._prefix}{kind}:{bucket}"
                pipe.hincrby(key, dep, n)
                window_keys.add(key)
        for key in window_keys:
            pipe.pexpire(key, self._window_ttl_ms)
        for dep, samples in lat.items():
            key = f"{self._prefix}latency:{dep}"
            pipe.lpush(key, *samples)
            pipe.ltrim(key, 0, self._samples - 1)
            pipe.pexpire(key, self._latency_ttl_ms)
        if write_inflight:
            if any(snapshot.values()):
                pipe.hset(self._k_own, mapping=snapshot)
                pipe.pexpire(self._k_own, int(self._inflight_ttl * 1000))
                pipe.sadd(self._k_procs, self._proc)
            else:
                pipe.delete(self._k_own)
                pipe.srem(self._k_procs, self._proc)
        try:
            pipe.execute()
        except Exception as exc:
            self._unflush(req, tok, lat)
            self._inflight_dirty = self._inflight_dirty or write_inflight
            self._failed(exc)
            return
        if write_inflight:
            self._inflight_due = now + self._inflight_ttl / 3
            if not any(snapshot.values()):  # the hash is gone: stop carrying zeros
                for dep in [d for d, n in own.items() if n == 0]:
                    del own[dep]

    def _unflush(self, req: dict[tuple[int, str], int], tok: dict[tuple[int, str], int],
                 lat: dict[str, list[float]]) -> None:
        """Put a batch that did not reach Redis back in front of what was buffered meanwhile."""
        for pending, batch in ((self._pend_req, req), (self._pend_tok, tok)):
            for key, n in batch.items():
                pending[key] = pending.get(key, 0) + n
        for dep, samples in lat.items():
            self._pend_lat[dep] = [*samples, *self._pend_lat.get(dep, ())][-self._samples:]

    def refresh(self, latencies: bool = True) -> None:
        """Re-read shared usage, in-flight counts, cooldowns and latencies: one pipeline.

        The background loop re-reads latencies only every ``latency_refresh_interval``: they move
        slowly and cost one command per deployment.
        """
        if not self._up:
            return
        if latencies:
            self._next_latency_refresh = time.monotonic() + self._latency_refresh_interval
        self._fetch(list(self._usage_watch), list(self._latency_watch) if latencies else [], everything=True)

    def _fetch(self, usage_deps: list[str], latency_deps: list[str], everything: bool = False) -> None:
        bucket, now = self.bucket(), self.clock()
        pipe = self._client.pipeline(transaction=False)
        if usage_deps:
            pipe.hmget(f"{self._prefix}rpm:{bucket}", usage_deps)
            pipe.hmget(f"{self._prefix}tpm:{bucket}", usage_deps)
        for dep in latency_deps:
            pipe.lrange(f"{self._prefix}latency:{dep}", 0, self._samples - 1)
        if everything:
            pipe.evalsha(self._inflight_lua.sha, 1, self._k_procs, f"{self._prefix}inflight:", self._proc)
            pipe.zrangebyscore(self._k_cool, f"({now!r}", "+inf", withscores=True)
            pipe.zremrangebyscore(self._k_cool, "-inf", repr(now))
        with self._io_lock:
            results = self._call(lambda: pipe.execute(raise_on_error=False), [])
            self._apply(results, bucket, usage_deps, latency_deps, everything)

    def _apply(self, results: list[Any], bucket: int, usage_deps: list[str], latency_deps: list[str],
               everything: bool) -> None:
        errors = [r for r in results if isinstance(r, Exception) and not isinstance(r, NoScriptError)]
        if not results or errors:
            if errors:
                self._failed(errors[0])
            return
        it = iter(results)
        if usage_deps:
            requests, tokens = next(it), next(it)
            for dep, r, t in zip(usage_deps, requests, tokens, strict=True):
                view = self._usage_view.get(dep)
                if view is None or view[0] <= bucket:
                    key = (bucket, dep)
                    self._usage_view[dep] = [bucket, int(r or 0) + self._pend_req.get(key, 0),
                                             int(t or 0) + self._pend_tok.get(key, 0)]
        for dep in latency_deps:
            view = self._latency_view[dep] = deque(map(float, reversed(next(it))), maxlen=self._samples)
            view.extend(self._pend_lat.get(dep, ()))
        if everything:
            flat = next(it)
            if isinstance(flat, NoScriptError):  # SCRIPT FLUSH or a new server: load it for next time
                self._call(lambda: self._client.script_load(INFLIGHT_LUA))
            else:
                self._others_inflight = {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}
            self._remote_cool = {dep: float(until) for dep, until in next(it)}

    # -- pub/sub (connection and listener in redis_pubsub) -----------------------------------

    def publish(self, channel: str, message: Message) -> None:
        """With Redis every subscriber, this process's included, gets it from the listener greenlet."""
        data = orjson.dumps(message)  # a message that is not JSON is the caller's bug: raise
        if self._call(lambda: self._client.publish(self._prefix + channel, data), False) is False:
            self._local.publish(channel, message)

    def subscribe(self, channel: str, callback: Callback) -> None:
        new = channel not in self._local.channels
        self._local.subscribe(channel, callback)
        if new and self._up:
            self._listener.subscribe(channel)

    # -- fleet-wide hashes and versions (last values kept locally for outages) ---------------

    def hset(self, name: str, key: str, value: str) -> None:
        self._local.hset(name, key, value)
        self._call(lambda: self._client.hset(f"{self._prefix}hash:{name}", key, value))

    def hget(self, name: str, key: str) -> str | None:
        value = self._call(lambda: self._client.hget(f"{self._prefix}hash:{name}", key), False)
        if value is False:
            return self._local.hget(name, key)
        if value is None:
            self._local.hdel(name, key)
        else:
            self._local.hset(name, key, value)
        return value

    def hgetall(self, name: str) -> dict[str, str]:
        fields = self._call(lambda: self._client.hgetall(f"{self._prefix}hash:{name}"))
        if fields is None:
            return self._local.hgetall(name)
        self._local.set_hash(name, fields)
        return dict(fields)

    def hdel(self, name: str, *keys: str) -> None:
        self._local.hdel(name, *keys)
        if keys:
            self._call(lambda: self._client.hdel(f"{self._prefix}hash:{name}", *keys))

    def incr_version(self, name: str) -> int:
        value = self._call(lambda: self._client.incr(f"{self._prefix}version:{name}"))
        if value is None:
            return self._local.incr_version(name)
        self._local.set_version(name, int(value))
        return int(value)

    def get_version(self, name: str) -> int:
        value = self._call(lambda: self._client.get(f"{self._prefix}version:{name}"), False)
        if value is False:
            return self._local.get_version(name)
        self._local.set_version(name, int(value or 0))
        return int(value or 0)

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the greenlets, then send everything buffered; this process's in-flight counts leave."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._greenlets:
            sync_loop, listener = self._greenlets
            listener.kill(block=True, timeout=1.0)  # a read cut short loses nothing: the connection goes
            sync_loop.join(timeout=2.0)  # but a flush under way finishes, so nothing is half-sent
            sync_loop.kill(block=True, timeout=1.0)
        self._listener.close()
        self._own_inflight = dict.fromkeys(self._own_inflight, 0)
        self._inflight_dirty = True
        self.probe()
        self.flush()
        lost_requests, lost_tokens = sum(self._pend_req.values()), sum(self._pend_tok.values())
        if lost_requests or lost_tokens:
            log.warning("state: Redis unreachable at shutdown; %d requests and %d tokens of this window "
                        "were not shared", lost_requests, lost_tokens)
        self._client.close()
