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

Windows are computed from each host's wall clock; keep hosts NTP-synced. The key layout and Lua
scripts are in ``redis_keys`` (a single Redis, not a cluster), the connection and outage detection
in ``redis_link``, the buffers, views and the pipelines that sync them in ``redis_mirror``, pub/sub
in ``redis_pubsub``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import gevent
import orjson
from gevent import monkey
from gevent.event import Event

from proxy.state.base import LATENCY_SAMPLES, WINDOW_SECONDS, Callback, Clock, Message, State
from proxy.state.memory import MemoryState
from proxy.state.redis_keys import FAILURE_LUA, INFLIGHT_LUA, RESERVE_LUA, SLOT_LUA, RedisKeys, process_id
from proxy.state.redis_link import RedisLink
from proxy.state.redis_mirror import RedisMirror
from proxy.state.redis_pubsub import RedisListener

log = logging.getLogger(__name__)


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
        slot_ttl: float = 600.0,
        socket_timeout: float = 0.25,
        listen_poll: float = 0.05,
        background: bool = True,
    ) -> None:
        """``background=False`` starts no greenlets: the caller drives ``flush``/``refresh``/``probe``."""
        super().__init__(window=window, clock=clock)
        self._local = MemoryState(window=window, clock=clock, latency_samples=latency_samples)
        # The mirror runs INFLIGHT_LUA inside pipelines, which cannot load it.
        self._link = link = RedisLink(
            url, socket_timeout=socket_timeout, probe_interval=probe_interval,
            pipeline_scripts=(INFLIGHT_LUA,), on_down=self._forget_others, on_up=self._resume)
        self.url = link.url
        self._client = link.client
        self._reserve_lua = self._client.register_script(RESERVE_LUA)
        self._failure_lua = self._client.register_script(FAILURE_LUA)
        self._slot_lua = self._client.register_script(SLOT_LUA)
        self._slot_ttl_ms = int(slot_ttl * 1000)
        self._held_slots: dict[str, int] = {}  # slots this process holds in Redis, per name
        self._keys = RedisKeys(key_prefix, process_id())
        self._window_ttl_ms = int(self.window * 2000)  # the current window and the one before
        self._mirror = RedisMirror(link, self._keys, samples=latency_samples, window_ttl_ms=self._window_ttl_ms,
                                   inflight_ttl=inflight_ttl, latency_ttl_ms=int(latency_ttl * 1000))
        self._flush_interval, self._refresh_interval = flush_interval, refresh_interval
        self._latency_refresh_interval = latency_refresh_interval
        self._closed = False
        self._next_refresh = self._next_latency_refresh = 0.0
        # Under monkey-patching a pub/sub read can block its greenlet cooperatively; unpatched
        # (tests, scripts) it would block the whole process, so the listener polls instead.
        self._listener = RedisListener(
            self._client, key_prefix, self._local, is_up=lambda: link.up, on_error=link.failed,
            poll=listen_poll, block=0.5 if monkey.is_module_patched("socket") else 0.0)
        self._stop = Event()
        if link.connect():
            log.info("state: shared through Redis at %s (prefix %r)", self.url, key_prefix)
            self.refresh()
        self._greenlets: list[gevent.Greenlet] = []
        if background:
            self._greenlets = [gevent.spawn(self._sync_loop), gevent.spawn(self._listener.run)]

    @property
    def shared(self) -> bool:
        return self._link.up

    # -- Redis availability (detection and probing in redis_link) ------------------------------

    def _forget_others(self) -> None:
        """Redis is down: other processes' in-flight counts are unknown from now on."""
        self._mirror.others_inflight = {}

    def _resume(self) -> None:
        """Redis is back: listen again and re-read shared values on the next tick."""
        self._listener.resubscribe()
        self._next_refresh = self._next_latency_refresh = 0.0

    def probe(self) -> bool:
        """PING Redis if it is down; on success resume shared state. True when Redis is up."""
        return self._link.probe()

    # -- usage ------------------------------------------------------------------------------

    def reserve(self, dep_id: str, rpm_limit: int | None) -> bool:
        mirror = self._mirror
        bucket = self.bucket()
        if rpm_limit is not None:
            if self._link.up:
                try:
                    allowed, count = self._reserve_lua(
                        keys=[self._keys.rpm(bucket)], args=[dep_id, rpm_limit, self._window_ttl_ms])
                except Exception as exc:
                    self._link.failed(exc)
                else:
                    view = mirror.count(dep_id, bucket, 1 if allowed else 0, 0)
                    if view is not None:  # the script's count is fresher than the last refresh
                        view[1] = max(view[1], count + mirror.pend_req.get((bucket, dep_id), 0))
                    return bool(allowed)
            view = mirror.usage_view.get(dep_id)
            if view is not None and view[0] == bucket and view[1] >= rpm_limit:
                return False  # Redis is down: the limit holds on what this process knows
        mirror.add_request(dep_id, bucket)
        return True

    def add_tokens(self, dep_id: str, tokens: int) -> None:
        self._mirror.add_tokens(dep_id, self.bucket(), tokens)

    def usage(self, dep_ids: Iterable[str]) -> dict[str, tuple[int, int]]:
        mirror = self._mirror
        deps = list(dep_ids)
        missing = [d for d in deps if d not in mirror.usage_watch]
        if missing:
            mirror.usage_watch.update(dict.fromkeys(missing))
            if self._link.up:
                self._fetch(missing, [])
        bucket = self.bucket()
        result = {}
        for dep in deps:
            view = mirror.usage_view.get(dep)
            result[dep] = (view[1], view[2]) if view is not None and view[0] == bucket else (0, 0)
        return result

    # -- in flight --------------------------------------------------------------------------

    def take_slot(self, name: str, limit: int) -> bool:
        """One Lua call: exact across every process sharing Redis; local while Redis is down."""
        if self._link.up:
            try:
                taken = bool(self._slot_lua(keys=[self._keys.slots(name)],
                                            args=[self._keys.proc, limit, self._slot_ttl_ms]))
            except Exception as exc:
                self._link.failed(exc)
            else:
                if taken:
                    self._held_slots[name] = self._held_slots.get(name, 0) + 1
                return taken
        return super().take_slot(name, limit)

    def release_slot(self, name: str) -> None:
        held = self._held_slots.get(name, 0)
        if not held:  # taken locally while Redis was down
            super().release_slot(name)
            return
        if held == 1:
            del self._held_slots[name]
        else:
            self._held_slots[name] = held - 1
        key, process = self._keys.slots(name), self._keys.proc
        self._link.call(lambda: self._client.hincrby(key, process, -1), None)

    def inflight_incr(self, dep_id: str) -> None:
        self._mirror.add_inflight(dep_id, 1)

    def inflight_decr(self, dep_id: str) -> None:
        self._mirror.add_inflight(dep_id, -1)

    def inflight(self, dep_ids: Iterable[str]) -> dict[str, int]:
        mirror = self._mirror
        others = mirror.others_inflight if self._link.up else {}
        return {dep: others.get(dep, 0) + mirror.own_inflight.get(dep, 0) for dep in dep_ids}

    # -- latency ----------------------------------------------------------------------------

    def record_latency(self, dep_id: str, seconds: float, ttft: float | None = None) -> None:
        self._mirror.add_latency(dep_id, float(seconds if ttft is None else ttft))

    def latencies(self, dep_ids: Iterable[str]) -> dict[str, float]:
        mirror = self._mirror
        deps = list(dep_ids)
        missing = [d for d in deps if d not in mirror.latency_watch]
        if missing:
            mirror.latency_watch.update(dict.fromkeys(missing))
            if self._link.up:
                self._fetch([], missing)
        result = {}
        for dep in deps:
            view = mirror.latency_view.get(dep)
            if view:
                result[dep] = sum(view) / len(view)
        return result

    # -- cooldowns --------------------------------------------------------------------------

    def record_failure(self, dep_id: str, allowed_fails: int, cooldown_time: float) -> bool:
        if cooldown_time <= 0:
            return False
        if self._link.up:
            now = self.clock()
            try:
                started, ends = self._failure_lua(
                    keys=[self._keys.fails(self.bucket(now)), self._keys.cooldowns],
                    args=[dep_id, allowed_fails, repr(now + cooldown_time), repr(now), self._window_ttl_ms])
            except Exception as exc:
                self._link.failed(exc)
            else:
                if ends:
                    self._mirror.remote_cool[dep_id] = float(ends)
                return bool(started)
        return self._local.record_failure(dep_id, allowed_fails, cooldown_time)

    def cooldowns(self, dep_ids: Iterable[str] | None = None) -> dict[str, float]:
        now = self.clock()
        result = {dep: until for dep, until in self._mirror.remote_cool.items() if until > now}
        for dep, until in self._local.cooldowns().items():
            result[dep] = max(until, result.get(dep, 0.0))
        if dep_ids is None:
            return result
        return {dep: result[dep] for dep in dep_ids if dep in result}

    def clear_cooldown(self, dep_id: str) -> None:
        self._local.clear_cooldown(dep_id)
        self._mirror.remote_cool.pop(dep_id, None)
        pipe = self._client.pipeline(transaction=False)
        pipe.zrem(self._keys.cooldowns, dep_id)
        pipe.hdel(self._keys.fails(self.bucket()), dep_id)
        self._link.call(pipe.execute)

    # -- spend: one round trip each, exact across the fleet ------------------------------------

    def add_spend(self, name: str, amount: float) -> None:
        """HINCRBYFLOAT, so concurrent adds from every process sum exactly; local while Redis is down."""
        self._local.add_spend(name, amount)
        if self._link.up:
            self._link.call(lambda: self._client.hincrbyfloat(self._keys.spend, name, amount))

    def spend(self, names: Iterable[str]) -> dict[str, float]:
        """Shared totals (one HMGET); while Redis is down, what this process added itself."""
        names = list(names)
        values = self._link.call(lambda: self._client.hmget(self._keys.spend, names)) if self._link.up else None
        if values is None:
            return self._local.spend(names)
        return {name: float(v or 0.0) for name, v in zip(names, values, strict=True)}

    # -- background: flush, refresh, probe ---------------------------------------------------

    def _sync_loop(self) -> None:
        while not self._stop.wait(self._flush_interval):
            try:
                now = time.monotonic()
                if not self._link.up and (now < self._link.next_probe or not self.probe()):
                    continue
                self.flush()
                if now >= self._next_refresh:
                    self._next_refresh = now + self._refresh_interval
                    self.refresh(latencies=now >= self._next_latency_refresh)
            except Exception:  # never let the loop die: it is what brings Redis back
                log.exception("state: background sync failed")

    def flush(self) -> None:
        """Send buffered counters, latency samples and this process's in-flight counts (one MULTI)."""
        self._mirror.flush(oldest=self.bucket() - 1)  # older windows have expired in Redis

    def refresh(self, latencies: bool = True) -> None:
        """Re-read shared usage, in-flight counts, cooldowns and latencies: one pipeline.

        The background loop re-reads latencies only every ``latency_refresh_interval``: they move
        slowly and cost one command per deployment.
        """
        if not self._link.up:
            return
        if latencies:
            self._next_latency_refresh = time.monotonic() + self._latency_refresh_interval
        mirror = self._mirror
        self._fetch(list(mirror.usage_watch), list(mirror.latency_watch) if latencies else [], everything=True)

    def _fetch(self, usage_deps: list[str], latency_deps: list[str], everything: bool = False) -> None:
        self._mirror.fetch(self.bucket(), self.clock(), usage_deps, latency_deps, everything)

    # -- pub/sub (connection and listener in redis_pubsub) -----------------------------------

    def publish(self, channel: str, message: Message) -> None:
        """With Redis every subscriber, this process's included, gets it from the listener greenlet."""
        data = orjson.dumps(message)  # a message that is not JSON is the caller's bug: raise
        if self._link.call(lambda: self._client.publish(self._keys.channel(channel), data), False) is False:
            self._local.publish(channel, message)

    def subscribe(self, channel: str, callback: Callback) -> None:
        new = channel not in self._local.channels
        self._local.subscribe(channel, callback)
        if new and self._link.up:
            self._listener.subscribe(channel)

    # -- fleet-wide hashes and versions (last values kept locally for outages) ---------------

    def hset(self, name: str, key: str, value: str) -> None:
        self._local.hset(name, key, value)
        self._link.call(lambda: self._client.hset(self._keys.hash(name), key, value))

    def hget(self, name: str, key: str) -> str | None:
        value = self._link.call(lambda: self._client.hget(self._keys.hash(name), key), False)
        if value is False:
            return self._local.hget(name, key)
        if value is None:
            self._local.hdel(name, key)
        else:
            self._local.hset(name, key, value)
        return value

    def hgetall(self, name: str) -> dict[str, str]:
        fields = self._link.call(lambda: self._client.hgetall(self._keys.hash(name)))
        if fields is None:
            return self._local.hgetall(name)
        self._local.set_hash(name, fields)
        return dict(fields)

    def hdel(self, name: str, *keys: str) -> None:
        self._local.hdel(name, *keys)
        if keys:
            self._link.call(lambda: self._client.hdel(self._keys.hash(name), *keys))

    def acquire(self, name: str, owner: str, ttl: float) -> bool:
        """SET NX with an expiry: one holder fleet-wide; while Redis is down, this process decides alone."""
        key = self._keys.lease(name)

        def take() -> bool:
            if self._client.set(key, owner, nx=True, px=max(1, int(ttl * 1000))):
                return True
            return self._client.get(key) == owner

        taken = self._link.call(take, None)
        if taken is None:
            return self._local.acquire(name, owner, ttl)
        return bool(taken)

    def incr_version(self, name: str) -> int:
        value = self._link.call(lambda: self._client.incr(self._keys.version(name)))
        if value is None:
            return self._local.incr_version(name)
        self._local.set_version(name, int(value))
        return int(value)

    def get_version(self, name: str) -> int:
        value = self._link.call(lambda: self._client.get(self._keys.version(name)), False)
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
        self._mirror.leave()
        self.probe()
        self.flush()
        lost_requests, lost_tokens = self._mirror.unsent()
        if lost_requests or lost_tokens:
            log.warning("state: Redis unreachable at shutdown; %d requests and %d tokens of this window "
                        "were not shared", lost_requests, lost_tokens)
        self._link.close()
